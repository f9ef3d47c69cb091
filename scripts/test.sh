#!/usr/bin/env bash
# Install everything (tool, models, test tools) and run the checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
echo ">> no package registry's host named in the repository" >&2
# fetch through pip, apt and npm by package name; the pattern is written so that it does
# not name a host itself
hosts='pypi[.]org|pythonhosted[.]org|(deb|security|ftp|snapshot)[.]debian[.]org|npmjs[.](org|com)|yarnpkg[.]com'
if git ls-files -z | xargs -0 grep -nIiE "$hosts"; then
  echo "error: the lines above name a package registry's host" >&2
  exit 1
fi
echo ">> ruff" >&2
.venv/bin/ruff check reelscope tests scripts benchmarks
echo ">> mypy" >&2
.venv/bin/mypy
echo ">> pytest" >&2
# the slowest tests named at the end, so that a slower run says where its time went
.venv/bin/python -m pytest -q --durations=15 "$@"

#!/usr/bin/env bash
# Install everything (tool, models, test tools) and run the checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
echo ">> ruff" >&2
.venv/bin/ruff check reelscope tests scripts benchmarks
echo ">> mypy" >&2
.venv/bin/mypy
echo ">> pytest" >&2
.venv/bin/python -m pytest -q "$@"

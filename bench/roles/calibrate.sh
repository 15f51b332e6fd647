#!/usr/bin/env bash
# bench/roles/calibrate.sh — what each stage can carry, to pick the rates of bench/roles/switch.sh.
#
# For each split in SPLITS ("m/e/p/d ...", single-role workers) it starts a fresh `vidi up`, then
# runs the image mix at each of IMAGE_RATES and the text mix at each of TEXT_RATES (open loop,
# bench/epd/loadgen.c, SECONDS each) and samples the router's load monitor (`vidi stats`) every
# second meanwhile. One JSON line per (split, mix, rate): the loadgen's line (attainment,
# throughput, p90 TTFT / TPOT) and the mean busy percentage and queue of every stage, into
# OUT (default stdout). A switching benchmark wants, for each phase, a rate that one split's
# bottleneck stage cannot carry and another split's can.
#   VIDI_BUILD (build), BACKEND (cpu), SPLITS ("1/1/1/1"), IMAGE_RATES ("2 4"), TEXT_RATES ("20 40"),
#   SECONDS (8), WORKER_ARGS, MODEL (models/vidi-shapes), MEDIA_MAX / TEXT_MAX (64: max_tokens with
#   media / without), TTFT_MS (4000), TPOT_MS (400), DEVICES (cuda: round robin, e.g. "0,1"), OUT (-)
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. bench/roles/lib.sh
SPLITS=${SPLITS:-1/1/1/1} IMAGE_RATES=${IMAGE_RATES:-2 4} TEXT_RATES=${TEXT_RATES:-20 40}
SECS=${SECONDS_PER:-${SECS:-8}} TTFT_MS=${TTFT_MS:-4000} TPOT_MS=${TPOT_MS:-400} DEVICES=${DEVICES:-} OUT=${OUT:--}
RUN=$(mktemp -d /tmp/vidi-cal.XXXXXX)
trap 'stop_up; rm -rf "$RUN"' EXIT
FRONT="ipc://$RUN/front"
[ "$OUT" = - ] && OUT=/dev/stdout

for split in $SPLITS; do
  workers=$(python3 -c "
import sys; n = [int(x) for x in sys.argv[1].split('/')]
print(','.join(r for r, k in zip(('media', 'encode', 'prefill', 'decode'), n) for _ in range(k)))" "$split") || exit 1
  up_start "$RUN/up.log" "$workers" "--no-cache --ttft-ms $TTFT_MS --tpot-ms $TPOT_MS"
  for mix in image text; do
    rates=$IMAGE_RATES
    [ $mix = text ] && rates=$TEXT_RATES
    for rate in $rates; do
      : >"$RUN/samples.txt"
      ( while :; do sleep 1; "$VIDI" stats --router "$FRONT" 2>/dev/null | grep '^stage_' >>"$RUN/samples.txt"; echo --- >>"$RUN/samples.txt"; done ) &
      sampler=$!
      line=$("$LOADGEN" "$FRONT" examples "$mix" "$rate" "$SECS" "$TTFT_MS" "$TPOT_MS" 7 "$MEDIA_MAX" "$TEXT_MAX") || { kill $sampler; cat "$RUN/up.log"; exit 1; }
      kill $sampler 2>/dev/null
      wait $sampler 2>/dev/null
      python3 - "$split" "$line" "$RUN/samples.txt" >>"$OUT" <<'PY'
import json, sys
split, line, samples = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
acc = {}
for l in open(samples):
    f = l.split()
    if len(f) == 2 and f[1].lstrip("-").isdigit():
        acc.setdefault(f[0], []).append(int(f[1]))
line["split"] = split
for stage in ("media", "encode", "prefill", "decode"):
    for k in ("busy_pct", "queue"):
        v = acc.get(f"stage_{stage}.{k}", [])
        line[f"{stage}_{k}"] = round(sum(v) / len(v), 1) if v else None
print(json.dumps(line), flush=True)
PY
      sleep 1
    done
  done
  stop_up
done

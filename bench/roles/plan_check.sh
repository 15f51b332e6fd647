#!/usr/bin/env bash
# bench/roles/plan_check.sh — the planner's prediction (tools/plan/plan.py) against a real run.
#
# Starts `vidi up --workers media,encode,prefill,decode` on MODEL (BACKEND: cpu here, cuda on the
# GPU host, DEVICES spreading the workers over GPUs), warms it with an open-loop image-mix load
# (bench/epd/loadgen.c) at WARM_RATE, and takes the stages' measured time per unit of work from
# `vidi stats` (the load monitor). From those, the GPUs the workers share (on the GPU host those of
# DEVICES, one without: the planner's "gpus") and the mix (80 % image, 20 % video questions; the
# answers' mean length from the router's counters) the planner predicts this split's goodput: the
# highest rate with >= 90 % of requests within TTFT_MS and TPOT_MS. Then the real system runs at
# 0.5x, 1x and 1.5x the prediction, DURATION each, and the measured attainment is written beside
# the simulated one: OUT_DIR/roles-plan-check-BACKEND.json (NAME overrides the file's name).
#   VIDI_BUILD (build), BACKEND (cpu), MODEL (models/vidi-shapes), DEVICES, WORKER_ARGS, MEDIA_MAX (64),
#   TTFT_MS (4000), TPOT_MS (400), WARM_RATE (0.5 req/s), DURATION (20 s a rate), OUT_DIR (bench/results)
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. bench/roles/lib.sh
TTFT_MS=${TTFT_MS:-4000} TPOT_MS=${TPOT_MS:-400} SECONDS_PER=${DURATION:-20} WARM_RATE=${WARM_RATE:-0.5}
OUT_DIR=${OUT_DIR:-bench/results} NAME=${NAME:-roles-plan-check-$BACKEND}
RUN=$(mktemp -d /tmp/vidi-plan.XXXXXX)
trap 'stop_up; rm -rf "$RUN"' EXIT
FRONT="ipc://$RUN/front"
up_start "$RUN/up.log" media,encode,prefill,decode "--no-cache --ttft-ms $TTFT_MS --tpot-ms $TPOT_MS"
# warm-up at a low rate: the monitor's time per unit of work
"$LOADGEN" "$FRONT" examples image "$WARM_RATE" "$SECONDS_PER" "$TTFT_MS" "$TPOT_MS" 7 "$MEDIA_MAX" >"$RUN/warm.json" || exit 1
sleep 2
"$VIDI" stats --router "$FRONT" >"$RUN/stats.txt" || exit 1
# the GPUs the workers share (the planner's "gpus"): those in DEVICES, one without; none on the CPU
GPUS=0
[ "$BACKEND" = cuda ] && GPUS=$(awk -F, '{print NF}' <<<"${DEVICES:-0}")
python3 - "$RUN/stats.txt" "$TTFT_MS" "$TPOT_MS" "$GPUS" >"$RUN/profile.json" <<'EOF'
import json, sys
v = {l.split()[0]: int(l.split()[1]) for l in open(sys.argv[1]) if len(l.split()) == 2 and l.split()[1].isdigit()}
tokens = max(1, round(v["workers_tokens"] / max(1, v["done"])))
print(json.dumps({"workers": 4, "gpus": int(sys.argv[4]), "targets": {"ttft_ms": int(sys.argv[2]), "tpot_ms": int(sys.argv[3])},
                  "requests": [{"weight": 8, "images": 1, "output_tokens": tokens},
                               {"weight": 2, "videos": 1, "output_tokens": tokens}],
                  "service": {"media_us": v["stage_media.service_us"], "encode_us": v["stage_encode.service_us"],
                              "prefill_us": v["stage_prefill.service_us"],
                              "decode_step_us": v["stage_decode.service_us"], "decode_seq_us": 0}}))
EOF
cat "$RUN/profile.json"
PRED=$(python3 tools/plan/plan.py "$RUN/profile.json" --split 1,1,1,1) || exit 1
G=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['goodput_rps'])" "$PRED")
echo "planner: split 1,1,1,1 goodput $G req/s"
: >"$RUN/points.jsonl"
for f in 0.5 1.0 1.5; do
  R=$(python3 -c "print(round($G * $f, 3))")
  SIM=$(python3 tools/plan/plan.py "$RUN/profile.json" --split 1,1,1,1 --rate "$R")
  REAL=$("$LOADGEN" "$FRONT" examples image "$R" "$SECONDS_PER" "$TTFT_MS" "$TPOT_MS" 11 "$MEDIA_MAX") || exit 1
  echo "rate $R: simulated $SIM; measured $REAL"
  python3 -c "import json,sys; s=json.loads(sys.argv[1]); r=json.loads(sys.argv[2]); print(json.dumps({'factor': $f, 'rate': $R, 'simulated_attained': s['attained'], 'measured': r}))" "$SIM" "$REAL" >>"$RUN/points.jsonl"
done
mkdir -p "$OUT_DIR"
MACHINE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ -n "$MACHINE" ] && [ "$BACKEND" = cuda ] || MACHINE="$(nproc) CPU cores, $(uname -m) (the workers share them)"
python3 - "$RUN/profile.json" "$PRED" "$RUN/points.jsonl" "$OUT_DIR/$NAME.json" "$MACHINE" "$(basename "$MODEL")" "$WARM_RATE" <<'EOF'
import json, os, sys
sys.path.insert(0, "bench")
import benchjson
prof = json.load(open(sys.argv[1]))
pred = json.loads(sys.argv[2])
rows = []
for l in open(sys.argv[3]):
    p = json.loads(l)
    m = p["measured"]
    rows.append(benchjson.result(
        f"{sys.argv[6]}, split media 1 / encode 1 / prefill 1 / decode 1, image mix at {p['factor']}x the planned "
        f"goodput ({p['rate']} req/s)", "SLO attainment (measured)", m["slo_attainment"],
        "the planner's simulated attainment at the same rate", p["simulated_attained"], True,
        predicted_goodput_rps=pred["goodput_rps"], rate=p["rate"], ttft_ms_p90=m["ttft_ms_p90"],
        tpot_ms_p90=m["tpot_ms_p90"], throughput=m["throughput"], requests=m["requests"]))
notes = ("The planner's check against a real run (issue 10): service times from the router's load monitor after a "
         + sys.argv[7] + " req/s warm-up, the mix 80 % image / 20 % video questions, the answers' mean length from the counters: "
         + json.dumps(prof) + ". value = measured attainment, baseline = the simulation's; a ratio below 1 means the "
         "planner is optimistic.")
benchjson.write(sys.argv[4], "roles-plan-check", sys.argv[5], benchjson.command("bench/roles/plan_check.sh", (
    "BACKEND", "MODEL", "DEVICES", "MEDIA_MAX", "WORKER_ARGS", "TTFT_MS", "TPOT_MS", "MAX_REQUESTS", "WARM_RATE", "DURATION")),
    rows, notes)
for r in rows:
    print(f"{r['case'][:100]:100s} measured {r['value']:.3f} simulated {r['baseline_value']:.3f}")
EOF

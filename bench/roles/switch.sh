#!/usr/bin/env bash
# bench/roles/switch.sh — role switching against static splits and colocated workers under a
# workload whose bottleneck moves: open-loop arrivals (bench/epd/loadgen.c, mix alt:PHASE) that
# alternate image-heavy phases (80 % image, 20 % video questions, short answers; RATE requests a
# second) and text phases (questions without media; TEXT_RATE a second) every PHASE seconds, for
# DURATION seconds.
#
# For N = WORKERS single-role worker processes it runs every static split (each stage at least one
# worker), N colocated workers (every role each), and the switching router (`--switch-ms SWITCH_MS`)
# started from the split START (or from each of several, space-separated); each configuration on
# a fresh `vidi up` with the same arrivals (same seed). Goodput: requests within both targets
# (TTFT_MS, TPOT_MS) per second of the run.
# The baseline of every line is the best static split of the same run;
# OUT_DIR/NAME.json (NAME: roles-switch-BACKEND).
#
# STATIC ("m/e/p/d ..."): only these static splits (all of them by default; 35 for 8 workers). Each
# configuration takes DURATION plus up to a minute: with RAW (a folder kept between commands) and
# RESUME=1 a run cut short (the device tool's 10 minutes a command) goes on with the configurations
# not in RAW/lines.jsonl yet, and the report covers all of them. REPORT_ONLY=1 runs nothing and
# writes the report of RAW's lines (MACHINE names the machine they ran on, NOTES adds to the notes).
# On the GPU host: source .devlibs/env.sh; VIDI_BUILD=.devlibs/build BACKEND=cuda bench/roles/switch.sh
# (carry .devlibs/build/vidi and .devlibs/build/bench/epd/epd_loadgen; rates that load an H100 are far
# above the CPU's defaults: calibrate RATE and TEXT_RATE with a short run first).
# MODEL (models/vidi-shapes; on the GPU host a 2B-shape model from bench/roles/make_model.py makes the
# stages cost GPU time), MEDIA_MAX / TEXT_MAX (64: max_tokens of the questions with media / without),
# WORKER_ARGS (more `vidi worker` options, e.g. "--max-batch 64"). SHARE=1 also runs the switching
# router with `--switch-share 1` (workers take starved roles besides their own); SWITCHING=0 runs
# no switching configuration (the statics and colocated of a run whose switching lines come from
# another command, with RAW and RESUME=1); COLOCATED=0 no colocated one.
#   VIDI_BUILD (build), BACKEND (cpu; cuda on the GPU host: DEVICES spreads the workers over GPUs,
#   e.g. "0,1"), WORKERS (5), START (media,encode,encode,prefill,decode), RATE (3), DURATION (80),
#   TEXT_RATE (40), PHASE (20), TTFT_MS (4000), TPOT_MS (400), SWITCH_MS (1000), WARM (4: seconds of
#   unmeasured load at a quarter of the rates before each configuration's run), OUT_DIR (bench/results)
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. bench/roles/lib.sh
N=${WORKERS:-5} START=${START:-media,encode,encode,prefill,decode}
RATE=${RATE:-3} TEXT_RATE=${TEXT_RATE:-40} DURATION=${DURATION:-80} PHASE=${PHASE:-20} TTFT_MS=${TTFT_MS:-4000} TPOT_MS=${TPOT_MS:-400}
SWITCH_MS=${SWITCH_MS:-1000} WARM=${WARM:-4} OUT_DIR=${OUT_DIR:-bench/results} DEVICES=${DEVICES:-} NAME=${NAME:-roles-switch-$BACKEND}
RUN=$(mktemp -d /tmp/vidi-switch.XXXXXX)
RAW=${RAW:-$RUN}
mkdir -p "$RAW" "$OUT_DIR" || exit 1
trap 'stop_up; rm -rf "$RUN"' EXIT
FRONT="ipc://$RUN/front"

# run NAME WORKERS [router args...]: one configuration, its loadgen line into $RAW/lines.jsonl
run() {
  local name=$1 workers=$2; shift 2
  if grep -q "\"config\": \"$name\"" "$RAW/lines.jsonl"; then echo "$name: done before, kept"; return; fi
  local log="$RUN/up-${name//[^a-z0-9]/_}.log"
  up_start "$log" "$workers" "--no-cache --ttft-ms $TTFT_MS --tpot-ms $TPOT_MS $*"
  # warm-up (not measured): both phases at a quarter of their rates, so that no configuration's
  # measured run pays the first requests' one-time costs (CUDA graphs, allocations)
  [ "$WARM" -gt 0 ] && "$LOADGEN" "$FRONT" examples "alt:$((WARM / 2 > 0 ? WARM / 2 : 1)):$(python3 -c "print($TEXT_RATE / 4)")" \
    "$(python3 -c "print($RATE / 4)")" "$WARM" "$TTFT_MS" "$TPOT_MS" 3 "$MEDIA_MAX" "$TEXT_MAX" >/dev/null 2>&1
  local out
  out=$("$LOADGEN" "$FRONT" examples "alt:$PHASE:$TEXT_RATE" "$RATE" "$DURATION" "$TTFT_MS" "$TPOT_MS" 7 "$MEDIA_MAX" "$TEXT_MAX") || { cat "$log"; exit 1; }
  local sw
  sw=$("$VIDI" stats --router "$FRONT" | awk '/^(switches|switches_aborted|switches_unhelpful|switch_ms_max|switch_role_ms_max) /{ printf "%s\"%s\": %s", n++ ? ", " : "", $1, $2 }')
  stop_up
  grep -E 'router: worker .*(switching|switched|refused|abandoned|did not lower)' "$log" >"$RAW/switches-${name//[^a-z0-9]/_}.log" || rm -f "$RAW/switches-${name//[^a-z0-9]/_}.log"
  echo "$name ($workers): $out {$sw}"
  python3 -c "import json,sys; d=json.loads(sys.argv[3]); d.update(json.loads('{'+sys.argv[4]+'}')); d['config']=sys.argv[1]; d['workers']=sys.argv[2]; print(json.dumps(d))" \
    "$name" "$workers" "$out" "$sw" >>"$RAW/lines.jsonl"
}

{ [ "${RESUME:-0}" = 1 ] || [ "${REPORT_ONLY:-0}" = 1 ]; } && [ -f "$RAW/lines.jsonl" ] || : >"$RAW/lines.jsonl"
# switching first (a run cut short keeps it), then every static split of N single-role workers
# (or those STATIC names), then colocated
SWITCH="--switch-ms $SWITCH_MS --switch-windows 2 --switch-cooldown-ms $((2 * SWITCH_MS))"
# START may list several starting splits (space-separated): each is a configuration "switching from m/e/p/d"
for start in $START; do
  sname=switching
  [ "$start" = "$START" ] || sname="switching from $(awk -F, '{ for (i = 1; i <= NF; i++) c[$i]++; printf "%d/%d/%d/%d", c["media"], c["encode"], c["prefill"], c["decode"] }' <<<"$start")"
  [ "${REPORT_ONLY:-0}" = 1 ] || [ "${SWITCHING:-1}" != 1 ] || run "$sname" "$start" $SWITCH
  [ "${REPORT_ONLY:-0}" = 1 ] || [ "${SWITCHING:-1}" != 1 ] || [ "${SHARE:-0}" != 1 ] || run "$sname, sharing roles" "$start" $SWITCH --switch-share 1
done
python3 - "$N" >"$RUN/splits.txt" <<'PY'
import itertools, sys
n = int(sys.argv[1])
for m, e, p in itertools.product(range(1, n), repeat=3):
    d = n - m - e - p
    if d >= 1:
        print(",".join(["media"] * m + ["encode"] * e + ["prefill"] * p + ["decode"] * d), f"{m}/{e}/{p}/{d}")
PY
while read -r w s; do
  [ -n "${STATIC:-}" ] && [[ " $STATIC " != *" $s "* ]] && continue
  [ "${REPORT_ONLY:-0}" = 1 ] || run "static $s" "$w"
done <"$RUN/splits.txt"
[ "${REPORT_ONLY:-0}" = 1 ] || [ "${COLOCATED:-1}" != 1 ] || run colocated "$(python3 -c "print(','.join(['all'] * $N))")"
# the machine: MACHINE, else the GPU's name (times the devices used), else the CPU
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
NDEV=$(awk -F, '{print NF}' <<<"${DEVICES:-0}")
MACHINE=${MACHINE:-${GPU:+$GPU x $NDEV}}
MACHINE=${MACHINE:-$(nproc) CPU cores}
python3 - "$RAW/lines.jsonl" "$OUT_DIR/$NAME.json" \
  "$MACHINE" \
  "$N" "$RATE/$TEXT_RATE" "$DURATION" "$PHASE" "$TTFT_MS" "$TPOT_MS" "$BACKEND" "$MODEL" <<'PY'
import json, os, sys
sys.path.insert(0, "bench")
import benchjson
raw, out, machine, n, rate, dur, phase, ttft, tpot, backend, model = sys.argv[1:12]
model = os.path.basename(model.rstrip("/"))
rows = [json.loads(l) for l in open(raw) if l.strip()]
static = [r for r in rows if r["config"].startswith("static")]
best = max(static, key=lambda r: r["goodput"])
results = []
for r in rows:
    results.append(benchjson.result(
        f"{model} on {backend}, {n} workers, {r['config']} ({r['workers']}), alternating {phase} s image-heavy "
        f"and text phases, {rate} req/s (image/text) for {dur} s, targets TTFT {ttft} ms TPOT {tpot} ms",
        "goodput (requests within both targets per second)", r["goodput"],
        f"the best static split of the same run ({best['config']})", best["goodput"], True,
        slo_attainment=r["slo_attainment"], throughput=r["throughput"], completed=r["completed"],
        requests=r["requests"], errors=r["errors"], overloaded=r.get("overloaded"), ttft_ms_p90=r["ttft_ms_p90"], tpot_ms_p90=r["tpot_ms_p90"],
        image_phase_attainment=r.get("media_slo_attainment"), text_phase_attainment=r.get("text_slo_attainment"),
        switches=r.get("switches"), switches_aborted=r.get("switches_aborted"),
        switches_unhelpful=r.get("switches_unhelpful"),
        switch_ms_max=r.get("switch_ms_max"), switch_role_ms_max=r.get("switch_role_ms_max")))
NOTES = ("Every configuration on a fresh `vidi up` with the same Poisson arrivals (seed 7) from bench/epd/loadgen "
         "(mix alt:PHASE: image-heavy and text phases in turn); goodput = requests that finished within both targets "
         "per second of the run (stragglers up to 60 s after the last arrival count against it). Static splits: "
         "every split of the workers with each stage at least one; colocated: every worker with every role; "
         "switching: the router's policy (PROTOCOL.md 5.6) from the split START. image_phase_attainment / "
         "text_phase_attainment: the SLO attainment of the questions with media / without (each phase's). switch_ms_max: DRAIN to READY; "
         "switch_role_ms_max: ROLE to READY." + (" " + os.environ["NOTES"] if os.environ.get("NOTES") else ""))
benchjson.write(out, "roles-switch", machine, benchjson.command("bench/roles/switch.sh", (
    "BACKEND", "MODEL", "WORKERS", "START", "RATE", "TEXT_RATE", "DURATION", "PHASE", "DEVICES", "STATIC", "MEDIA_MAX",
    "TEXT_MAX", "WORKER_ARGS", "SWITCH_MS", "SHARE", "SWITCHING", "COLOCATED", "TTFT_MS", "TPOT_MS", "MAX_REQUESTS")), results, NOTES)
for r in results:
    print(f"{r['case'][:110]:110s} goodput {r['value']:.3f} vs {r['baseline_value']:.3f}  x{r['ratio']}  "
          f"attained {r['slo_attainment']}")
PY

#!/usr/bin/env bash
# bench/gpu/run.sh — the GPU benchmark (issue 4 item 5), on a CUDA host.
#
# Run from anywhere, after `source .devlibs/env.sh` on a bare host (tools/gpu-check
# does both). For each model shape it, in this one run:
#   1. makes the random-weight checkpoint with the real shapes, if missing, under
#      $BENCH_MODELS (transformers, bf16, on the GPU: make_models.py), and times
#      transformers / torch on it (baselines.py);
#   2. times vidi's engine on the CUDA backend on the same folder (bench_gpu),
#      op cases (attention, GEMM) and model cases (vision, prefill, video, decode)
#      in two processes, each under a time limit;
# then report.py writes bench/results/gpu-{vision,prefill,attention,decode,gemm}.json
# and prints a table. The raw JSON lines go to bench/results/gpu-raw-<model>.jsonl
# (one file per model, replaced when that model runs again); the report reads every
# gpu-raw-*.jsonl there, so the 7B shape can run in a later call (BENCH_ONLY=7b)
# and be merged with the 2B lines of the earlier one (each row still compares
# vidi and its baseline from the same run; the notes say when runs differ).
#
# Environment:
#   BENCH_QUICK=1      2B shape only, attention at 8K and 32K (not 128K)
#   BENCH_ONLY=2b|7b   just that shape (default: both, or 2b with BENCH_QUICK=1)
#   BENCH_RUNS=3       timed runs per case (after a warm-up); the median is reported
#   BENCH_MODELS=/tmp/vidi-bench-models   where the checkpoints go (~4.4 GB + ~16.6 GB)
#   BUILD=<repo>/.devlibs/build           the CUDA build holding bench/gpu/bench_gpu
#   BENCH_GPU_BIN=...  the bench_gpu binary (default $BUILD/bench/gpu/bench_gpu)
#   PY=python3         a Python with torch + transformers
#   BENCH_TIMEOUT_PY BENCH_TIMEOUT_OPS BENCH_TIMEOUT_MODEL  seconds per step per shape
#                      (quick 240/90/180, else 300/100/180: one shape fits 10 minutes)
#   BENCH_COMMAND      the command recorded in the results (default: this one)
#   OUT                when set, raw lines (after every step) and results are copied to
#                      $OUT/bench-results, so a run cut short still brings its lines back
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$REPO/.devlibs/build}
BIN=${BENCH_GPU_BIN:-$BUILD/bench/gpu/bench_gpu}
PY=${PY:-python3}
MODELS=${BENCH_MODELS:-/tmp/vidi-bench-models}
QUICK=${BENCH_QUICK:-0}
RUNS=${BENCH_RUNS:-3}
RES=$REPO/bench/results
# per-step limits; one shape stays under the device tool's 10 minutes a command
if [ "$QUICK" = 1 ]; then d_py=240 d_ops=90 d_model=180; else d_py=300 d_ops=100 d_model=180; fi
T_PY=${BENCH_TIMEOUT_PY:-$d_py}
T_OPS=${BENCH_TIMEOUT_OPS:-$d_ops}
T_MODEL=${BENCH_TIMEOUT_MODEL:-$d_model}

if [ -n "${BENCH_ONLY:-}" ]; then
    SHAPES=$BENCH_ONLY
elif [ "$QUICK" = 1 ]; then
    SHAPES=2b
else
    SHAPES="2b 7b"
fi
QFLAG=()
[ "$QUICK" = 1 ] && QFLAG=(--quick)
CMD=${BENCH_COMMAND:-"BENCH_QUICK=$QUICK${BENCH_ONLY:+ BENCH_ONLY=$BENCH_ONLY} BENCH_RUNS=$RUNS bench/gpu/run.sh"}

if [ ! -x "$BIN" ]; then
    echo "bench/gpu/run.sh: no $BIN (build with -DVIDI_CUDA=ON; the top-level CMakeLists.txt adds bench/gpu)" >&2
    exit 1
fi
mkdir -p "$RES" "$MODELS"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
echo "gpu bench: shapes [$SHAPES], quick=$QUICK, runs=$RUNS, models in $MODELS" >&2

save_out() {
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT/bench-results"
        cp "$RES"/gpu-*.json "$RES"/gpu-raw-*.jsonl "$OUT/bench-results/" 2>/dev/null || true
    fi
}

t_start=$(date +%s)
for s in $SHAPES; do
    name=qwen2vl-$s-shape
    RAW=$RES/gpu-raw-$name.jsonl
    : >"$RAW"
    echo "== $name: transformers / torch baselines (makes the checkpoint when missing)" >&2
    t0=$(date +%s)
    timeout "$T_PY" "$PY" "$REPO/bench/gpu/baselines.py" --model "$name" --models-dir "$MODELS" \
        --runs "$RUNS" "${QFLAG[@]}" | tee -a "$RAW"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "{\"case\":\"step_failed\",\"impl\":\"transformers\",\"model\":\"$name\",\"rc\":$rc,\"limit_s\":$T_PY}" | tee -a "$RAW"
    echo "   baselines took $(( $(date +%s) - t0 )) s" >&2
    save_out
    if [ ! -s "$MODELS/$name/config.json" ]; then
        echo "{\"case\":\"step_failed\",\"impl\":\"vidi\",\"model\":\"$name\",\"error\":\"no checkpoint in $MODELS/$name\"}" | tee -a "$RAW"
        continue
    fi
    echo "== $name: vidi op cases (attention, GEMM)" >&2
    t0=$(date +%s)
    timeout "$T_OPS" "$BIN" --model "$MODELS/$name" --name "$name" --runs "$RUNS" "${QFLAG[@]}" \
        --cases attention,gemm | tee -a "$RAW"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "{\"case\":\"step_failed\",\"impl\":\"vidi\",\"model\":\"$name\",\"step\":\"ops\",\"rc\":$rc,\"limit_s\":$T_OPS}" | tee -a "$RAW"
    echo "   took $(( $(date +%s) - t0 )) s" >&2
    save_out
    echo "== $name: vidi model cases (vision, prefill, video, decode)" >&2
    t0=$(date +%s)
    timeout "$T_MODEL" "$BIN" --model "$MODELS/$name" --name "$name" --runs "$RUNS" "${QFLAG[@]}" \
        --cases vision,prefill,video,decode | tee -a "$RAW"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "{\"case\":\"step_failed\",\"impl\":\"vidi\",\"model\":\"$name\",\"step\":\"model\",\"rc\":$rc,\"limit_s\":$T_MODEL}" | tee -a "$RAW"
    echo "   took $(( $(date +%s) - t0 )) s" >&2
    save_out
done
echo "gpu bench: $(( $(date +%s) - t_start )) s in all" >&2

"$PY" "$REPO/bench/gpu/report.py" --out "$RES" --command "$CMD" "$RES"/gpu-raw-*.jsonl
rc=$?
save_out
exit $rc

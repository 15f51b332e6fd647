#!/usr/bin/env bash
# bench/specdec/run.sh — speculative decoding against plain decoding on the GPU host (source
# .devlibs/env.sh first): vidi-shapes with prompt lookup, with vidi-shapes-draft and with the distilled
# one-layer vidi-shapes-draft1 (tools/train/distill.py), captioning
# (one caption per scene) and QA (every question) on the 120 held-out scenes of tests/data/shapes,
# batch 1, 8 and 32, each mode timed REPEAT times (the median); results in
# $OUT_DIR/specdec-vidi-shapes.json.
#   BACKEND (cuda), BATCH (1 8 32), WORKLOADS (caption qa), TOKENS (64), K (5), REPEAT (3),
#   DATA (tests/data/shapes), RAW (a folder for the raw lines; default a new one)
# One bench_specdec per workload and batch (plain and every speculative mode in the same process, so
# each line's baseline is of the same run). The whole takes about 14 minutes on an H100, past the device
# tool's 10 minutes a command: with the same RAW, a second run (RESUME=1) keeps the workloads and batches
# already done (a part cut off midway is done again) and writes the report over all of them.
# bench/specdec/ksweep.sh: captioning at batch 1 for several k.
source "$(dirname "$0")/setup.sh"
[ "${RESUME:-0}" = 1 ] && [ -f "$RAW/specdec.jsonl" ] || : >"$RAW/specdec.jsonl"
for w in ${WORKLOADS:-caption qa}; do
  for b in ${BATCH:-1 8 32}; do
    if grep -q "\"workload\": \"$w\", \"batch\": $b," "$RAW/specdec.jsonl"; then
      echo "run.sh: $w at batch $b: done before, kept"
      continue
    fi
    "$B/bench/specdec/bench_specdec" --model models/vidi-shapes --draft models/vidi-shapes-draft,models/vidi-shapes-draft1 \
      --examples "$DATA" --questions "$RAW/questions.tsv" --backend "${BACKEND:-cuda}" --batch "$b" \
      --tokens "${TOKENS:-64}" --k "${K:-5}" --repeat "${REPEAT:-3}" --workload "$w" >"$RAW/part.jsonl" || exit 1
    cat "$RAW/part.jsonl"
    cat "$RAW/part.jsonl" >>"$RAW/specdec.jsonl"
  done
done
python3 bench/specdec/report.py "$OUT_DIR/specdec-vidi-shapes.json" \
  "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo host CPU)" \
  "source .devlibs/env.sh; bench/specdec/run.sh (RESUME=1 with the same RAW for what a first command left)" \
  "$RAW/specdec.jsonl"

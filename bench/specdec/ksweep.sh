#!/usr/bin/env bash
# bench/specdec/ksweep.sh — how many drafts a step should propose: captioning (the 120 held-out scenes of
# tests/data/shapes) at batch 1 with prompt lookup and the distilled vidi-shapes-draft1 for each k of KS,
# plain decoding in the same run each time, each mode timed REPEAT times (the median); on the GPU host
# (source .devlibs/env.sh first); results in $OUT_DIR/specdec-k-sweep.json. It chose VIDI_SPEC_DRAFT_K.
#   BACKEND (cuda), KS (3 4 5 6 8), REPEAT (3), DATA (tests/data/shapes)
source "$(dirname "$0")/setup.sh"
: >"$RAW/ksweep.jsonl"
for k in ${KS:-3 4 5 6 8}; do
  "$B/bench/specdec/bench_specdec" --model models/vidi-shapes --draft models/vidi-shapes-draft1 --examples "$DATA" \
    --questions "$RAW/questions.tsv" --backend "${BACKEND:-cuda}" --batch 1 --k "$k" --repeat "${REPEAT:-3}" \
    --workload caption | tee -a "$RAW/ksweep.jsonl" || exit 1
done
python3 bench/specdec/report.py "$OUT_DIR/specdec-k-sweep.json" \
  "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo host CPU)" \
  "source .devlibs/env.sh; bench/specdec/ksweep.sh" "$RAW/ksweep.jsonl"

#!/usr/bin/env bash
# bench/specdec/run.sh — speculative decoding against plain decoding on the GPU host (source
# .devlibs/env.sh first): vidi-shapes with prompt lookup, with vidi-shapes-draft and with the distilled
# one-layer vidi-shapes-draft1 (tools/train/distill.py), captioning
# (one caption per scene) and QA (every question) on the 120 held-out scenes of tests/data/shapes,
# batch 1, 8 and 32, in one run; results in $OUT_DIR/specdec-vidi-shapes.json.
#   BACKEND (cuda), BATCH (1,8,32), TOKENS (64), K (4), DATA (tests/data/shapes)
set -u -o pipefail
B=${VIDI_BUILD:-.devlibs/build}
OUT_DIR=${OUT_DIR:-bench/results}
RAW=${RAW:-$(mktemp -d)}
DATA=${DATA:-tests/data/shapes}
python3 bench/specdec/questions.py "$DATA/manifest.json" >"$RAW/questions.tsv" || exit 1
"$B/bench/specdec/bench_specdec" --model models/vidi-shapes --draft models/vidi-shapes-draft,models/vidi-shapes-draft1 --examples "$DATA" \
  --questions "$RAW/questions.tsv" --backend "${BACKEND:-cuda}" --batch "${BATCH:-1,8,32}" --tokens "${TOKENS:-64}" \
  --k "${K:-4}" | tee "$RAW/specdec.jsonl"
python3 bench/specdec/report.py "$OUT_DIR/specdec-vidi-shapes.json" \
  "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo host CPU)" \
  "source .devlibs/env.sh; bench/specdec/run.sh" "$RAW/specdec.jsonl"

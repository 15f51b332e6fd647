#!/usr/bin/env bash
# tests/gpu/specdec_exact.sh BENCH_SPECDEC MODEL DRAFT[,DRAFT...] DATA — speculative decoding on the CUDA
# backend in exact mode (batch-invariant kernels, vidi_backend_cuda_set_exact): every caption and
# every answer of DATA (tests/data/shapes: 120 scenes, their questions) decoded plainly, with prompt
# lookup and with each draft model, at batch 1, 8 and 32: greedy speculation must give plain greedy
# decoding's tokens for 100 % of the sequences ("identical": true on every line). Exits 77 (skipped)
# without a CUDA device.
set -u -o pipefail
BENCH=$1 MODEL=$2 DRAFT=$3 DATA=$4
RUN=$(mktemp -d)
trap 'rm -rf "$RUN"' EXIT
python3 "$(dirname "$0")/../../bench/specdec/questions.py" "$DATA/manifest.json" >"$RUN/questions.tsv" || exit 1
"$BENCH" --exact --model "$MODEL" --draft "$DRAFT" --examples "$DATA" --questions "$RUN/questions.tsv" \
  --backend cuda --batch 1,8,32 --tokens 64 --k 4 >"$RUN/out.jsonl"
rc=$?
[ $rc = 77 ] && { echo "no CUDA device: skipped"; exit 77; }
cat "$RUN/out.jsonl"
[ $rc = 0 ] || { echo "specdec_exact: bench_specdec failed ($rc)"; exit 1; }
lines=$(grep -c '"mode"' "$RUN/out.jsonl")
spec=$(grep -c '"mode": "\(ngram\|draft\)"' "$RUN/out.jsonl")
same=$(grep '"mode": "\(ngram\|draft\)"' "$RUN/out.jsonl" | grep -c '"identical": true')
accepted=$(grep '"mode": "draft"' "$RUN/out.jsonl" | grep -vc '"accepted": 0,')
echo "specdec_exact: $same of $spec speculative runs identical to plain greedy ($lines lines); draft runs with drafts accepted: $accepted"
n_drafts=$(echo "$DRAFT" | tr ',' '\n' | grep -c .)
[ "$spec" = $((6 * (1 + n_drafts))) ] && [ "$same" = "$spec" ] && [ "$accepted" = $((6 * n_drafts)) ]

#!/usr/bin/env bash
# bench/sparse/run.sh — bench_sparse on the GPU host (source .devlibs/env.sh first):
# one layer of grid heads against the dense kernel for the 2B and 7B head shapes;
# results in $OUT_DIR/sparse-attention.json (default bench/results).
set -u -o pipefail
B=${VIDI_BUILD:-.devlibs/build}
OUT_DIR=${OUT_DIR:-bench/results}
RAW=$(mktemp -d)
for n in ${NS_2B:-32768 131072 262144 524288}; do timeout 150 "$B/bench/sparse/bench_sparse" "$n" 12 2 128 256 3; done | tee "$RAW/2b.jsonl"
for n in ${NS_7B:-32768 131072 262144}; do timeout 150 "$B/bench/sparse/bench_sparse" "$n" 28 4 128 256 3; done | tee "$RAW/7b.jsonl"
python3 bench/sparse/report.py "$OUT_DIR/sparse-attention.json" "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
  "source .devlibs/env.sh; bench/sparse/run.sh" "$RAW/2b.jsonl" "$RAW/7b.jsonl"

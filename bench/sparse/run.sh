#!/usr/bin/env bash
# bench/sparse/run.sh — bench_sparse and torch SDPA on the GPU host (source .devlibs/env.sh
# first): one layer of grid heads against our dense kernel and torch SDPA, for the 2B and 7B
# head shapes; results in $OUT_DIR/sparse-attention.json (default bench/results).
#   NS_2B, NS_7B: the sequence lengths (default 32K, 128K, 256K, 512K, 1M for both)
set -u -o pipefail
B=${VIDI_BUILD:-.devlibs/build}
OUT_DIR=${OUT_DIR:-bench/results}
RAW=${RAW:-$(mktemp -d)}
NS="32768 131072 262144 524288 1048576"
for n in ${NS_2B:-$NS}; do timeout 240 "$B/bench/sparse/bench_sparse" "$n" 12 2 128 256 3; done | tee "$RAW/2b.jsonl"
for n in ${NS_7B:-$NS}; do timeout 240 "$B/bench/sparse/bench_sparse" "$n" 28 4 128 256 3; done | tee "$RAW/7b.jsonl"
for n in ${NS_2B:-$NS}; do timeout 240 python3 bench/sparse/sdpa.py "$n" 12 2 128 3; done | tee "$RAW/sdpa-2b.jsonl"
for n in ${NS_7B:-$NS}; do timeout 240 python3 bench/sparse/sdpa.py "$n" 28 4 128 3; done | tee "$RAW/sdpa-7b.jsonl"
python3 bench/sparse/report.py "$OUT_DIR/sparse-attention.json" "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
  "source .devlibs/env.sh; bench/sparse/run.sh" "$RAW"/2b.jsonl "$RAW"/7b.jsonl "$RAW"/sdpa-2b.jsonl "$RAW"/sdpa-7b.jsonl

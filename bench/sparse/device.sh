#!/usr/bin/env bash
# bench/sparse/device.sh — issue 8's GPU run in one command on the GPU host (after
# `source .devlibs/env.sh`; carry .devlibs/env.sh, .devlibs/devlibs.tar.xz and the
# programs named below from tools/build-devlibs-build):
#   1. test_cuda_sparse: the CUDA kernel equals its CPU twin;
#   2. vidi-shapes' 426 questions on the CUDA backend, dense and with sparse prefill through
#      the CUDA kernel on every layer (ctest gpu_shapes, gpu_shapes_sparse);
#   3. end-to-end prefill of a Qwen2-VL-2B-shape random-weight model (bench/gpu/make_models.py)
#      at 128K and 256K tokens, dense and sparse in the same run (bench_gpu --cases sparse),
#      written to $OUT_DIR/sparse-prefill.json by bench/sparse/report_prefill.py.
# Logs go to $OUT (default /tmp/sparse-out).
set -u -o pipefail
B=${VIDI_BUILD:-.devlibs/build}
OUT=${OUT:-/tmp/sparse-out}
OUT_DIR=${OUT_DIR:-bench/results}
SIZES=${SPARSE_PREFILL:-131072,262144}
mkdir -p "$OUT"
"$B/tests/gpu/test_cuda_sparse" >"$OUT/test_cuda_sparse.log" 2>&1
echo "test_cuda_sparse: rc $?"; tail -3 "$OUT/test_cuda_sparse.log"
VIDI_SHAPES_BACKEND=cuda "$B/tests/test_shapes" models/vidi-shapes tests/data/shapes reference_answers.json 0.94 \
  >"$OUT/gpu_shapes.log" 2>&1
echo "gpu_shapes: rc $?"; tail -5 "$OUT/gpu_shapes.log"
VIDI_SHAPES_BACKEND=cuda VIDI_SPARSE_CONFIG=models/vidi-shapes/sparse_config.json VIDI_SPARSE_DEVICE_MAX_SHARE=1 \
  "$B/tests/test_shapes" models/vidi-shapes tests/data/shapes reference_answers.json 0.94 >"$OUT/gpu_shapes_sparse.log" 2>&1
echo "gpu_shapes_sparse: rc $?"; tail -5 "$OUT/gpu_shapes_sparse.log"
M=${BENCH_MODELS:-/tmp/vidi-bench-models}
python3 bench/gpu/make_models.py --out "$M" 2>&1 | tail -1
timeout 420 "$B/bench/gpu/bench_gpu" --model "$M/qwen2vl-2b-shape" --name qwen2vl-2b-shape --cases sparse \
  --sparse-prefill "$SIZES" --runs 3 >"$OUT/sparse-prefill.jsonl" 2>"$OUT/bench_gpu.err"
echo "bench_gpu: rc $?"; cat "$OUT/sparse-prefill.jsonl"
python3 bench/sparse/report_prefill.py "$OUT_DIR/sparse-prefill.json" \
  "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" "source .devlibs/env.sh; bench/sparse/device.sh" \
  "$OUT/sparse-prefill.jsonl"

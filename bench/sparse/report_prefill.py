#!/usr/bin/env python3
"""bench/sparse/report_prefill.py OUT.json MACHINE COMMAND RAW.jsonl — bench_gpu's
sparse_prefill_<S> lines (end-to-end prefill, dense and sparse in the same run) in the form
../shared/BENCH.md gives."""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import benchjson  # noqa: E402

out, machine, command, raw = sys.argv[1:5]
rows = [json.loads(l) for l in open(raw) if l.strip()]
results = []
for r in rows:
    if not r.get("case", "").startswith("sparse_prefill_") or "runs_ms" not in r:
        continue
    dense = statistics.median(r["dense_runs_ms"])
    sparse = statistics.median(r["runs_ms"])
    results.append(benchjson.result(
        f"{r['model']} prefill of {r['tokens']} tokens (512 text, a video of {r['frames']} frames x "
        f"{r['frame_tokens']} tokens, 512 text), bf16, every head a grid head (frame stride, phase 0, "
        f"sink 512, local 1024); {r['kept']:.4f} of the causal query-key pairs kept",
        "prefill ms (embeddings, 28 layers, last-row logits, greedy token)", round(sparse, 3),
        "vidi dense prefill (the same path, dense attention), same run", round(dense, 3), False,
        sparse_attention_ms=r.get("sparse_attention_ms"), dense_layers=r.get("dense_layers")))
NOTES = ("ratio = dense ms / sparse ms. A random-weight checkpoint with the real shapes of "
         "Qwen2-VL-2B-Instruct (bench/gpu/make_models.py); the prompt's embeddings are random text "
         "embeddings and the video span is given to the sparse planner by the ids (the vision tower is not "
         "in the timing; bench_gpu's video case times it). sparse_attention_ms: host time inside the sparse "
         "prompt attention in the last timed run (plans built, packed and uploaded once and reused by every "
         "layer with the same rules; their launches are asynchronous, so kernel time is in 'value'). "
         "Speed only: the pattern is fixed, not searched, since random weights have no grid to find.")
benchjson.write(out, "sparse-prefill", machine, command, results, NOTES)
for r in results:
    print(f"{r['case'][:60]:60s} sparse {r['value']:10.1f} ms  dense {r['baseline_value']:10.1f} ms  {r['ratio']:6.2f}x")

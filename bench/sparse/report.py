#!/usr/bin/env python3
"""bench/sparse/report.py OUT.json MACHINE COMMAND RAW.jsonl... — bench_sparse's lines in the form
../shared/BENCH.md gives: per sequence length and head shape, sparse attention time (grid heads)
against our dense kernel, with plan building and density."""
import datetime
import json
import sys

out, machine, command = sys.argv[1:4]
rows = [json.loads(l) for f in sys.argv[4:] for l in open(f) if l.strip()]
shape = {12: "Qwen2-VL-2B heads (12 q, 2 kv, d 128)", 28: "Qwen2-VL-7B heads (28 q, 4 kv, d 128)"}
results = [{"case": f"one layer, {r['n']} tokens, {shape.get(r['hq'], str(r['hq']) + ' heads')}, grid heads "
                    f"(frame {r['frame']} tokens, sink 512, local 1024), density {r['density']:.4f}",
            "metric": "attention ms (all heads)", "value": r["sparse_ms"],
            "baseline": "vidi dense causal attention (tensor cores), same inputs", "baseline_value": r["dense_ms"],
            "ratio": round(r["dense_ms"] / r["sparse_ms"], 4), "higher_is_better": False,
            "plan_ms_per_head": r["plan_ms_per_head"]} for r in rows]
doc = {"bench": "sparse-attention", "date": datetime.date.today().isoformat(), "machine": machine,
       "command": command, "results": results,
       "notes": ("ratio = dense ms / sparse ms (> 1: sparse is faster). This is the first CUDA kernel "
                 "(kernels/cuda/cuda_sparse.cu): one thread per query row on the CUDA cores, keys through shared "
                 "memory in chunks of 32. It is correct (test_cuda_sparse: equal to the CPU twin) but far slower "
                 "than the tensor-core dense kernel even at 1-2 % density; the goal (>= 10x dense at 1M) needs the "
                 "tensor-core version. torch SDPA is not measured yet. Plan building (host, one head) is timed "
                 "apart.")}
json.dump(doc, open(out, "w"), indent=1)
for r in results:
    print(r["case"], r["value"], r["baseline_value"], r["ratio"])

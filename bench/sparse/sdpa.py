#!/usr/bin/env python3
"""bench/sparse/sdpa.py N HQ HKV D [REPS] — torch scaled_dot_product_attention (causal, bf16,
GQA by enable_gqa) on random q, k, v of bench_sparse's shapes, one layer: prints one JSON
line {"n", "hq", "hkv", "d", "sdpa_ms", "backend"}. The median of REPS (3) runs after a
warm-up, with a synchronize before each clock read. The baseline torch users would reach for."""
import json
import sys
import time

import torch
import torch.nn.functional as F

n, hq, hkv, d = (int(x) for x in sys.argv[1:5])
reps = int(sys.argv[5]) if len(sys.argv) > 5 else 3
g = torch.Generator(device="cuda").manual_seed(0)
q = torch.rand((1, hq, n, d), device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
k = torch.rand((1, hkv, n, d), device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
v = torch.rand((1, hkv, n, d), device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
backend = "default"
times = []
with torch.no_grad():
    for r in range(reps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        torch.cuda.synchronize()
        if r > 0:
            times.append((time.perf_counter() - t0) * 1e3)
        del o
times.sort()
print(json.dumps({"n": n, "hq": hq, "hkv": hkv, "d": d, "sdpa_ms": round(times[len(times) // 2], 3),
                  "torch": torch.__version__, "backend": backend}), flush=True)

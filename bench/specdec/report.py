#!/usr/bin/env python3
"""bench/specdec/report.py OUT.json MACHINE COMMAND RAW.jsonl — bench_specdec's lines in the form
../shared/BENCH.md gives: decode tokens/s with prompt lookup and with the draft model against
plain decoding of the same sequences in the same run, with acceptance figures."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import benchjson  # noqa: E402

out, machine, command, raw = sys.argv[1:5]
rows = [json.loads(l) for l in open(raw) if l.strip()]
plain = {}  # each line's baseline: the latest plain line of its workload and batch (the same run)
results = []
for r in rows:
    if r["mode"] == "plain":
        plain[(r["workload"], r["batch"])] = r
    if r["mode"] == "plain" or (r["workload"], r["batch"]) not in plain:
        continue
    b = plain[(r["workload"], r["batch"])]
    results.append(benchjson.result(
        f"vidi-shapes {r['workload']}, {r['sequences']} sequences of tests/data/shapes, batch {r['batch']}, greedy, "
        f"{r['mode']}{' ' + r['draft'] if r.get('draft') else ''} k {r['k']}",
        "decode tokens/s", r["tok_s"], "plain decoding, the same sequences, same run", b["tok_s"], True,
        acceptance=round(r["accepted"] / r["proposed"], 3) if r["proposed"] else None,
        tokens_per_target_step=round(r["emitted"] / r["steps"], 3) if r["steps"] else None,
        tokens=r["tokens"], draft_share=round(r["draft_seconds"] / r["seconds"], 3) if r["seconds"] else None,
        identical_to_plain=r["identical"], backend=r["backend"],
        acceptance_at=[round(a / p, 3) if p else None for a, p in zip(r.get("accepted_at", []), r.get("proposed_at", []))]))
NOTES = ("tokens/s of the decode loop only (prefill untimed), the backend synchronised at the end of each round "
         "of `batch` sequences; the whole set runs once untimed first (CUDA graphs, caches), then each mode is "
         "timed --repeat times and the median reported. "
         "acceptance = drafts accepted / proposed; acceptance_at: the same at each draft position (k adapts per "
         "sequence, so later positions are proposed less often); tokens_per_target_step counts the target's own token "
         "(the bonus or the correction). identical_to_plain: every sequence's greedy tokens equal the plain "
         "run's. draft_share: the part of the decode time spent in the draft model's steps on the host; greedy "
         "drafts are queued without a wait (their tokens go from the device into the target's step), so it is "
         "the launch time there, not the draft's GPU time.")
benchjson.write(out, "specdec", machine, command, results, NOTES)
for r in results:
    print(f"{r['case'][:90]:90s} {r['value']:9.1f} vs {r['baseline_value']:9.1f}  x{r['ratio']}  acc {r['acceptance']}")

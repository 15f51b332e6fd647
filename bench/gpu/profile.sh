#!/usr/bin/env bash
# bench/gpu/profile.sh — where the GPU time of one bench_gpu case goes: every
# kernel it launches timed by Nsight Compute (ncu, gpu__time_duration only),
# summed per kernel name, largest first. Kernels run one at a time under ncu,
# so the sum is GPU busy time without launch gaps; compare it with the case's
# wall time from bench_gpu to see the gaps.
#
#   bench/gpu/profile.sh MODEL_DIR CASE [bench_gpu options...]
#   e.g. bench/gpu/profile.sh /tmp/vidi-bench-models/qwen2vl-2b-shape decode_b1 --decode-tokens 4
#
# Environment: BUILD (default <repo>/.devlibs/build), NCU (default ncu),
# SKIP / COUNT (kernel launches skipped / profiled, default 0 / 4000),
# OUT (when set, the raw CSV goes to $OUT/profile-<case>.csv).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$REPO/.devlibs/build}
NCU=${NCU:-ncu}
MODEL=${1:?model dir}
CASE=${2:?case}
shift 2
CSV=${OUT:-/tmp}/profile-$CASE.csv
"$NCU" --metrics gpu__time_duration.sum --csv --launch-skip "${SKIP:-0}" --launch-count "${COUNT:-4000}" \
    "$BUILD/bench/gpu/bench_gpu" --model "$MODEL" --name profile --cases "$CASE" --runs 1 "$@" >"$CSV" 2>/dev/null
python3 - "$CSV" <<'PY'
import collections, csv, sys
rows = list(csv.reader(l for l in open(sys.argv[1]) if l.startswith('"')))
if not rows:
    sys.exit("profile: ncu wrote no rows")
h = rows[0]
ki, mi, vi = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Value")
tot = collections.defaultdict(lambda: [0, 0.0])
for r in rows[1:]:
    if r[mi] != "gpu__time_duration.sum":
        continue
    t = float(r[vi].replace(",", ""))  # ns (or us, per the unit column)
    name = r[ki].split("(")[0][:90]
    tot[name][0] += 1
    tot[name][1] += t
unit = h.index("Metric Unit") if "Metric Unit" in h else None
u = rows[1][unit] if unit is not None else "?"
all_t = sum(v[1] for v in tot.values())
print(f"{sum(v[0] for v in tot.values())} kernels, {all_t:.0f} {u} in all")
for name, (n, t) in sorted(tot.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f"{100 * t / all_t:5.1f}%  {t:12.0f} {u}  {n:6d}x  {t / n:9.1f}  {name}")
PY

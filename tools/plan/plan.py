#!/usr/bin/env python3
"""tools/plan/plan.py — the initial media / encode / prefill / decode split of N workers.

    python3 tools/plan/plan.py PROFILE.json [--workers N] [--stats FILE] [--json]
    python3 tools/plan/plan.py PROFILE.json --split M,E,P,D [--rate R]   # one split's goodput

Picks, among every split of N single-role workers with at least one per stage, the one with
the highest goodput: the largest arrival rate at which at least --attain (0.9) of the requests
meet both latency targets, found by simulating the pipeline (below) at rates halved and bisected
until the bracket is within 2 %.

PROFILE (JSON):
    { "workers": 6,
      "targets": { "ttft_ms": 2000, "tpot_ms": 100 },
      "requests": [ { "weight": 3, "images": 1, "videos": 0, "output_tokens": 8 }, ... ],
      "service": { "media_us": 60000,        # per media item (decode + sample frames)
                   "encode_us": 5000,        # per media item through the vision tower
                   "prefill_us": 300000,     # per prompt
                   "decode_step_us": 2000,   # one decode step of a worker ...
                   "decode_seq_us": 100 } }  # ... plus this per sequence in the step
--stats FILE takes the service times from a running router's `vidi stats` output instead
(stage_<role>.service_us; decode's time per token is used for the step, per sequence 0).

The simulation (deterministic: a fixed seed). Poisson arrivals, 1500 requests, the request
kinds drawn by weight. A request's media items go to the media workers, then to the encode
workers (each item one job, first come first served on the earliest free worker of the
stage), then its prompt to a prefill worker; the prefill gives the first token (TTFT = its
end minus the arrival). Then the decode workers take the sequences in turn, and each steps
every sequence it holds together: a step lasts decode_step_us + decode_seq_us x sequences and
gives each sequence one token, so TPOT is the mean step time over the request's remaining
tokens.
What it leaves out: batching inside encode and prefill, KV transfer time, the router's own time.
"""

import argparse
import itertools
import json
import random
import sys

STAGES = ("media", "encode", "prefill", "decode")


def load_stats(path):
    """`vidi stats` output -> service times (microseconds)."""
    vals = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                vals[parts[0]] = int(parts[1])
    s = {}
    for st in STAGES:
        v = vals.get(f"stage_{st}.service_us")
        if not v:
            sys.exit(f"plan: {path} has no stage_{st}.service_us (a router that has served requests)")
        s[st] = v
    return {"media_us": s["media"], "encode_us": s["encode"], "prefill_us": s["prefill"],
            "decode_step_us": s["decode"], "decode_seq_us": 0}


def check_profile(p):
    for k in ("targets", "requests", "service"):
        if k not in p:
            sys.exit(f"plan: the profile has no '{k}'")
    if not p["requests"] or any(r.get("weight", 1) <= 0 or r.get("output_tokens", 1) < 1 for r in p["requests"]):
        sys.exit("plan: every request kind needs a positive weight and output_tokens >= 1")
    for k in ("media_us", "encode_us", "prefill_us", "decode_step_us"):
        if not p["service"].get(k, 0) > 0:
            sys.exit(f"plan: service.{k} must be positive")


def simulate(p, split, rate, n=1500, seed=1):
    """Share of the requests within both targets at `rate` requests/s with `split`
    (workers per stage, STAGES order)."""
    rng = random.Random(seed)
    kinds = p["requests"]
    weights = [k.get("weight", 1) for k in kinds]
    sv = p["service"]
    tt, tp = p["targets"]["ttft_ms"] / 1e3, p["targets"]["tpot_ms"] / 1e3
    free = [[0.0] * split[i] for i in range(3)]  # media, encode, prefill: when each worker is free
    t = 0.0
    firsts = []  # (time of the first token, tokens left, request index)
    for i in range(n):
        t += rng.expovariate(rate)
        k = rng.choices(kinds, weights)[0]
        items = k.get("images", 0) + k.get("videos", 0)
        ready = t
        for s, per in ((0, sv["media_us"]), (1, sv["encode_us"])):
            done = ready
            for _ in range(items):
                w = min(range(len(free[s])), key=free[s].__getitem__)
                start = max(free[s][w], ready)
                free[s][w] = start + per / 1e6
                done = max(done, free[s][w])
            ready = done
        w = min(range(len(free[2])), key=free[2].__getitem__)
        start = max(free[2][w], ready)
        free[2][w] = start + sv["prefill_us"] / 1e6
        firsts.append((free[2][w], k.get("output_tokens", 1) - 1, i, t))
    # decode: sequences go to the decode workers in turn as their first tokens come; each worker
    # steps every sequence it holds together
    firsts.sort()
    ttft = {i: f - a for f, _, i, a in firsts}
    tpot = {}
    step = sv["decode_step_us"] / 1e6
    per_seq = sv.get("decode_seq_us", 0) / 1e6
    for wi in range(split[3]):
        mine = firsts[wi::split[3]]
        now, j, active = 0.0, 0, {}
        while j < len(mine) or active:
            if not active:
                now = max(now, mine[j][0])
            while j < len(mine) and mine[j][0] <= now:
                f, left, i, _ = mine[j]
                j += 1
                if left <= 0:
                    tpot[i] = 0.0
                else:
                    active[i] = [left, f, left]
            if not active:
                continue
            now += step + per_seq * len(active)
            for i in list(active):
                e = active[i]
                e[0] -= 1
                if e[0] == 0:
                    tpot[i] = (now - e[1]) / e[2]
                    del active[i]
    ok = sum(1 for i in ttft if ttft[i] <= tt and tpot.get(i, 0.0) <= tp)
    return ok / n


def goodput(p, split, attain):
    """The largest rate (requests/s) at which `attain` of the requests meet both targets."""
    lo, hi = 0.0, 1.0
    while simulate(p, split, hi) >= attain and hi < 1e5:
        lo, hi = hi, hi * 2
    if lo == 0.0:
        hi_ok = False
        r = hi
        for _ in range(20):
            r /= 2
            if simulate(p, split, r) >= attain:
                lo, hi_ok = r, True
                break
        if not hi_ok:
            return 0.0
        hi = r * 2
    while hi - lo > 0.02 * hi:
        mid = (lo + hi) / 2
        if simulate(p, split, mid) >= attain:
            lo = mid
        else:
            hi = mid
    return lo


def splits(n):
    """Every (media, encode, prefill, decode) with each >= 1 summing to n."""
    for a, b, c in itertools.combinations(range(1, n), 3):
        yield (a, b - a, c - b, n - c)


def plan(p, n, attain=0.9):
    rows = [(goodput(p, s, attain), s) for s in splits(n)]
    rows.sort(key=lambda x: (-x[0], x[1]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--workers", type=int, default=0, help="default: the profile's")
    ap.add_argument("--stats", default=None, help="`vidi stats` output: the service times from it")
    ap.add_argument("--attain", type=float, default=0.9)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--split", default=None, help="M,E,P,D: only this split's goodput (and attainment at --rate)")
    ap.add_argument("--rate", type=float, default=0.0, help="with --split: also the attainment at this rate")
    a = ap.parse_args(argv)
    with open(a.profile, encoding="utf-8") as f:
        p = json.load(f)
    if a.stats:
        p["service"] = load_stats(a.stats)
    check_profile(p)
    n = a.workers or p.get("workers", 0)
    if not 4 <= n <= 16:
        sys.exit("plan: 4 to 16 workers (one per stage at least)")
    if a.split:
        try:
            sp = tuple(int(x) for x in a.split.split(","))
        except ValueError:
            sp = ()
        if len(sp) != 4 or min(sp) < 1:
            sys.exit(f"plan: --split {a.split}: four positive worker counts, media,encode,prefill,decode")
        out = {"split": dict(zip(STAGES, sp)), "goodput_rps": round(goodput(p, sp, a.attain), 4)}
        if a.rate > 0:
            out["rate"] = a.rate
            out["attained"] = round(simulate(p, sp, a.rate), 4)
        print(json.dumps(out))
        return
    rows = plan(p, n, a.attain)
    if a.json:
        print(json.dumps({"best": dict(zip(STAGES, rows[0][1])), "goodput_rps": round(rows[0][0], 4),
                          "splits": [{"split": dict(zip(STAGES, s)), "goodput_rps": round(g, 4)} for g, s in rows]}))
        return
    print(f"{'media':>5} {'encode':>6} {'prefill':>7} {'decode':>6}  goodput (req/s at {a.attain:.0%} within targets)")
    for g, s in rows[:10]:
        print(f"{s[0]:5d} {s[1]:6d} {s[2]:7d} {s[3]:6d}  {g:.3f}")


if __name__ == "__main__":
    main()

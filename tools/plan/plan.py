#!/usr/bin/env python3
"""tools/plan/plan.py — the initial media / encode / prefill / decode split of N workers.

    python3 tools/plan/plan.py PROFILE.json [--workers N] [--gpus G] [--rate R] [--stats FILE] [--json]
    python3 tools/plan/plan.py PROFILE.json --split M,E,P,D [--rate R]   # one split's goodput
    python3 tools/plan/plan.py PHASES.json [--workers N] [--gpus G] [--json]  # phases: static or switching

Picks, among every split of N single-role workers with at least one per stage, the one with
the highest goodput: the largest arrival rate at which at least --attain (0.9) of the requests
meet both latency targets (the split's capacity), found by simulating the pipeline (below) at
rates halved and bisected until the bracket is within 2 % or, for a workload of a given arrival
rate, the most requests a second within both targets at that rate.

PROFILE (JSON):
    { "workers": 6,
      "gpus": 2,                             # optional: the workers share 2 GPUs (below)
      "max_batch": 64,                       # optional: a decode step's sequences at most (vidi
                                             #   worker --max-batch; 0 or absent: no limit)
      "targets": { "ttft_ms": 2000, "tpot_ms": 100 },
      "rate": 4.0,                           # optional: the arrival rate (requests/s), below
      "requests": [ { "weight": 3, "images": 1, "videos": 0, "output_tokens": 8,
                      "image_tokens": 300,   # optional: each image's size in vision tokens
                      "video_tokens": 1200,  # optional: each video's (all its frames)
                      "prompt_tokens": 40 }, # optional: the prompt's text tokens
                    ... ],
      "service": { "media_us": 60000,        # per media item (decode + sample frames)
                   "encode_us": 5000,        # per media item through the vision tower
                   "prefill_us": 300000,     # per prompt
                   "decode_step_us": 2000,   # one decode step of a worker ...
                   "decode_seq_us": 100,     # ... plus this per sequence in the step
                   "media_token_us": 0,      # optional, each: plus this per vision token of an item
                   "encode_token_us": 20,    #   (media, encode) or per token of the prompt,
                   "prefill_token_us": 50 } }#   vision tokens included (prefill)
Sizes and lengths: an item costs media_us + media_token_us x its tokens at the media stage and
encode_us + encode_token_us x its tokens at encode; a prompt costs prefill_us +
prefill_token_us x (its text tokens + its items' vision tokens). Without the per-token times
(the load monitor measures per item and per prompt, on the workload it served) the sizes change
nothing. With "rate" (or --rate) the splits are ranked by their goodput at that rate (rate x the
share within both targets; their capacity breaks ties); without, by their capacity: the largest
rate at which --attain of the requests meet both targets.
--stats FILE takes the service times from a running router's `vidi stats` output instead
(stage_<role>.service_us; decode's time per token is used for the step, per sequence 0). Where
the output has encode's and prefill's time per token (stage_<role>.token_us) and every request
kind gives its sizes (image_tokens, video_tokens, prompt_tokens), those two stages cost per
token (encode_us and prefill_us 0): the work follows the profile's sizes, not the sizes of the
workload the monitor saw.

PHASES: a profile whose "phases" list replaces "requests" and "rate": a workload that moves
between phases, [{"seconds": 20, "rate": 180, "requests": [...]}, ...]. Every split is simulated
in every phase at its rate (each phase alone, at steady state). A static split's attainment is
the phases' attainments weighted by their requests (seconds x rate); the best static split has
the highest. The switching bound takes each phase's best split instead (of equals, the one fewest
workers away from the best static split): what role switching could
reach were its switches free and instant (no drain, no backlog carried between phases). Their
ratio says how much switching can gain over the best static split for this workload at most.

The simulation (deterministic: a fixed seed; event-driven). Poisson arrivals, 1500 requests,
the request kinds drawn by weight. A request's media items go to the media workers, then to
the encode workers (each item one job, first come first served on a free worker of the
stage), then its prompt to a prefill worker; the prefill gives the first token (TTFT = its
end minus the arrival). Then the decode workers take the sequences in turn, and each steps
every sequence it holds together (max_batch at most; the others wait their turn in order): a
step lasts decode_step_us + decode_seq_us x sequences and gives each sequence one token, so
TPOT is the mean time between its tokens after the first, waits included.
What it leaves out: batching inside encode and prefill, KV transfer time, the router's own time.

GPUs shared by workers ("gpus": G > 0, or --gpus G): the workers are placed on the G GPUs in
turn, in the split's order (media workers first, then encode, prefill, decode: worker i on GPU
i mod G, as `vidi up` places `--workers ...@0,...@1` in bench/roles), and a GPU runs one job at
a time, first come first served among the encode items, prompts and decode steps of its
workers: kernels of different processes do not overlap on a GPU (time slicing, no MPS). Media
runs on the CPU and takes no GPU. Without "gpus" every worker has a GPU to itself. Service times
measured with each stage alone on its GPU are what it takes (bench/roles/plan_check.sh: under
about half the expected load, so that encode batches as it will).
"""

import argparse
import heapq
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
    out = {"media_us": s["media"], "encode_us": s["encode"], "prefill_us": s["prefill"],
           "decode_step_us": s["decode"], "decode_seq_us": 0}
    for st in ("encode", "prefill"):  # time per token (protocol 1.5), where the monitor has it
        if vals.get(f"stage_{st}.token_us"):
            out[f"{st}_token_us"] = vals[f"stage_{st}.token_us"]
    return out


def sizes_given(p):
    """Whether every request kind gives the size of each of its items and its prompt's length."""
    return all((not k.get("images") or k.get("image_tokens", 0) > 0) and
               (not k.get("videos") or k.get("video_tokens", 0) > 0) and k.get("prompt_tokens", 0) > 0
               for k in p["requests"])


def per_token(p):
    """Service times from the monitor: per token for encode and prefill when the monitor has their
    time per token and the profile gives every size (the work then follows the sizes), else per
    item and per prompt as measured (the sizes of the workload it served)."""
    sv = p["service"]
    if sizes_given(p) and sv.get("encode_token_us") and sv.get("prefill_token_us"):
        sv["encode_us"] = sv["prefill_us"] = 0
        return True
    sv.pop("encode_token_us", None)
    sv.pop("prefill_token_us", None)
    return False


def check_profile(p):
    for k in ("targets", "requests", "service"):
        if k not in p:
            sys.exit(f"plan: the profile has no '{k}'")
    if not p["requests"] or any(r.get("weight", 1) <= 0 or r.get("output_tokens", 1) < 1 for r in p["requests"]):
        sys.exit("plan: every request kind needs a positive weight and output_tokens >= 1")
    sv = p["service"]
    for k in ("media_us", "encode_us", "prefill_us", "decode_step_us"):
        if not (sv.get(k, 0) > 0 or (k in ("encode_us", "prefill_us") and sv.get(k, 0) == 0 and
                                     sv.get(k.replace("_us", "_token_us"), 0) > 0)):
            sys.exit(f"plan: service.{k} must be positive (or 0 with a positive {k.replace('_us', '_token_us')})")
    g = p.get("gpus", 0)
    if not isinstance(g, int) or not 0 <= g <= 64:
        sys.exit("plan: gpus must be a whole number from 0 (a GPU per worker) to 64")
    b = p.get("max_batch", 0)
    if not isinstance(b, int) or not 0 <= b <= 4096:
        sys.exit("plan: max_batch must be a whole number from 0 (no limit) to 4096")
    r = p.get("rate", 0)
    if not isinstance(r, (int, float)) or not 0 <= r <= 1e5:
        sys.exit("plan: rate must be a number of requests a second from 0 (none) to 100000")
    for k in p["requests"]:
        for f in ("images", "videos", "image_tokens", "video_tokens", "prompt_tokens"):
            if not isinstance(k.get(f, 0), int) or not 0 <= k.get(f, 0) <= 1 << 20:
                sys.exit(f"plan: a request kind's {f} must be a whole number from 0 to {1 << 20}")
    for f in ("media_token_us", "encode_token_us", "prefill_token_us", "decode_seq_us"):
        if not isinstance(sv.get(f, 0), (int, float)) or sv.get(f, 0) < 0:
            sys.exit(f"plan: service.{f} must be a number >= 0")


def costs(p):
    """Each request kind's work (seconds): its items' media and encode times and its prompt's
    prefill time, from the service times and the kind's sizes."""
    sv = p["service"]
    out = []
    for k in p["requests"]:
        toks = [k.get("image_tokens", 0)] * k.get("images", 0) + [k.get("video_tokens", 0)] * k.get("videos", 0)
        media = [(sv["media_us"] + sv.get("media_token_us", 0) * t) / 1e6 for t in toks]
        enc = [(sv["encode_us"] + sv.get("encode_token_us", 0) * t) / 1e6 for t in toks]
        pre = (sv["prefill_us"] + sv.get("prefill_token_us", 0) * (k.get("prompt_tokens", 0) + sum(toks))) / 1e6
        out.append((media, enc, pre))
    return out


def setup(p, seed):
    """What the simulation starts from: its random numbers, the request kinds and their
    weights and work (costs), the targets in seconds."""
    kinds = p["requests"]
    return (random.Random(seed), kinds, [k.get("weight", 1) for k in kinds], costs(p),
            p["targets"]["ttft_ms"] / 1e3, p["targets"]["tpot_ms"] / 1e3)


def simulate(p, split, rate, gpus=0, n=1500, seed=1):
    """Share of the requests within both targets at `rate` requests/s with `split` (workers per
    stage, STAGES order), the workers sharing `gpus` GPUs (0: a GPU each), each GPU running one
    job at a time (the module's docstring)."""
    rng, kinds, weights, cost, tt, tp = setup(p, seed)
    sv = p["service"]
    step, per_seq = sv["decode_step_us"] / 1e6, sv.get("decode_seq_us", 0) / 1e6
    cap = p.get("max_batch", 0)  # sequences a decode step takes at most (0: all it holds)
    stage = [st for st in range(4) for _ in range(split[st])]  # worker -> stage
    if gpus <= 0:
        gpus = len(stage)  # worker w alone on GPU w
    gpu = [None if stage[w] == 0 else w % gpus for w in range(len(stage))]
    gpu_busy = [False] * gpus
    gpu_wait = [[] for _ in range(gpus)]  # FCFS: (worker, duration)
    queue = ([], [], [])  # (request, item, seconds): media and encode an item each, prefill a prompt
    qhead = [0, 0, 0]
    busy = [False] * len(stage)
    job, item = [None] * len(stage), [0] * len(stage)  # each worker's request and item
    dec_workers = [w for w in range(len(stage)) if stage[w] == 3]
    pending = {w: [] for w in dec_workers}  # sequences given a first token, not yet stepping
    active = {w: [] for w in dec_workers}
    arrival, left_items, tokens, first, kind_of = [0.0] * n, [0] * n, [0] * n, [0.0] * n, [0] * n
    ttft, tpot = {}, {}
    events, seq = [], itertools.count()
    t = 0.0
    for i in range(n):
        t += rng.expovariate(rate)
        ki = rng.choices(range(len(kinds)), weights)[0]
        kind_of[i], arrival[i], left_items[i] = ki, t, len(cost[ki][0])
        tokens[i] = kinds[ki].get("output_tokens", 1)
        heapq.heappush(events, (t, next(seq), "arrive", i))
    rr = itertools.count()

    def run(w, dur, now):
        """worker w's job of `dur` seconds: on its GPU when that is free (else it waits its turn)"""
        busy[w] = True
        g = gpu[w]
        if g is None:
            heapq.heappush(events, (now + dur, next(seq), "done", w))
        elif not gpu_busy[g]:
            gpu_busy[g] = True
            heapq.heappush(events, (now + dur, next(seq), "done", w))
        else:
            gpu_wait[g].append((w, dur))

    def dispatch(now):
        for w in range(len(stage)):
            if busy[w]:
                continue
            st = stage[w]
            if st < 3:
                if qhead[st] < len(queue[st]):
                    job[w], item[w], dur = queue[st][qhead[st]]
                    qhead[st] += 1
                    run(w, dur, now)
            else:
                room = len(pending[w]) if cap <= 0 else max(0, cap - len(active[w]))
                active[w].extend(pending[w][:room])  # the rest wait for a place in the batch
                del pending[w][:room]
                if active[w]:
                    run(w, step + per_seq * len(active[w]), now)

    while events:
        now, _, kind, x = heapq.heappop(events)
        if kind == "arrive":
            if left_items[x]:
                queue[0].extend((x, j, d) for j, d in enumerate(cost[kind_of[x]][0]))
            else:
                queue[2].append((x, -1, cost[kind_of[x]][2]))
        else:
            w = x
            busy[w] = False
            g = gpu[w]
            if g is not None:
                if gpu_wait[g]:
                    w2, dur = gpu_wait[g].pop(0)
                    heapq.heappush(events, (now + dur, next(seq), "done", w2))
                else:
                    gpu_busy[g] = False
            st, i = stage[w], job[w]
            if st == 0:
                queue[1].append((i, item[w], cost[kind_of[i]][1][item[w]]))
            elif st == 1:
                left_items[i] -= 1
                if left_items[i] == 0:
                    queue[2].append((i, -1, cost[kind_of[i]][2]))
            elif st == 2:
                ttft[i], first[i] = now - arrival[i], now
                if tokens[i] <= 1:
                    tpot[i] = 0.0
                else:
                    d = dec_workers[next(rr) % len(dec_workers)]
                    pending[d].append([i, tokens[i] - 1])
            else:
                still = []
                for e in active[w]:
                    e[1] -= 1
                    if e[1] == 0:
                        tpot[e[0]] = (now - first[e[0]]) / (tokens[e[0]] - 1)
                    else:
                        still.append(e)
                active[w] = still
        dispatch(now)
    ok = sum(1 for i in ttft if ttft[i] <= tt and tpot.get(i, 0.0) <= tp)
    return ok / n


def attained(p, split, rate, n=1500):
    """simulate() on the profile's "gpus" (0 or absent: a GPU each), n requests"""
    return simulate(p, split, rate, p.get("gpus", 0), n)


def goodput(p, split, attain):
    """The largest rate (requests/s) at which `attain` of the requests meet both targets."""
    lo, hi = 0.0, 1.0
    while attained(p, split, hi) >= attain and hi < 1e5:
        lo, hi = hi, hi * 2
    if lo == 0.0:
        hi_ok = False
        r = hi
        for _ in range(20):
            r /= 2
            if attained(p, split, r) >= attain:
                lo, hi_ok = r, True
                break
        if not hi_ok:
            return 0.0
        hi = r * 2
    while hi - lo > 0.02 * hi:
        mid = (lo + hi) / 2
        if attained(p, split, mid) >= attain:
            lo = mid
        else:
            hi = mid
    return lo


def splits(n):
    """Every (media, encode, prefill, decode) with each >= 1 summing to n."""
    for a, b, c in itertools.combinations(range(1, n), 3):
        yield (a, b - a, c - b, n - c)


def plan(p, n, attain=0.9, rate=0.0):
    """Every split of n workers as (its goodput at `rate`, its capacity, the split), the best
    first: by the goodput at the rate (rate x the share within both targets) when a rate is
    given, then by capacity (the largest rate with `attain` of the requests within both)."""
    rows = []
    for s in splits(n):
        cap = goodput(p, s, attain)
        rows.append((rate * attained(p, s, rate) if rate > 0 else cap, cap, s))
    rows.sort(key=lambda x: (-x[0], -x[1], x[2]))
    return rows


def check_phases(p):
    """The profile of each phase (the profile with the phase's requests and rate), checked."""
    ph = p.get("phases")
    if not isinstance(ph, list) or not 1 <= len(ph) <= 16:
        sys.exit("plan: phases must be a list of 1 to 16 phases")
    out = []
    for i, f in enumerate(ph):
        if not isinstance(f, dict) or not isinstance(f.get("seconds"), (int, float)) or not 0 < f["seconds"] <= 1e6:
            sys.exit(f"plan: phase {i}: seconds must be a number above 0")
        if not isinstance(f.get("rate"), (int, float)) or not 0 < f["rate"] <= 1e5:
            sys.exit(f"plan: phase {i}: rate must be a number of requests a second above 0")
        q = dict(p, requests=f.get("requests"), rate=f["rate"])
        q.pop("phases")
        if not q["requests"]:
            sys.exit(f"plan: phase {i} has no requests")
        check_profile(q)
        out.append((f["seconds"], q))
    return out


def plan_phases(phases, n):
    """Every split of n workers with its attainment in each phase and over all of them (weighted by
    the phases' requests), the best static split first; and the switching bound: each phase's best
    split and the attainment they reach together."""
    weight = [sec * q["rate"] for sec, q in phases]
    total = sum(weight)
    rows = []
    for s in splits(n):
        att = [attained(q, s, q["rate"], max(200, int(sec * q["rate"]))) for sec, q in phases]  # each phase's requests
        rows.append((sum(w * a for w, a in zip(weight, att)) / total, att, s))
    rows.sort(key=lambda x: (-x[0], x[2]))
    # each phase's best split; of equals, the one fewest workers away from the best static split
    moves = lambda s: sum(abs(a - b) for a, b in zip(s, rows[0][2])) // 2
    picks = [min(rows, key=lambda r: (-r[1][i], moves(r[2]), r[2])) for i in range(len(phases))]
    best, best_att = [r[2] for r in picks], [r[1][i] for i, r in enumerate(picks)]
    bound = sum(w * a for w, a in zip(weight, best_att)) / total
    return rows, best, best_att, bound


def main_phases(p, n, as_json):
    phases = check_phases(p)
    rows, best, best_att, bound = plan_phases(phases, n)
    # goodput: the attainment over all phases times the requests a second they bring on average
    rps = sum(sec * q["rate"] for sec, q in phases) / sum(sec for sec, _ in phases)
    static = rows[0]
    ratio = bound / static[0] if static[0] > 0 else float("inf")
    if as_json:
        print(json.dumps({
            "best_static": {"split": dict(zip(STAGES, static[2])), "attained": round(static[0], 4),
                            "phases_attained": [round(a, 4) for a in static[1]], "goodput_rps": round(static[0] * rps, 4)},
            "switching_bound": {"splits": [dict(zip(STAGES, s)) for s in best], "attained": round(bound, 4),
                                "phases_attained": [round(a, 4) for a in best_att], "goodput_rps": round(bound * rps, 4)},
            "ratio": round(ratio, 4) if static[0] > 0 else None,
            "splits": [{"split": dict(zip(STAGES, s)), "attained": round(a, 4), "phases_attained": [round(x, 4) for x in att]}
                       for a, att, s in rows]}))
        return
    print(f"{'media':>5} {'encode':>6} {'prefill':>7} {'decode':>6}  attained  (by phase)")
    for a, att, s in rows[:10]:
        print(f"{s[0]:5d} {s[1]:6d} {s[2]:7d} {s[3]:6d}  {a:.3f}     ({' '.join(f'{x:.3f}' for x in att)})")
    print("switching bound (each phase's best split: " + ", ".join("/".join(map(str, s)) for s in best) +
          f"): attained {bound:.3f}, {ratio:.2f}x the best static split {'/'.join(map(str, static[2]))}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--workers", type=int, default=0, help="default: the profile's")
    ap.add_argument("--gpus", type=int, default=-1, help="the workers share this many GPUs (default: the profile's "
                    "\"gpus\"; 0: a GPU each)")
    ap.add_argument("--stats", default=None, help="`vidi stats` output: the service times from it")
    ap.add_argument("--attain", type=float, default=0.9)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--split", default=None, help="M,E,P,D: only this split's goodput (and attainment at --rate)")
    ap.add_argument("--rate", type=float, default=-1.0, help="the arrival rate (requests/s; default: the profile's "
                    "\"rate\", else none): splits ranked by their goodput at it; with --split its attainment there")
    a = ap.parse_args(argv)
    with open(a.profile, encoding="utf-8") as f:
        p = json.load(f)
    if a.stats:
        p["service"] = load_stats(a.stats)
        print("plan: service times from " + a.stats + (": encode and prefill per token (the profile's sizes)"
              if per_token(p) else ": per item and per prompt"), file=sys.stderr)
    if a.gpus >= 0:
        p["gpus"] = a.gpus
    if a.rate >= 0:
        p["rate"] = a.rate
    n = a.workers or p.get("workers", 0)
    if "phases" in p:
        if a.split or a.stats or a.rate >= 0:
            sys.exit("plan: a profile with phases takes no --split, --stats or --rate (each phase has its rate)")
        if not 4 <= n <= 16:
            sys.exit("plan: 4 to 16 workers (one per stage at least)")
        main_phases(p, n, a.json)
        return
    check_profile(p)
    rate = p.get("rate", 0)
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
        if rate > 0:
            out["rate"] = rate
            out["attained"] = round(attained(p, sp, rate), 4)
        print(json.dumps(out))
        return
    rows = plan(p, n, a.attain, rate)
    if a.json:
        out = {"best": dict(zip(STAGES, rows[0][2])), "goodput_rps": round(rows[0][1], 4)}
        if rate > 0:
            out.update(rate=rate, goodput_at_rate_rps=round(rows[0][0], 4))
        out["splits"] = [dict({"split": dict(zip(STAGES, s)), "goodput_rps": round(c, 4)},
                              **({"goodput_at_rate_rps": round(g, 4)} if rate > 0 else {})) for g, c, s in rows]
        print(json.dumps(out))
        return
    at = f"  goodput at {rate:g} req/s" if rate > 0 else ""
    print(f"{'media':>5} {'encode':>6} {'prefill':>7} {'decode':>6}  capacity (req/s with {a.attain:.0%} within targets){at}")
    for g, c, s in rows[:10]:
        print(f"{s[0]:5d} {s[1]:6d} {s[2]:7d} {s[3]:6d}  {c:.3f}" + (f"  {g:.3f}" if rate > 0 else ""))


if __name__ == "__main__":
    main()

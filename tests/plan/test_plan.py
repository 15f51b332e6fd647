#!/usr/bin/env python3
"""tests/plan/test_plan.py PLAN_PY — tools/plan/plan.py (ctest label roles): the split it picks
follows the workload (image-heavy traffic gets encoders, long answers get decoders), more
workers never plan less goodput, workers sharing GPUs plan what the GPUs can carry, bigger
media plan more encoders and longer prompts more prefill workers, a given arrival rate ranks
the splits by their goodput at it, `vidi stats` output gives the service times, a decode batch
limit makes sequences wait, a workload of phases gets each phase's best split and the bound of
switching against the best static split, and a bad profile is refused with a message."""
import json
import os
import subprocess
import sys
import tempfile

PLAN = sys.argv[1]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def run(profile, *args):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(profile, f)
    try:
        return subprocess.run([sys.executable, PLAN, f.name, "--json", *args], capture_output=True, text=True,
                              timeout=300)
    finally:
        os.unlink(f.name)


SERVICE = {"media_us": 60000, "encode_us": 80000, "prefill_us": 50000, "decode_step_us": 5000, "decode_seq_us": 200}
TARGETS = {"ttft_ms": 2000, "tpot_ms": 100}
images = {"workers": 6, "targets": TARGETS, "service": SERVICE,
          "requests": [{"weight": 1, "images": 4, "output_tokens": 4}]}
text = {"workers": 6, "targets": TARGETS,
        "service": dict(SERVICE, prefill_us=20000, decode_step_us=20000, decode_seq_us=2000),
        "requests": [{"weight": 1, "images": 0, "output_tokens": 200}]}

r = run(images)
check(r.returncode == 0, f"image-heavy profile planned ({r.stderr.strip()})")
a = json.loads(r.stdout) if r.returncode == 0 else {"best": {}, "goodput_rps": 0, "splits": []}
best = a["best"]
print("     image-heavy:", best, a["goodput_rps"], "req/s")
check(best.get("encode", 0) >= 2 and best.get("decode", 9) == 1, "image-heavy traffic: encoders, one decoder")
check(len(a["splits"]) == 10 and a["goodput_rps"] == max(s["goodput_rps"] for s in a["splits"]),
      "every split of 6 workers (10) considered, the best first")

r = run(text)
b = json.loads(r.stdout) if r.returncode == 0 else {"best": {}, "goodput_rps": 0}
print("     text-heavy: ", b["best"], b["goodput_rps"], "req/s")
check(b["best"].get("decode", 0) >= 3 and b["best"].get("encode", 9) == 1, "long answers: decoders, one encoder")

r8 = run(images, "--workers", "8")
c = json.loads(r8.stdout) if r8.returncode == 0 else {"goodput_rps": 0}
check(c["goodput_rps"] >= a["goodput_rps"] > 0, f"8 workers plan at least 6's goodput ({c['goodput_rps']})")

# workers sharing GPUs (each GPU one job at a time): as many GPUs as workers or more is a GPU each
# (0); one GPU for all caps the goodput at its work per request; fewer GPUs never plan more
g = {}
for gpus in (0, 16, 2, 1):
    r = run(images, "--gpus", str(gpus))
    g[gpus] = json.loads(r.stdout)["goodput_rps"] if r.returncode == 0 else -1
print("     image-heavy goodput by GPUs shared (0: one each):", g)
check(g[16] == g[0], "16 GPUs for 6 workers plan what a GPU each does")
gpu_s = (4 * SERVICE["encode_us"] + SERVICE["prefill_us"]) / 1e6  # GPU seconds per request, decode aside
check(0 < g[1] < 1 / gpu_s and g[1] <= g[2] <= g[16], f"one GPU caps the goodput under {1 / gpu_s:.2f} req/s; more GPUs plan more")
r = run(dict(images, gpus=1), "--split", "1,2,1,2", "--rate", str(round(1.2 / gpu_s, 3)))
e = json.loads(r.stdout) if r.returncode == 0 else {}
check(e.get("attained", 1) < 0.5, f"one GPU over its capacity misses the targets ({e})")
r = run(dict(images, gpus=-1))
check(r.returncode != 0 and "gpus" in r.stderr, f"bad gpus refused ({r.stderr.strip()})")

# sizes and lengths: an item's vision tokens cost at encode (and prefill), a prompt's text tokens at
# prefill; bigger images plan more encoders, longer prompts more prefill workers
SIZED = {"media_us": 5000, "encode_us": 2000, "encode_token_us": 40, "prefill_us": 10000, "prefill_token_us": 20,
         "decode_step_us": 5000, "decode_seq_us": 200}


def sized(image_tokens, prompt_tokens):
    return {"workers": 7, "targets": TARGETS, "service": SIZED,
            "requests": [{"weight": 1, "images": 2, "image_tokens": image_tokens, "prompt_tokens": prompt_tokens,
                          "output_tokens": 4}]}


plans = {}
for name, prof in (("small images", sized(100, 50)), ("big images", sized(1500, 50)),
                   ("long prompts", sized(100, 3000))):
    r = run(prof)
    plans[name] = json.loads(r.stdout) if r.returncode == 0 else {"best": {}, "goodput_rps": 0}
    print(f"     {name}:", plans[name]["best"], plans[name]["goodput_rps"], "req/s")
check(plans["big images"]["best"].get("encode", 0) > plans["small images"]["best"].get("encode", 9),
      "bigger images (vision tokens x encode_token_us) plan more encoders")
check(plans["long prompts"]["best"].get("prefill", 0) > plans["small images"]["best"].get("prefill", 9),
      "longer prompts (prompt_tokens x prefill_token_us) plan more prefill workers")
check(plans["big images"]["goodput_rps"] < plans["small images"]["goodput_rps"], "bigger images plan less goodput")
# an arrival rate: the splits ranked by their goodput at it, which the rate bounds
cap = plans["small images"]["goodput_rps"]
r = run(dict(sized(100, 50), rate=round(cap * 0.8, 3)))
f = json.loads(r.stdout) if r.returncode == 0 else {}
g = [x.get("goodput_at_rate_rps", -1) for x in f.get("splits", [])]
check(r.returncode == 0 and g == sorted(g, reverse=True) and 0.85 * f["rate"] <= g[0] <= f["rate"],
      f"a profile's rate ranks the splits by their goodput at it ({g[:3]} at {f.get('rate')} req/s)")
for bad, want in ((dict(sized(100, 50), rate=-1), "rate"),
                  ({**sized(100, 50), "requests": [{"images": 1, "image_tokens": -5}]}, "image_tokens"),
                  ({**sized(100, 50), "service": dict(SIZED, encode_token_us="x")}, "encode_token_us")):
    r = run(bad)
    check(r.returncode != 0 and want in r.stderr, f"bad sizes refused ({r.stderr.strip()})")

# the service times from a running router's `vidi stats`
with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    f.write("requests 12\nstage_media.service_us 60000\nstage_encode.service_us 80000\n"
            "stage_prefill.service_us 50000\nstage_decode.service_us 5000\n")
r = run(dict(images, service={}), "--stats", f.name)
d = json.loads(r.stdout) if r.returncode == 0 else {"best": {}}
check(r.returncode == 0 and d["best"].get("encode", 0) >= 2, f"--stats: service times from vidi stats ({r.stderr.strip()})")
# with the monitor's time per token (protocol 1.5) and a profile that gives its sizes, encode and
# prefill cost per token: bigger images than the monitor saw plan more encoders
with open(f.name, "a") as g:
    g.write("stage_encode.token_us 300\nstage_prefill.token_us 10\n")
tok = {}
for it in (100, 2000):
    r = run(sized(it, 50), "--stats", f.name)
    tok[it] = json.loads(r.stdout)["best"] if r.returncode == 0 else {}
    check(r.returncode == 0 and "per token" in r.stderr, f"--stats per token with sizes ({r.stderr.strip()})")
print("     --stats per token, images of 100 / 2000 tokens:", tok[100], tok[2000])
check(tok[2000].get("encode", 0) > tok[100].get("encode", 9), "per token: bigger images plan more encoders")
r = run(dict(images, service={}), "--stats", f.name)
check(r.returncode == 0 and "per item" in r.stderr, f"--stats without sizes: per item ({r.stderr.strip()})")
with open(f.name, "w") as g:
    g.write("requests 0\n")
r = run(images, "--stats", f.name)
check(r.returncode != 0 and "service_us" in r.stderr, f"--stats without the monitor refused: {r.stderr.strip()}")
os.unlink(f.name)

# max_batch: a decoder steps at most that many sequences, the others wait (TPOT counts the wait)
lim = {}
for mb in (0, 2):
    r = run(dict(text, max_batch=mb), "--split", "1,1,1,1", "--rate", "2")
    lim[mb] = json.loads(r.stdout).get("attained", -1) if r.returncode == 0 else -1
check(0 <= lim[2] < lim[0], f"max_batch 2 meets fewer targets than no limit ({lim})")
r = run(dict(text, max_batch=-1))
check(r.returncode != 0 and "max_batch" in r.stderr, f"bad max_batch refused ({r.stderr.strip()})")

# phases: an image-heavy phase and a long-answer one. Each phase's best split differs (encoders,
# decoders), so the switching bound (each phase's best) beats the best static split; two equal
# phases leave switching nothing to gain
img_phase = {"seconds": 20, "rate": 5, "requests": images["requests"]}
txt_phase = {"seconds": 20, "rate": 1.5, "requests": [{"weight": 1, "output_tokens": 200}]}
both = dict(SERVICE, decode_step_us=20000, decode_seq_us=2000)
ph = {"workers": 6, "targets": TARGETS, "service": both, "max_batch": 4, "phases": [img_phase, txt_phase]}
r = run(ph)
check(r.returncode == 0, f"a profile with phases planned ({r.stderr.strip()})")
d = json.loads(r.stdout) if r.returncode == 0 else {}
sw, st = d.get("switching_bound", {}), d.get("best_static", {})
print("     phases: best static", st.get("split"), st.get("phases_attained"), "switching bound", sw.get("splits"),
      sw.get("phases_attained"), "ratio", d.get("ratio"))
sp = sw.get("splits", [{}, {}])
me = lambda x: x.get("media", 0) + x.get("encode", 0)
check(me(sp[0]) > me(sp[1]) and sp[1].get("decode", 0) > sp[0].get("decode", 0),
      "each phase's best split: more media and encode workers for images, more decoders for long answers")
check((d.get("ratio") or 0) > 1.0 and sw.get("attained", 0) >= st.get("attained", 1),
      f"the switching bound beats the best static split ({d.get('ratio')})")
check(len(d.get("splits", [])) == 10 and all(len(x["phases_attained"]) == 2 for x in d.get("splits", [])),
      "every split of 6 workers attained in both phases")
r = run(dict(ph, phases=[img_phase, dict(img_phase)]))
d = json.loads(r.stdout) if r.returncode == 0 else {}
check(d.get("ratio") == 1.0, f"two equal phases: switching gains nothing ({d.get('ratio')})")
for bad, want in ((dict(ph, phases=[]), "phases"), (dict(ph, phases=[dict(img_phase, seconds=0)]), "seconds"),
                  (dict(ph, phases=[dict(img_phase, rate="x")]), "rate"),
                  (dict(ph, phases=[dict(img_phase, requests=[])]), "no requests")):
    r = run(bad)
    check(r.returncode != 0 and want in r.stderr, f"bad phases refused ({r.stderr.strip()})")
r = run(ph, "--split", "1,1,1,3")
check(r.returncode != 0 and "phases" in r.stderr, f"--split with phases refused ({r.stderr.strip()})")

# bad profiles
for bad, want in ((dict(images, requests=[]), "weight"), (dict(images, service=dict(SERVICE, prefill_us=0)), "prefill_us"),
                  ({"requests": []}, "targets")):
    r = run(bad)
    check(r.returncode != 0 and want in r.stderr, f"bad profile refused ({r.stderr.strip()})")
r = run(images, "--workers", "3")
check(r.returncode != 0 and "4 to 16" in r.stderr, "fewer workers than stages refused")

print(f"plan: {len(failures)} failed" if failures else "plan: every check passed")
sys.exit(1 if failures else 0)

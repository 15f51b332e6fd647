#!/usr/bin/env python3
"""tools/train/train.py — train vidi-shapes and vidi-shapes-draft (issue 5).

GPU host (needs only torch, transformers, tokenizers, safetensors, numpy):

    python tools/train/train.py --out /tmp/shapes-run --minutes 18            # first run
    python tools/train/train.py --out /tmp/shapes-run --minutes 18 --resume   # each later run

  Every run stops itself before --minutes (wall clock, start-up included), leaving time to
  checkpoint, evaluate and export: /tmp/shapes-run/models/vidi-shapes and
  /tmp/shapes-run/models/vidi-shapes-draft are complete after every run (copy them to the
  repo's models/). --budget-minutes (default: --minutes) is the total training time planned
  over all runs: the cosine schedule's length is set from the measured speed so that it ends
  with the budget (or give --total-steps). --resume continues exactly: same batches, same
  optimizer and schedule state.

CPU smoke run (seconds):

    python tools/train/train.py --out /tmp/shapes-smoke --device cpu --steps 20 \\
        --batch-size 4 --workers 1 --eval-scenes 4 --eval-every 10 --total-steps 40

Export again from a checkpoint: tools/train/export.py. Real-file evaluation (CPU, with
qwen-vl-utils): tools/train/evaluate.py.

What one step does: a batch of B examples of one kind (examples.py: scenes rendered at
the sampled frames, codec-like augmentation, resized as vidi does) -> patches on the
device -> both models (same batch) forward with original-rule M-RoPE positions and a
padding mask -> loss on the answer tokens (mean per example, then over the batch) ->
AdamW. Output under --out: tokenizer.json, log.jsonl (step and evaluation records),
ckpt/last.pt (and ckpt/prev.pt), models/, heldout_*.json.
"""

import argparse
import json
import math
import os
import platform
import random
import sys
import time

START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import examples  # noqa: E402
import export  # noqa: E402
import fast_vision  # noqa: E402
import heldout  # noqa: E402
import media  # noqa: E402
import model_config  # noqa: E402
import vocab  # noqa: E402

NAMES = ["vidi-shapes", "vidi-shapes-draft"]
PREFETCH = 2          # batches prefetched per data-loader worker


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder (checkpoints, logs, exported models)")
    ap.add_argument("--ckpt-dir", default=None, help="default: OUT/ckpt")
    ap.add_argument("--export-dir", default=None,
                    help="where vidi-shapes/ and vidi-shapes-draft/ are written (default: OUT/models)")
    ap.add_argument("--resume", action="store_true", help="continue from CKPT_DIR/last.pt")
    ap.add_argument("--minutes", type=float, default=18.0, help="wall-clock limit of this run")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="training time planned over all runs (sets the schedule length; default --minutes)")
    ap.add_argument("--total-steps", type=int, default=0, help="schedule length (0: from speed and budget)")
    ap.add_argument("--steps", type=int, default=0, help="stop this run after so many steps (0: no limit)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3, help="peak lr of vidi-shapes")
    ap.add_argument("--lr-draft", type=float, default=2.5e-3, help="peak lr of the draft")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--p-video", type=float, default=0.7)
    ap.add_argument("--p-caption", type=float, default=0.15)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--seed", type=int, default=1234, help="weight initialisation seed")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(NAMES), help="which models to train")
    ap.add_argument("--workers", type=int, default=min(14, max(1, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--eval-scenes", type=int, default=160,
                    help="held-out scenes of the final evaluation (periodic ones use half)")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: by --eval-minutes)")
    ap.add_argument("--eval-minutes", type=float, default=4.0)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--hf-vision-attn", action="store_true",
                    help="keep transformers' per-chunk vision attention (default: fast_vision.py)")
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- setup

def lr_factor(step, warmup, total, min_ratio):
    if step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    p = min(1.0, (step - warmup) / (total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(model, lr, wd, device):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed_tokens" not in n else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, **kw)


def build_models(cfgs, names, seed, device, fast=True):
    models = {}
    for k, name in enumerate(names):
        torch.manual_seed(seed + k)
        m = model_config.make_model(cfgs[name])
        models[name] = (fast_vision.install(m) if fast else m).to(device).train()
    return models


def worker_init(_):
    torch.set_num_threads(1)


def loader_workers(args):
    """Workers x prefetched batches must fit in /dev/shm (batches come back through shared
    memory: about 1.5 MB of raw frames per video example); use fewer workers if it is small."""
    want = args.workers
    try:
        st = os.statvfs("/dev/shm")
        free = st.f_bavail * st.f_frsize
    except OSError:
        return want
    per_batch = args.batch_size * 1.5e6
    fit = int(free / (2 * per_batch * PREFETCH))
    if want > 0 and fit < want:
        print(f"[data] /dev/shm has {free / 1e9:.1f} GB free: {max(fit, 0)} workers instead of {want} "
              f"(mount a larger /dev/shm for more)", flush=True)
        return max(fit, 0)
    return want


def rng_state():
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s):
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(path, state):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    if os.path.exists(path):
        os.replace(path, os.path.join(os.path.dirname(path), "prev.pt"))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- a step

def vision_inputs(batch, device):
    flat = batch["frames"].to(device, non_blocking=True)
    pvs, grids = [], []
    o = 0
    for shp, size, aug in zip(batch["shapes"], batch["sizes"], batch["augs"]):
        n = int(np.prod(shp))
        pv, grid = media.patchify(media.model_frames(flat[o:o + n].view(shp), size, aug))
        o += n
        pvs.append(pv)
        grids.append(grid)
    pv = torch.cat(pvs)
    g = torch.tensor(grids, device=device)
    if batch["kind"] == "image":
        return {"pixel_values": pv, "image_grid_thw": g}
    return {"pixel_values_videos": pv, "video_grid_thw": g}


def compute_loss(model, b, vis):
    """Mean over examples of the mean cross-entropy over each example's answer tokens;
    also the fraction of examples whose answer tokens are all argmax (teacher forced)."""
    out = model.model(input_ids=b["ids"], attention_mask=b["attn"], position_ids=b["pos"], use_cache=False, **vis)
    h = out.last_hidden_state[:, :-1]
    tgt = b["labels"][:, 1:]
    m = tgt != -100
    logits = model.lm_head(h[m]).float()
    ce = F.cross_entropy(logits, tgt[m], reduction="none")
    rows = m.nonzero()[:, 0]
    n = tgt.shape[0]
    s = torch.zeros(n, device=ce.device).index_add_(0, rows, ce)
    c = torch.zeros(n, device=ce.device).index_add_(0, rows, torch.ones_like(ce))
    wrong = torch.zeros(n, device=ce.device).index_add_(0, rows, (logits.argmax(-1) != tgt[m]).float())
    return (s / c.clamp(min=1)).mean(), (wrong == 0).float().mean()


# ----------------------------------------------------------------------------- evaluation, export

def run_info(args, state, device):
    return {
        "args": vars(args), "step": state["step"], "total_steps": state["total_steps"],
        "train_seconds": state["train_seconds"], "runs": state["runs"],
        "lr": {NAMES[0]: args.lr, NAMES[1]: args.lr_draft},
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "transformers": __import__("transformers").__version__, "torch": torch.__version__,
        "train_seed_base": examples.TRAIN_SEED_BASE, "heldout_seed_limit": examples.HELDOUT_SEED_LIMIT,
        "eval_seed_base": examples.EVAL_SEED_BASE, "eval_scenes": args.eval_scenes,
    }


def final_eval_and_export(models, cfgs, tok_json, text, items, out_root, info, device):
    """Held-out accuracy of the bf16-rounded weights in float32 (TF32 off), then export."""
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    results = {}
    try:
        for name, m in models.items():
            mb = heldout.bf16_copy(m)
            results[name] = heldout.evaluate(mb, items, text, device)
            print(f"[final] {name}: {heldout.summary(results[name])}", flush=True)
            del mb
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    sizes = export.export_all({n: m for n, m in models.items()}, cfgs, tok_json, text.ids, out_root, info, results)
    for n, s in sizes.items():
        print(f"[export] {out_root}/{n}: model.safetensors {s / 1e6:.2f} MB", flush=True)
    print(f"[export] together {sum(sizes.values()) / 1e6:.2f} MB", flush=True)
    return results


def export_from_checkpoint(ckpt_path, out_root, device_name, eval_scenes=None):
    device = torch.device(device_name)
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    args = argparse.Namespace(**ck["args"])
    if eval_scenes:
        args.eval_scenes = eval_scenes
    from tokenizers import Tokenizer

    text = examples.Text(Tokenizer.from_str(ck["tok_json"]))
    models = build_models(ck["cfgs"], list(ck["models"]), args.seed, device)
    for n, m in models.items():
        m.load_state_dict(ck["models"][n])
    items = examples.heldout_items(args.eval_scenes)
    # periodic evaluations use the first half of the held-out scenes, the final one all
    half = examples.EVAL_SEED_BASE + max(1, args.eval_scenes // 2)
    items_periodic = [it for it in items if it["scene"]["seed"] < half]
    info = run_info(args, ck, device)
    final_eval_and_export(models, ck["cfgs"], ck["tok_json"], text, items, out_root, info, device)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    deadline = START + args.minutes * 60
    budget = (args.budget_minutes or args.minutes) * 60
    ckpt_dir = args.ckpt_dir or os.path.join(args.out, "ckpt")
    ckpt_path = os.path.join(ckpt_dir, "last.pt")
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "log.jsonl"), "a", encoding="utf-8")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(max(1, os.cpu_count() or 1))

    names = [n for n in args.models.split(",") if n]
    ck = None
    if args.resume:
        if not os.path.exists(ckpt_path):
            sys.exit(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        for k in ("batch_size", "data_seed", "p_video", "p_caption", "no_augment", "models", "seed"):
            if getattr(args, k) != ck["args"][k]:
                print(f"[resume] note: --{k.replace('_', '-')} {getattr(args, k)} differs from the "
                      f"checkpoint's {ck['args'][k]}; using the checkpoint's", flush=True)
                setattr(args, k, ck["args"][k])
        names = [n for n in args.models.split(",") if n]
        tok_json, cfgs = ck["tok_json"], ck["cfgs"]
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tok_json)
    else:
        tok = vocab.build_tokenizer()
        tok_json = vocab.tokenizer_json(tok)
        ids = vocab.special_ids(tok)
        vsize = model_config.padded_vocab(tok.get_vocab_size())
        cfgs = {n: model_config.flat_config(n, ids, vsize) for n in NAMES}
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok_json)
    text = examples.Text(tok)

    models = build_models(cfgs, names, args.seed, device, fast=not args.hf_vision_attn)
    lrs = {NAMES[0]: args.lr, NAMES[1]: args.lr_draft}
    opts = {n: make_optimizer(m, lrs[n], args.weight_decay, device) for n, m in models.items()}
    state = {"step": 0, "next_batch": 0, "total_steps": args.total_steps or None, "train_seconds": 0.0,
             "runs": 0, "evals": []}
    if ck is not None:
        for n in names:
            models[n].load_state_dict(ck["models"][n])
            opts[n].load_state_dict(ck["opts"][n])
        state.update({k: ck[k] for k in ("step", "next_batch", "total_steps", "train_seconds", "runs", "evals")})
        if args.total_steps:
            state["total_steps"] = args.total_steps
        set_rng_state(ck["rng"])
        print(f"[resume] step {state['step']}, batch {state['next_batch']}, schedule {state['total_steps']}, "
              f"{state['train_seconds'] / 60:.1f} min trained in {state['runs']} run(s)", flush=True)
    state["runs"] += 1
    for n, m in models.items():
        c = model_config.param_counts(m)
        print(f"[model] {n}: {c['total']:,} parameters (vision {c['vision']:,}, text {c['text']:,}), "
              f"{c['total'] * 2 / 1e6:.2f} MB bf16", flush=True)

    items = examples.heldout_items(args.eval_scenes)
    # periodic evaluations use the first half of the held-out scenes, the final one all
    half = examples.EVAL_SEED_BASE + max(1, args.eval_scenes // 2)
    items_periodic = [it for it in items if it["scene"]["seed"] < half]
    ds = examples.TrainBatches(tok_json, args.batch_size, args.data_seed, args.p_video, args.p_caption,
                               augment=not args.no_augment)
    workers = loader_workers(args)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, sampler=range(state["next_batch"], len(ds)), num_workers=workers,
        pin_memory=device.type == "cuda", worker_init_fn=worker_init,
        prefetch_factor=PREFETCH if workers > 0 else None, persistent_workers=False)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None)

    def checkpoint():
        save_checkpoint(ckpt_path, {
            "models": {n: m.state_dict() for n, m in models.items()},
            "opts": {n: o.state_dict() for n, o in opts.items()},
            "cfgs": cfgs, "tok_json": tok_json, "args": vars(args), "rng": rng_state(),
            **{k: state[k] for k in ("step", "next_batch", "total_steps", "train_seconds", "runs", "evals")},
        })
        print(f"[ckpt] step {state['step']} -> {ckpt_path}", flush=True)

    def evaluate(tag):
        rec = {"event": "eval", "step": state["step"], "tag": tag}
        for n, m in models.items():
            r = heldout.evaluate(m, items_periodic, text, device, torch.bfloat16 if device.type == "cuda" else None)
            print(f"[eval] step {state['step']} {n}: {heldout.summary(r)}", flush=True)
            rec[n] = r
        state["evals"].append({k: v for k, v in rec.items()})
        log.write(json.dumps(rec) + "\n")
        log.flush()
        return rec

    reserve = 30.0 + (20.0 if args.eval_scenes else 0.0)     # final checkpoint + eval + export
    last_ckpt = last_eval = time.time()
    t_log, ex_log, wait_log, steps_log = time.time(), 0, 0.0, 0
    rate_t0 = rate_s0 = None
    run_steps = 0
    print(f"[run] start-up {time.time() - START:.1f}s; batch {args.batch_size}, workers {workers}, "
          f"device {device}", flush=True)
    it = iter(loader)
    run_t0 = time.time()
    while True:
        now = time.time()
        if args.steps and run_steps >= args.steps:
            break
        if now + reserve >= deadline:
            print(f"[run] stopping for the deadline ({args.minutes} min)", flush=True)
            break
        tw = time.time()
        batch = next(it)
        wait_log += time.time() - tw
        b = {k: batch[k].to(device, non_blocking=True) for k in ("ids", "attn", "labels", "pos")}
        vis = vision_inputs(batch, device)
        total = state["total_steps"] or 0
        losses = {}
        for n, m in models.items():
            f = lr_factor(state["step"], args.warmup, total, args.min_lr_ratio)
            for g in opts[n].param_groups:
                g["lr"] = lrs[n] * f
            if amp is not None:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss, tf = compute_loss(m, b, vis)
            else:
                loss, tf = compute_loss(m, b, vis)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), args.clip)
            opts[n].step()
            opts[n].zero_grad(set_to_none=True)
            losses[n] = (loss.detach(), tf.detach())
        state["step"] += 1
        state["next_batch"] += 1
        run_steps += 1
        ex_log += args.batch_size
        steps_log += 1

        # schedule length from the measured speed (once, early in the first run)
        if state["total_steps"] is None:
            if run_steps == 20:
                rate_t0, rate_s0 = time.time(), state["step"]
            elif run_steps == 120 or (args.steps and run_steps == args.steps):
                if rate_t0 is not None and state["step"] > rate_s0:
                    rate = (state["step"] - rate_s0) / (time.time() - rate_t0)
                    left = budget - state["train_seconds"] - (time.time() - run_t0) - reserve - 45
                    state["total_steps"] = max(state["step"] + 1, int(state["step"] + 0.93 * rate * left))
                    print(f"[schedule] {rate:.2f} steps/s -> cosine over {state['total_steps']} steps "
                          f"(budget {budget / 60:.1f} min)", flush=True)

        if state["step"] % args.log_every == 0 or run_steps == 1:
            dt = time.time() - t_log
            short = {NAMES[0]: "T", NAMES[1]: "D"}
            parts = " ".join(f"{short[n]}:loss={lo.item():.4f},tf={a.item():.2f}" for n, (lo, a) in losses.items())
            rec = {"event": "step", "step": state["step"], "elapsed": round(time.time() - START, 1),
                   "steps_per_s": steps_log / dt, "examples_per_s": ex_log / dt,
                   "data_wait": wait_log / dt, "lr_factor": f, "kind": batch["kind"],
                   "len": int(b["ids"].shape[1]),
                   **{n: {"loss": l.item(), "tf_exact": a.item()} for n, (l, a) in losses.items()}}
            log.write(json.dumps(rec) + "\n")
            mem = f" mem {torch.cuda.max_memory_allocated(device) / 2**30:.1f}G" if device.type == "cuda" else ""
            print(f"step {state['step']:6d} {parts} lr*{f:.3f} {steps_log / dt:.2f} steps/s "
                  f"{ex_log / dt:.1f} ex/s wait {100 * wait_log / dt:.0f}% {batch['kind'][0]}L={b['ids'].shape[1]}"
                  f"{mem} t={time.time() - START:.0f}s", flush=True)
            t_log, ex_log, wait_log, steps_log = time.time(), 0, 0.0, 0

        now = time.time()
        due = (args.eval_every and state["step"] % args.eval_every == 0) or \
              (not args.eval_every and now - last_eval >= args.eval_minutes * 60)
        if due and args.eval_scenes:
            te = time.time()
            evaluate("periodic")
            # the final evaluation runs twice the scenes in float32: about 4x a periodic one
            reserve = max(reserve, 30.0 + 4.5 * (time.time() - te))
            last_eval = time.time()
        if now - last_ckpt >= args.ckpt_minutes * 60:
            state["train_seconds"] += time.time() - run_t0
            run_t0 = time.time()
            checkpoint()
            last_ckpt = time.time()

    state["train_seconds"] += time.time() - run_t0
    del it, loader
    checkpoint()
    info = run_info(args, state, device)
    if args.eval_scenes:
        res = final_eval_and_export(models, cfgs, tok_json, text, items,
                                    args.export_dir or os.path.join(args.out, "models"), info, device)
        log.write(json.dumps({"event": "final", "step": state["step"], **res}) + "\n")
    log.close()
    print(f"[run] done: step {state['step']}, {time.time() - START:.0f}s wall", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""tools/train/distill.py — a draft model distilled from the target for speculative decoding.

A draft is useful in proportion to how often its greedy token is the target's greedy token
(each accepted token saves a target step) and to how little its own step costs. The drafts
of train.py are trained on the scenes' ground truth, so they disagree with the target
wherever the target is wrong. This trains a draft to match the target instead:

    student = --init's folder (vidi-shapes-draft) with its first --text-layers text layers
    per step: a train.py batch (same data stream, same buckets); the frozen teacher's
    next-token distributions at the answer positions (teacher forced on the ground truth);
    loss = --kl-weight * KL(teacher || student) + --ce-weight * cross-entropy with the truth,
    averaged over answer tokens; AdamW, warmup and cosine, bf16 autocast on CUDA.

Evaluation (before and after, on held-out scenes with captions): the teacher answers every
question greedily; the student, fed the prompt and the teacher's answer, predicts each
answer token. "agreement" is the fraction of those tokens it predicts (the per-token
acceptance of greedy speculative decoding, which conditions the draft on the target's
tokens); "tokens/step k=K" replays greedy verification with K drafts per step over the
teacher's answers (the accepted prefix plus the target's own token).

    python tools/train/distill.py --teacher models/vidi-shapes --init models/vidi-shapes-draft \\
        --text-layers 1 --name vidi-shapes-draft1 --out /tmp/distill1 --minutes 8
    # -> /tmp/distill1/vidi-shapes-draft1/ (a Hugging Face folder), /tmp/distill1/log.jsonl

    # CPU smoke (a minute)
    python tools/train/distill.py --teacher models/vidi-shapes --init models/vidi-shapes-draft \\
        --text-layers 1 --name smoke --out /tmp/distill-smoke --device cpu --steps 3 \\
        --batch-size 4 --workers 0 --eval-scenes 2
"""

import argparse
import contextlib
import copy
import json
import os
import sys
import time

START = time.time()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import examples  # noqa: E402
import fast_vision  # noqa: E402
import greedy  # noqa: E402
import heldout  # noqa: E402
import model_config  # noqa: E402
import train  # noqa: E402
import vocab  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="the target's folder (frozen)")
    ap.add_argument("--init", required=True, help="the folder the student starts from (same tokenizer)")
    ap.add_argument("--text-layers", type=int, default=0, help="keep the first N text layers (0: all)")
    ap.add_argument("--name", required=True, help="the exported folder's name under --out")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock limit, start-up and export included")
    ap.add_argument("--steps", type=int, default=0, help="stop after so many steps (0: by --minutes)")
    ap.add_argument("--total-steps", type=int, default=0, help="schedule length (0: from the measured speed)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--kl-weight", type=float, default=1.0)
    ap.add_argument("--ce-weight", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--eval-scenes", type=int, default=80)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--workers", type=int, default=min(6, max(0, (os.cpu_count() or 2) - 2)))
    # the data stream (train.dataset reads these)
    ap.add_argument("--batch-tokens", type=int, default=32768)
    ap.add_argument("--batch-size", type=int, default=0)
    ap.add_argument("--data-seed", type=int, default=11, help="another stream than the models were trained on")
    ap.add_argument("--first-batch", type=int, default=0)
    ap.add_argument("--p-video", type=float, default=0.6)
    ap.add_argument("--p-caption", type=float, default=0.3)
    ap.add_argument("--nframes-p", default=",".join(str(x) for x in examples.TRAIN_NFRAMES_P))
    ap.add_argument("--type-weights", default="")
    ap.add_argument("--questions-per-scene", type=int, default=2)
    ap.add_argument("--no-augment", action="store_true")
    return ap.parse_args(argv)


def student_from(init_dir, layers, device):
    """(config, tokenizer.json, float32 model): init_dir's model with its first `layers` text layers."""
    cfg, tok_json, m = model_config.load_folder(init_dir)
    n0 = cfg["num_hidden_layers"]
    if not layers or layers == n0:
        return cfg, tok_json, m
    if not 1 <= layers < n0:
        sys.exit(f"--text-layers {layers}: {init_dir} has {n0} text layers")
    cfg = copy.deepcopy(cfg)
    cfg["num_hidden_layers"] = cfg["max_window_layers"] = layers
    s = model_config.make_model(cfg)
    pre = "model.language_model.layers."
    sd = {k: v for k, v in m.state_dict().items()
          if not (k.startswith(pre) and int(k[len(pre):].split(".")[0]) >= layers)}
    missing, unexpected = s.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing[:3], unexpected[:3])
    return cfg, tok_json, s


def answer_logits(model, b):
    fast_vision.seed_plan(b["cu"], b["plan"])
    h, _ = train.forward_hidden(model, b)
    hs = h.reshape(-1, h.shape[-1]).index_select(0, b["tgt_idx"])
    return model.lm_head(hs).float()


@torch.no_grad()
def forced_argmax(model, prompt, tokens, dev):
    """The model's argmax at each answer position, fed the prompt and `tokens`."""
    L = len(prompt["ids"])
    ids = torch.tensor(prompt["ids"] + tokens, device=dev)[None]
    pp = torch.as_tensor(prompt["pos"])
    nxt = int(pp.max()) + 1
    tail = torch.arange(nxt, nxt + len(tokens)).view(1, -1).expand(3, -1)
    pos = torch.cat([pp, tail], 1)[:, None, :].to(dev)
    key = ("pixel_values", "image_grid_thw") if prompt["kind"] == "image" else ("pixel_values_videos",
                                                                               "video_grid_thw")
    kw = {key[0]: prompt["pixel_values"].to(dev), key[1]: torch.tensor([list(prompt["grid"])], device=dev)}
    out = model(input_ids=ids, position_ids=pos, use_cache=False, **kw)
    return out.logits[0, L - 1:].float().argmax(-1).tolist()


def replay(match, k):
    """Target steps for greedy verification with k drafts per step over one answer whose
    positions the draft gets right where match[i]."""
    i = steps = 0
    n = len(match)
    while i < n:
        a = 0
        while a < k and i + a < n and match[i + a]:
            a += 1
        i += a + 1
        steps += 1
    return steps


@torch.no_grad()
def agreement(student, teacher, items, text, device, amp):
    """Per-token agreement with the teacher's greedy answers, overall and for captions, and
    the replayed tokens per target step for k = 2..6."""
    was = student.training
    student.eval()
    t0 = time.time()
    res = {}
    teach_tok = {}
    with amp():
        for cap in (False, True):
            sel = [i for i, it in enumerate(items) if (it["type"] == "caption") == cap]
            for c in range(0, len(sel), 48):
                chunk = sel[c:c + 48]
                prompts = [heldout._prompt(items[i], text, device) for i in chunk]
                outs = greedy.greedy(teacher, prompts, text.eos_ids, text.pad_id, 96 if cap else 12)
                for i, o in zip(chunk, outs):
                    teach_tok[i] = o
        groups = {"qa": [], "caption": []}
        for i, it in enumerate(items):
            p = heldout._prompt(it, text, device)
            want = teach_tok[i] + [text.eos_ids[0]]
            got = forced_argmax(student, p, teach_tok[i], device)[:len(want)]
            groups["caption" if it["type"] == "caption" else "qa"].append([g == w for g, w in zip(got, want)])
    for g, rows in groups.items():
        n = sum(len(r) for r in rows)
        res[g] = {"answers": len(rows), "tokens": n,
                  "agreement": round(sum(sum(r) for r in rows) / max(1, n), 4),
                  "tokens_per_step": {f"k{k}": round(n / max(1, sum(replay(r, k) for r in rows)), 3)
                                      for k in range(2, 7)}}
    res["seconds"] = round(time.time() - t0, 1)
    if was:
        student.train()
    return res


def readme(name, cfg, args, steps, seconds, before, after, teacher_name, init_name):
    def line(tag, r):
        return (f"| {tag} | {r['caption']['agreement']:.3f} | {r['caption']['tokens_per_step']['k4']:.2f} | "
                f"{r['qa']['agreement']:.3f} |")
    return f"""# {name}

A draft for speculative decoding with {teacher_name}: a Qwen2-VL-architecture model of
{cfg['num_hidden_layers']} text layer(s) (hidden {cfg['hidden_size']}, {cfg['num_attention_heads']} heads,
{cfg['num_key_value_heads']} kv head, intermediate {cfg['intermediate_size']}) with {init_name}'s vision tower
(depth {cfg['vision_config']['depth']}) and tokenizer, distilled from {teacher_name}'s next-token distributions
so that its greedy token is the target's. It is not meant to answer on its own.

## Recipe

`python tools/train/distill.py --teacher models/{teacher_name} --init models/{init_name} --text-layers
{cfg['num_hidden_layers']} --name {name} --minutes {args.minutes}` (tools/train/distill.py): started from
{init_name}'s weights (its first {cfg['num_hidden_layers']} text layer(s)); loss {args.kl_weight} x KL(teacher ||
student) + {args.ce_weight} x cross-entropy with the truth on the answer tokens of train.py's batches (data seed
{args.data_seed}, captions {args.p_caption}, videos {args.p_video}); AdamW lr {args.lr}, warmup {args.warmup},
cosine to {args.min_lr_ratio} x; {steps} steps in {seconds / 60:.1f} min.

## Agreement with {teacher_name}

{args.eval_scenes} held-out scenes; the teacher answers greedily, the draft is fed the teacher's tokens;
agreement = the share of answer tokens the draft predicts; tokens/step = tokens per target step when
greedy verification with 4 drafts per step is replayed over the teacher's answers (PyTorch, bf16 autocast).

| model | caption agreement | caption tokens/step (k 4) | QA agreement |
|---|---|---|---|
{line('start (' + init_name + ', truncated)', before)}
{line(name, after)}
"""


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    deadline = START + args.minutes * 60
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "log.jsonl"), "a", encoding="utf-8")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
            torch.backends.cuda.enable_cudnn_sdp(False)
        amp = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        amp = contextlib.nullcontext

    _, tok_json, teacher = model_config.load_folder(args.teacher)
    torch.manual_seed(args.seed)
    cfg, tok_s, student = student_from(args.init, args.text_layers, device)
    if tok_s != tok_json:
        sys.exit(f"{args.init} has another tokenizer than {args.teacher}")
    teacher = fast_vision.install(teacher).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = fast_vision.install(student).to(device).train()
    from tokenizers import Tokenizer

    text = examples.Text(Tokenizer.from_str(tok_json))
    items = examples.heldout_items(args.eval_scenes)
    before = agreement(student, teacher, items, text, device, amp) if args.eval_scenes else None
    print(f"[eval] start: {json.dumps(before)}", flush=True)
    log.write(json.dumps({"event": "eval", "step": 0, **(before or {})}) + "\n")

    opt = train.make_optimizer(student, args.lr, args.weight_decay, device)
    params = list(student.parameters())
    ds = train.dataset(args, tok_json)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, sampler=range(args.first_batch, len(ds)), num_workers=args.workers,
        pin_memory=device.type == "cuda", worker_init_fn=train.worker_init,
        prefetch_factor=train.PREFETCH if args.workers > 0 else None)
    reserve = 60.0 + (before or {}).get("seconds", 0) * 1.2
    total = args.total_steps or None
    step, t_run, rate_t0 = 0, time.time(), None
    it = iter(loader)
    acc = {"loss": 0.0, "kl": 0.0, "agree": 0.0, "n": 0}
    while True:
        if args.steps and step >= args.steps:
            break
        if time.time() + reserve >= deadline:
            break
        b = train.to_device(next(it), device)
        f = train.lr_factor(step, args.warmup, total or 10 ** 9, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = args.lr * f
        with amp():
            with torch.no_grad():
                lt = answer_logits(teacher, b)
            ls = answer_logits(student, b)
        pt, ps = F.log_softmax(lt, -1), F.log_softmax(ls, -1)
        kl = (pt.exp() * (pt - ps)).sum(-1)
        ce = F.cross_entropy(ls, b["tgt"], reduction="none")
        loss = (args.kl_weight * kl + args.ce_weight * ce).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        acc["loss"] += loss.detach()
        acc["kl"] += kl.mean().detach()
        acc["agree"] += (ls.argmax(-1) == lt.argmax(-1)).float().mean().detach()
        acc["n"] += 1
        if total is None and step == 30:
            if device.type == "cuda":
                torch.cuda.synchronize()
            rate_t0 = time.time()
        elif total is None and rate_t0 is not None and (step == 130 or (args.steps and step == args.steps)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            rate = (step - 30) / (time.time() - rate_t0)
            total = int(step + 0.95 * rate * max(0.0, deadline - reserve - time.time()))
            print(f"[schedule] {rate:.2f} steps/s -> cosine over {total} steps", flush=True)
        if step % args.log_every == 0 or step == 1:
            n = acc["n"]
            rec = {"event": "step", "step": step, "loss": float(acc["loss"]) / n, "kl": float(acc["kl"]) / n,
                   "agree_tf": float(acc["agree"]) / n, "lr_factor": f, "t": round(time.time() - START, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(f"step {step:6d} loss {rec['loss']:.4f} kl {rec['kl']:.4f} agree {rec['agree_tf']:.3f} "
                  f"lr*{f:.3f} t={rec['t']:.0f}s", flush=True)
            acc = {"loss": 0.0, "kl": 0.0, "agree": 0.0, "n": 0}
    seconds = time.time() - t_run
    del it, loader
    student.eval()
    with torch.no_grad():                       # what the export holds: bf16 weights
        for p in student.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    after = agreement(student, teacher, items, text, device, amp) if args.eval_scenes else None
    print(f"[eval] step {step}: {json.dumps(after)}", flush=True)
    log.write(json.dumps({"event": "final", "step": step, **(after or {})}) + "\n")
    log.close()
    d = os.path.join(args.out, args.name)
    ids = vocab.special_ids(text.tok)
    rd = readme(args.name, cfg, args, step, seconds, before, after, os.path.basename(args.teacher.rstrip("/")),
                os.path.basename(args.init.rstrip("/"))) if before and after else None
    nb = model_config.export_folder(student.cpu(), cfg, tok_json, ids, d, rd)
    print(f"[export] {d}: {nb / 1e6:.2f} MB; {step} steps, {time.time() - START:.0f}s wall", flush=True)


if __name__ == "__main__":
    main()

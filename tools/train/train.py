#!/usr/bin/env python3
"""tools/train/train.py — train vidi-shapes and vidi-shapes-draft (issue 5).

GPU host (needs only torch, transformers, tokenizers, safetensors, numpy):

    python tools/train/train.py --out /tmp/shapes-run --minutes 18            # first run
    python tools/train/train.py --out /tmp/shapes-run --minutes 18 --resume   # a later run, same disk
    python tools/train/train.py --out /tmp/shapes-run2 --minutes 18 \\
        --init-from /tmp/prev/models.tgz                                      # a later run, new disk

  Every run stops itself before --minutes (wall clock, start-up included), leaving time to
  checkpoint, evaluate and export: OUT/models/vidi-shapes and OUT/models/vidi-shapes-draft
  are complete after every run (copy them to the repo's models/), and OUT/models.tgz holds
  that folder (also written at every checkpoint once there is an evaluation), so that it
  can be carried to another machine. --budget-minutes (default: --minutes) is the training
  time planned for the schedule: the cosine schedule's length is set from the measured
  speed so that it ends with the budget (or give --total-steps). --resume continues
  exactly from OUT/ckpt/last.pt: same batches, same optimizer and schedule state.
  --init-from DIR|TGZ starts from exported folders (bf16 weights, their tokenizer) with a
  fresh optimizer, a short warmup and a new schedule over --budget-minutes; the data stream
  continues where the exporting run stopped (models/train_state.json). --reinit NAME with
  it starts that model from fresh weights (tokenizer and data position kept).

CPU smoke run (seconds):

    python tools/train/train.py --out /tmp/shapes-smoke --device cpu --steps 20 \\
        --batch-size 4 --workers 1 --eval-scenes 4 --eval-every 10 --total-steps 40

Export again from a checkpoint: tools/train/export.py. Real-file evaluation (CPU, with
qwen-vl-utils): tools/train/evaluate.py.

What one step does: a batch of one bucket (examples.py: images, or videos of one sampled
frame count; about --batch-tokens tokens, or --batch-size examples; scenes rendered at the
sampled frames and degraded like a lossy codec in the data-loader workers) -> resize and
patches on the device -> both models (same batch): vision tower with precomputed rotary
positions, chunk boundaries and attention plan, vision embeddings put in place of the pad
tokens, text model with original-rule M-RoPE positions and plain causal attention (the
batch is right-padded, so no real token sees a pad) -> loss on the answer tokens (mean per
example, then over the batch), plus --aux-weight times the vision tower's dense auxiliary
loss (aux.py: per-token shape / colour / motion labels through a linear head that is not
exported) -> gradient clipping -> AdamW, skipped for a model whose loss
or gradient norm is not finite. No host sync between log points. Output under --out:
tokenizer.json, log.jsonl (step and evaluation records), ckpt/last.pt (and ckpt/prev.pt),
models/, models.tgz.
"""

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tarfile
import tempfile
import time

START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aux  # noqa: E402
import examples  # noqa: E402
import export  # noqa: E402
import fast_vision  # noqa: E402
import heldout  # noqa: E402
import media  # noqa: E402
import model_config  # noqa: E402
import vocab  # noqa: E402

NAMES = ["vidi-shapes", "vidi-shapes-draft"]
PREFETCH = 2          # batches prefetched per data-loader worker
# options that define the data stream (a resumed run keeps the checkpoint's)
DATA_ARGS = ("aux_weight", "batch_size", "batch_tokens", "data_seed", "p_video", "p_caption", "nframes_p", "type_weights",
             "questions_per_scene", "no_augment")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder (checkpoints, logs, exported models)")
    ap.add_argument("--ckpt-dir", default=None, help="default: OUT/ckpt")
    ap.add_argument("--export-dir", default=None,
                    help="where vidi-shapes/ and vidi-shapes-draft/ are written (default: OUT/models)")
    ap.add_argument("--resume", action="store_true", help="continue from CKPT_DIR/last.pt")
    ap.add_argument("--init-from", default=None,
                    help="start from exported folders: a directory holding vidi-shapes/ and vidi-shapes-draft/ "
                         "(or models/ with them), or a models.tgz; fresh optimizer, new schedule")
    ap.add_argument("--reinit", default="",
                    help="with --init-from: these models (comma-separated) start from fresh weights; only the "
                         "tokenizer, the configuration and the data position come from the exported folders")
    ap.add_argument("--minutes", type=float, default=18.0, help="wall-clock limit of this run")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="training time planned for the schedule (default --minutes; with --init-from: this run's)")
    ap.add_argument("--total-steps", type=int, default=0, help="schedule length (0: from speed and budget)")
    ap.add_argument("--steps", type=int, default=0, help="stop this run after so many steps (0: no limit)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-tokens", type=int, default=32768,
                    help="tokens per batch: each bucket's batch size is this over its mean example length")
    ap.add_argument("--batch-size", type=int, default=0, help="examples per batch instead (0: by --batch-tokens)")
    ap.add_argument("--lr", type=float, default=1.5e-3, help="peak lr of vidi-shapes")
    ap.add_argument("--lr-draft", type=float, default=2.5e-3, help="peak lr of the draft")
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default 300; 100 with --init-from)")
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--p-video", type=float, default=0.6, help="share of video examples")
    ap.add_argument("--p-caption", type=float, default=0.15)
    ap.add_argument("--nframes-p", default=",".join(str(x) for x in examples.TRAIN_NFRAMES_P),
                    help="share of the video examples per sampled-frame count 4,6,8,10,12,16")
    ap.add_argument("--type-weights", default="",
                    help="question type weights, e.g. shape=2,moves=1.5 (default examples.TYPE_WEIGHTS; "
                         "'uniform' for all 1)")
    ap.add_argument("--questions-per-scene", type=int, default=2,
                    help="examples per scene in a batch: different questions on the same frames, whose vision "
                         "tower output is computed once and shared (1: every example its own scene)")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--aux-weight", type=float, default=0.5,
                    help="weight of the vision tower's dense auxiliary loss (aux.py; 0: off)")
    ap.add_argument("--aux-head-steps", type=int, default=0,
                    help="for the first N steps of this run the aux loss trains only its head (a fresh "
                         "head on a trained tower, e.g. after --init-from: its first gradients would "
                         "otherwise push the tower around)")
    ap.add_argument("--seed", type=int, default=1234, help="weight initialisation seed")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(NAMES), help="which models to train")
    ap.add_argument("--workers", type=int, default=min(14, max(1, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--eval-scenes", type=int, default=160,
                    help="held-out scenes of the final evaluation (periodic ones use half)")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: by --eval-minutes)")
    ap.add_argument("--eval-minutes", type=float, default=4.0)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--max-bad-steps", type=int, default=25,
                    help="stop when a model's loss or gradient norm is non-finite this many steps in a row")
    ap.add_argument("--hf-vision-attn", action="store_true",
                    help="keep transformers' per-chunk vision attention (default: fast_vision.py)")
    ap.add_argument("--hf-forward", action="store_true",
                    help="run the models through transformers' forward with a padding mask (the slow reference "
                         "path; the default forward is equal to it)")
    ap.add_argument("--allow-cudnn-attention", action="store_true",
                    help="leave PyTorch's cuDNN attention backend on (off by default: its backward can return "
                         "NaN for masked keys of length 64 mod 128 on H100, pytorch/pytorch#196678)")
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
    """AdamW, fused where torch has it (CUDA, and CPU in recent torch): the fused kernel
    skips a step when opt.found_inf is 1, without a host sync (see train_step)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed_tokens" not in n else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def build_models(cfgs, names, seed, device, fast=True):
    models = {}
    for k, name in enumerate(names):
        torch.manual_seed(seed + k)
        m = model_config.make_model(cfgs[name])
        models[name] = (fast_vision.install(m) if fast else m).to(device).train()
    return models


def worker_init(_):
    torch.set_num_threads(1)


def loader_workers(args, ds):
    """Workers x prefetched batches must fit in /dev/shm (batches come back through shared
    memory: the raw frames, up to about 0.34 MB a frame); use fewer workers if it is small."""
    want = args.workers
    try:
        st = os.statvfs("/dev/shm")
        free = st.f_bavail * st.f_frsize
    except OSError:
        return want
    per_batch = max(size * (n or 1) for (kind, n), size in zip(ds.buckets, ds.sizes)) * 3 * 336 * 336 * 0.6
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


def dataset(args, tok_json):
    tw = None if args.type_weights == "uniform" else examples.parse_weights(args.type_weights, examples.TYPE_WEIGHTS)
    return examples.TrainBatches(tok_json, args.batch_size, args.data_seed, args.p_video, args.p_caption,
                                 augment=not args.no_augment, batch_tokens=args.batch_tokens,
                                 nframes_p=[float(x) for x in args.nframes_p.split(",")], type_weights=tw,
                                 per_scene=args.questions_per_scene)


# ----------------------------------------------------------------------------- init from exported folders

def find_models_root(path):
    """DIR with vidi-shapes/ (or DIR/models/vidi-shapes/) -> the folder that holds
    vidi-shapes/ and vidi-shapes-draft/."""
    for root in (path, os.path.join(path, "models")):
        if os.path.isdir(os.path.join(root, NAMES[0])):
            return root
    sys.exit(f"--init-from: no {NAMES[0]}/ under {path}")


def load_init(path, names):
    """Exported folders (a directory, or a .tgz of one, unpacked to a temporary folder) ->
    (where, configs, float32 models, tokenizer.json text, train_state.json or {})."""
    if os.path.isfile(path):
        with tempfile.TemporaryDirectory(prefix="init-") as dest:
            with tarfile.open(path, "r:*") as t:
                t.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(dest)
            out = load_init(dest, names)
        return (path,) + out[1:]
    root = find_models_root(path)
    cfgs, models, tok_json = {}, {}, None
    for n in names:
        try:
            cfg, tj, m = model_config.load_folder(os.path.join(root, n))
        except (AssertionError, OSError) as e:
            sys.exit(f"--init-from: {e}")
        if tok_json is not None and tj != tok_json:
            sys.exit(f"--init-from: {n} has another tokenizer than {names[0]}")
        tok_json = tj
        cfgs[n], models[n] = cfg, m
    st = {}
    sp = os.path.join(root, "train_state.json")
    if os.path.exists(sp):
        with open(sp, encoding="utf-8") as f:
            st = json.load(f)
    return root, cfgs, models, tok_json, st


# ----------------------------------------------------------------------------- a step

def to_device(batch, device):
    """The batch's tensors on the device, and its pixel values (resize + patches there)."""
    nb = device.type == "cuda"
    b = {k: batch[k].to(device, non_blocking=nb)
         for k in ("ids", "attn", "pos", "grid", "vpos", "cu", "vis_idx", "tgt_idx", "tgt", "tgt_row", "tgt_n",
                   "aux", "type_idx")}
    b["plan"] = fast_vision.plan_to(batch["plan"], device, nb)
    b["vis_src"] = None if batch["vis_src"] is None else batch["vis_src"].to(device, non_blocking=nb)
    b["pixel_values"] = media.batch_patches(batch["frames"].to(device, non_blocking=nb), batch["shapes"],
                                            batch["sizes"])
    b["kind"] = batch["kind"]
    return b


def forward_hidden(model, b):
    """Last hidden states (n, L, D) of the batch: Qwen2VLModel.forward's computation with the
    per-forward work precomputed (examples.collate) and no attention mask (see the module
    docstring); equal to transformers' forward with the padding mask on every real token.
    Also the vision tower's output, one row per scene token (aux.py's labels)."""
    inner = model.model
    vis = inner.visual(b["pixel_values"], grid_thw=b["grid"], position_ids=b["vpos"],
                       cu_seqlens=b["cu"]).pooler_output
    per_scene = vis
    if b.get("vis_src") is not None:          # scenes shared by several sequences
        vis = vis.index_select(0, b["vis_src"])
    lm = inner.language_model
    emb = lm.embed_tokens(b["ids"])
    n, L, D = emb.shape
    emb = emb.reshape(n * L, D).index_copy(0, b["vis_idx"], vis.to(emb.dtype)).view(n, L, D)
    return lm(inputs_embeds=emb, position_ids=b["pos"], use_cache=False).last_hidden_state, per_scene


def answer_loss(model, h, b, per_example=False):
    """Mean over examples of the mean cross-entropy over each example's answer tokens;
    also the fraction of examples whose answer tokens are all argmax (teacher forced);
    with per_example, also each example's loss (n,)."""
    hs = h.reshape(-1, h.shape[-1]).index_select(0, b["tgt_idx"])
    logits = model.lm_head(hs).float()
    ce = F.cross_entropy(logits, b["tgt"], reduction="none")
    n = b["tgt_n"].shape[0]
    s = torch.zeros(n, device=ce.device).index_add_(0, b["tgt_row"], ce)
    wrong = torch.zeros(n, device=ce.device).index_add_(0, b["tgt_row"], (logits.argmax(-1) != b["tgt"]).float())
    ex = s / b["tgt_n"]
    if per_example:
        return ex.mean(), (wrong == 0).float().mean(), ex
    return ex.mean(), (wrong == 0).float().mean()


def step_loss(model, b, head=None, aux_weight=0.0, by_type=None, head_only=False):
    """(loss, teacher-forced exact fraction, aux loss, aux shape accuracy): the answer loss
    plus aux_weight times the vision tower's auxiliary loss when a head is given (head_only:
    the aux loss trains the head alone, not the tower). by_type: (sums, counts) device
    tensors over TASK_TYPES that the examples' answer losses are added to (no host sync)."""
    fast_vision.seed_plan(b["cu"], b["plan"])
    h, vis = forward_hidden(model, b)
    loss, tf, ex = answer_loss(model, h, b, per_example=True)
    if by_type is not None:
        by_type[0].index_add_(0, b["type_idx"], ex.detach().float())
        by_type[1].index_add_(0, b["type_idx"], torch.ones_like(ex, dtype=torch.float32))
    if head is None or not aux_weight:
        zero = torch.zeros((), device=loss.device)
        return loss, tf, zero, zero
    al, acc = aux.loss(head, vis.detach() if head_only else vis, b["aux"])
    return loss + aux_weight * al, tf, al, acc


def vision_inputs(batch, device):
    """transformers' keyword arguments for the batch's pixels (the reference path): every
    sequence gets its own copy of its scene's patches."""
    pv = media.batch_patches(batch["frames"].to(device), batch["shapes"], batch["sizes"])
    g = batch["grid"]
    if batch.get("vis_src") is not None:
        per = torch.split(pv, (g[:, 0] * g[:, 1] * g[:, 2]).tolist())
        pv = torch.cat([per[sc] for sc in batch["scene_of"]])
        g = g[torch.tensor(batch["scene_of"])]
    g = g.to(device)
    if batch["kind"] == "image":
        return {"pixel_values": pv, "image_grid_thw": g}
    return {"pixel_values_videos": pv, "video_grid_thw": g}


def compute_loss(model, b, vis):
    """The reference: transformers' forward with the padding mask, loss as answer_loss."""
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


class Guard:
    """Skips a model's optimizer step when its loss or gradient norm is not finite, without
    a host sync: the fused AdamW kernel reads found_inf on the device (the step count is
    restored too); other optimizers fall back to a sync. Counts skipped steps (total and in
    a row) on the device; train.py reads them at log points."""

    def __init__(self, opt, device):
        self.opt = opt
        self.fused = bool(opt.defaults.get("fused"))
        self.total = torch.zeros((), dtype=torch.long, device=device)
        self.run = torch.zeros((), dtype=torch.long, device=device)

    def step(self, loss, gnorm):
        bad = ~(torch.isfinite(loss) & torch.isfinite(gnorm))
        self.total += bad
        self.run = (self.run + 1) * bad
        if self.fused:
            self.opt.found_inf = bad.float()
            self.opt.step()
        elif not bool(bad):
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def train_step(models, opts, guards, params, b, lrs, f, clip, amp, hf_forward=False, vis=None, heads=None,
               aux_weight=0.0, by_type=None, aux_head_only=False):
    """One optimizer step of every model -> {name: (answer loss, tf, grad norm, aux loss, aux shape
    acc)} (device tensors). aux_head_only: the aux loss trains the heads, not the towers."""
    out = {}
    for n, m in models.items():
        for g in opts[n].param_groups:
            g["lr"] = lrs[n] * f
        with amp():
            if hf_forward:
                loss, tf = compute_loss(m, b, vis)
                al = acc = torch.zeros((), device=loss.device)
            else:
                loss, tf, al, acc = step_loss(m, b, (heads or {}).get(n), aux_weight, (by_type or {}).get(n),
                                                 aux_head_only)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params[n], clip)
        guards[n].step(loss.detach(), gnorm)
        # the answer loss alone is reported (the optimised one adds aux_weight * aux loss)
        out[n] = ((loss - aux_weight * al).detach(), tf.detach(), gnorm.detach(), al.detach(), acc.detach())
    return out


# ----------------------------------------------------------------------------- evaluation, export

def run_info(args, state, device):
    return {
        "args": vars(args), "step": state["step"], "total_steps": state["total_steps"],
        "train_seconds": state["train_seconds"], "runs": state["runs"],
        "examples": state.get("examples"), "init_from": state.get("init_from"),
        "sched_start": state.get("sched_start", 0),
        "lr": {NAMES[0]: args.lr, NAMES[1]: args.lr_draft},
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "transformers": __import__("transformers").__version__, "torch": torch.__version__,
        "train_seed_base": examples.TRAIN_SEED_BASE, "heldout_seed_limit": examples.HELDOUT_SEED_LIMIT,
        "eval_seed_base": examples.EVAL_SEED_BASE, "eval_scenes": args.eval_scenes,
    }


def train_state_json(args, state):
    """What a later --init-from run needs besides the weights (models/train_state.json)."""
    return {"step": state["step"], "next_batch": state["next_batch"], "train_seconds": state["train_seconds"],
            "runs": state["runs"], "examples": state.get("examples", 0), "total_steps": state["total_steps"],
            "data": {k: getattr(args, k) for k in DATA_ARGS}, "seed": args.seed}


def write_tgz(out_root, tgz_path):
    tmp = tgz_path + ".tmp"
    with tarfile.open(tmp, "w:gz", compresslevel=3) as t:
        t.add(out_root, arcname="models")
    os.replace(tmp, tgz_path)
    return os.path.getsize(tgz_path)


def export_models(models, cfgs, tok_json, text, out_root, info, results, train_state, tgz_path):
    sizes = export.export_all({n: m for n, m in models.items()}, cfgs, tok_json, text.ids, out_root, info, results)
    model_config.write_json(os.path.join(out_root, "train_state.json"), train_state)
    nb = write_tgz(out_root, tgz_path)
    return sizes, nb


def final_eval_and_export(models, cfgs, tok_json, text, items, out_root, info, device, train_state=None,
                          tgz_path=None):
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
    if train_state is None:
        sizes = export.export_all({n: m for n, m in models.items()}, cfgs, tok_json, text.ids, out_root, info, results)
    else:
        sizes, nb = export_models(models, cfgs, tok_json, text, out_root, info, results, train_state, tgz_path)
        print(f"[export] {tgz_path}: {nb / 1e6:.2f} MB", flush=True)
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
    info = run_info(args, ck, device)
    state = {k: ck.get(k) for k in ("step", "next_batch", "train_seconds", "runs", "examples", "total_steps")}
    final_eval_and_export(models, ck["cfgs"], ck["tok_json"], text, items, out_root, info, device,
                          train_state_json(args, state), os.path.join(os.path.dirname(out_root.rstrip("/")) or ".",
                                                                      "models.tgz"))


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    deadline = START + args.minutes * 60
    budget = (args.budget_minutes or args.minutes) * 60
    ckpt_dir = args.ckpt_dir or os.path.join(args.out, "ckpt")
    ckpt_path = os.path.join(ckpt_dir, "last.pt")
    export_dir = args.export_dir or os.path.join(args.out, "models")
    tgz_path = os.path.join(args.out, "models.tgz")
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "log.jsonl"), "a", encoding="utf-8")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if not args.allow_cudnn_attention and hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
            torch.backends.cuda.enable_cudnn_sdp(False)
    else:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.resume and args.init_from:
        sys.exit("--resume and --init-from exclude each other")

    names = [n for n in args.models.split(",") if n]
    ck = init = None
    init_state = {}
    if args.resume:
        if not os.path.exists(ckpt_path):
            sys.exit(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        ck["args"].setdefault("aux_weight", 0.0)      # checkpoints from before aux.py trained without it
        for k in DATA_ARGS + ("models", "seed", "warmup"):
            if k in ck["args"] and getattr(args, k) != ck["args"][k]:
                if getattr(args, k) is None:              # not given: silently the checkpoint's
                    setattr(args, k, ck["args"][k])
                    continue
                print(f"[resume] note: --{k.replace('_', '-')} {getattr(args, k)} differs from the "
                      f"checkpoint's {ck['args'][k]}; using the checkpoint's", flush=True)
                setattr(args, k, ck["args"][k])
        names = [n for n in args.models.split(",") if n]
        tok_json, cfgs = ck["tok_json"], ck["cfgs"]
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tok_json)
    elif args.init_from:
        root, cfgs, init, tok_json, init_state = load_init(args.init_from, names)
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tok_json)
        print(f"[init] {root}: {', '.join(names)} (bf16 weights), their tokenizer; "
              f"{'trained ' + str(init_state.get('step')) + ' steps before' if init_state else 'no train_state.json'}",
              flush=True)
    else:
        tok = vocab.build_tokenizer()
        tok_json = vocab.tokenizer_json(tok)
        ids = vocab.special_ids(tok)
        vsize = model_config.padded_vocab(tok.get_vocab_size())
        cfgs = {n: model_config.flat_config(n, ids, vsize) for n in NAMES}
    if args.warmup is None:
        args.warmup = 100 if args.init_from else 300
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok_json)
    text = examples.Text(tok)

    models = build_models(cfgs, names, args.seed, device, fast=not args.hf_vision_attn)
    if args.aux_weight and args.hf_forward:
        sys.exit("--hf-forward has no auxiliary loss: pass --aux-weight 0 with it")
    heads = {}
    if args.aux_weight:
        for k, n in enumerate(names):
            torch.manual_seed(args.seed + 100 + k)
            heads[n] = aux.Head(cfgs[n]["hidden_size"]).to(device)
    lrs = {NAMES[0]: args.lr, NAMES[1]: args.lr_draft}
    opts = {n: make_optimizer(m, lrs[n], args.weight_decay, device) for n, m in models.items()}
    for n, hd in heads.items():
        opts[n].add_param_group({"params": list(hd.parameters()), "weight_decay": 0.0})
    params = {n: [p for p in m.parameters()] + ([p for p in heads[n].parameters()] if n in heads else [])
              for n, m in models.items()}
    state = {"step": 0, "next_batch": 0, "total_steps": args.total_steps or None, "train_seconds": 0.0,
             "runs": 0, "evals": [], "sched_start": 0, "sched_seconds0": 0.0, "examples": 0,
             "bad_steps": {n: 0 for n in names}, "init_from": None}
    if ck is not None:
        for n in names:
            models[n].load_state_dict(ck["models"][n])
            if n in heads:
                heads[n].load_state_dict(ck["aux_heads"][n])
            opts[n].load_state_dict(ck["opts"][n])
        for k in ("step", "next_batch", "total_steps", "train_seconds", "runs", "evals", "sched_start",
                  "sched_seconds0", "examples", "bad_steps", "init_from"):
            if k in ck:
                state[k] = ck[k]
        if args.total_steps:
            state["total_steps"] = args.total_steps
        set_rng_state(ck["rng"])
        print(f"[resume] step {state['step']}, batch {state['next_batch']}, schedule {state['total_steps']}, "
              f"{state['train_seconds'] / 60:.1f} min trained in {state['runs']} run(s)", flush=True)
    elif init is not None:
        fresh = [n for n in args.reinit.split(",") if n]
        for n in names:
            if n not in fresh:
                models[n].load_state_dict(init[n].state_dict())
        if fresh:
            print(f"[init] fresh weights (seed {args.seed}) for {', '.join(fresh)}", flush=True)
        del init
        st = init_state
        # the data stream continues after the exporting run's last batch (or far from the start)
        state.update(step=int(st.get("step", 0)), sched_start=int(st.get("step", 0)),
                     next_batch=int(st.get("next_batch", 10 ** 7)), train_seconds=float(st.get("train_seconds", 0.0)),
                     runs=int(st.get("runs", 0)), examples=int(st.get("examples", 0)),
                     sched_seconds0=float(st.get("train_seconds", 0.0)),
                     init_from={"path": os.path.abspath(args.init_from), "step": st.get("step"),
                                "next_batch": st.get("next_batch")})
        prev = st.get("data", {})
        for k in DATA_ARGS:
            if k in prev and prev[k] != getattr(args, k):
                print(f"[init] note: --{k.replace('_', '-')} {getattr(args, k)} (the exporting run had {prev[k]})",
                      flush=True)
        if args.total_steps:
            state["total_steps"] = state["sched_start"] + args.total_steps
        print(f"[init] step {state['step']}, data from batch {state['next_batch']}, fresh AdamW, warmup "
              f"{args.warmup} steps, new schedule over {budget / 60:.1f} min", flush=True)
    state["runs"] += 1
    for n, m in models.items():
        c = model_config.param_counts(m)
        bad = [k for k, v in m.state_dict().items() if not torch.isfinite(v).all()]
        if bad:
            sys.exit(f"{n}: non-finite weights ({bad[:3]}...): nothing to train from")
        print(f"[model] {n}: {c['total']:,} parameters (vision {c['vision']:,}, text {c['text']:,}), "
              f"{c['total'] * 2 / 1e6:.2f} MB bf16", flush=True)
    guards = {n: Guard(opts[n], device) for n in names}
    # answer loss per task type between log points (device sums and counts)
    by_type = {n: (torch.zeros(len(examples.TASK_TYPES), device=device),
                   torch.zeros(len(examples.TASK_TYPES), device=device)) for n in names}

    items = examples.heldout_items(args.eval_scenes)
    # periodic evaluations use the first half of the held-out scenes, the final one all
    half = examples.EVAL_SEED_BASE + max(1, args.eval_scenes // 2)
    items_periodic = [it for it in items if it["scene"]["seed"] < half]
    ds = dataset(args, tok_json)
    for row in ds.describe():
        print(f"[data] {row}", flush=True)
    workers = loader_workers(args, ds)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, sampler=range(state["next_batch"], len(ds)), num_workers=workers,
        pin_memory=device.type == "cuda", worker_init_fn=worker_init,
        prefetch_factor=PREFETCH if workers > 0 else None, persistent_workers=False)
    if device.type == "cuda":
        amp = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        import contextlib

        amp = contextlib.nullcontext
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def read_bad():
        for n in names:
            state["bad_steps"][n] = state["bad_steps"].get(n, 0) + int(guards[n].total.item())
            guards[n].total.zero_()

    def checkpoint():
        read_bad()
        save_checkpoint(ckpt_path, {
            "models": {n: m.state_dict() for n, m in models.items()},
            "aux_heads": {n: hd.state_dict() for n, hd in heads.items()},
            "opts": {n: o.state_dict() for n, o in opts.items()},
            "cfgs": cfgs, "tok_json": tok_json, "args": vars(args), "rng": rng_state(),
            **{k: state[k] for k in ("step", "next_batch", "total_steps", "train_seconds", "runs", "evals",
                                     "sched_start", "sched_seconds0", "examples", "bad_steps", "init_from")},
        })
        print(f"[ckpt] step {state['step']} -> {ckpt_path}", flush=True)

    last_results = {}

    def evaluate(tag):
        rec = {"event": "eval", "step": state["step"], "tag": tag}
        for n, m in models.items():
            r = heldout.evaluate(m, items_periodic, text, device, torch.bfloat16 if device.type == "cuda" else None)
            print(f"[eval] step {state['step']} {n}: {heldout.summary(r)}", flush=True)
            rec[n] = r
        state["evals"].append({k: v for k, v in rec.items()})
        last_results.clear()
        last_results.update({n: rec[n] for n in models})
        log.write(json.dumps(rec) + "\n")
        log.flush()
        return rec

    def export_periodic():
        """The latest weights with the latest periodic evaluation, as OUT/models.tgz (in case
        the machine goes away before the final export)."""
        if not last_results:
            return
        info = run_info(args, state, device)
        info["eval_note"] = (f"periodic evaluation at step {state['evals'][-1]['step']} on the first half of the "
                             f"held-out scenes (bf16 autocast on the training device); a final export replaces it")
        _, nb = export_models(models, cfgs, tok_json, text, export_dir, info, last_results,
                              train_state_json(args, state), tgz_path)
        print(f"[export] step {state['step']} -> {tgz_path} ({nb / 1e6:.1f} MB)", flush=True)

    reserve = 30.0 + (20.0 if args.eval_scenes else 0.0)     # final checkpoint + eval + export
    last_ckpt = last_eval = time.time()
    t_log, ex_log, tok_log, wait_log, steps_log = time.time(), 0, 0, 0.0, 0
    rate_t0 = rate_s0 = None
    run_steps = 0
    stop_msg = None
    print(f"[run] start-up {time.time() - START:.1f}s; batches of ~{args.batch_tokens} tokens"
          f"{f' ({args.batch_size} examples)' if args.batch_size else ''}, workers {workers}, device {device}",
          flush=True)
    it = iter(loader)
    run_t0 = time.time()
    f = 0.0
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
        b = to_device(batch, device)
        if args.hf_forward:
            b["labels"] = batch["labels"].to(device)
            vis = vision_inputs(batch, device)
        else:
            vis = None
        total = state["total_steps"] or 0
        f = lr_factor(state["step"] - state["sched_start"], args.warmup, total - state["sched_start"],
                      args.min_lr_ratio)
        losses = train_step(models, opts, guards, params, b, lrs, f, args.clip, amp, args.hf_forward, vis,
                            heads, args.aux_weight, None if args.hf_forward else by_type,
                            run_steps < args.aux_head_steps)
        n_ex = int(batch["ids"].shape[0])
        state["step"] += 1
        state["next_batch"] += 1
        state["examples"] += n_ex
        run_steps += 1
        ex_log += n_ex
        tok_log += batch["n_tokens"]
        steps_log += 1

        # schedule length from the measured speed (once, early in the run that starts the schedule)
        if state["total_steps"] is None:
            if run_steps == 30 or (args.steps and run_steps == max(1, args.steps // 2) and rate_t0 is None):
                sync()
                rate_t0, rate_s0 = time.time(), state["step"]
            elif rate_t0 is not None and ((state["step"] - rate_s0 >= 200 and time.time() - rate_t0 >= 30)
                                          or (args.steps and run_steps == args.steps)):
                sync()
                rate = (state["step"] - rate_s0) / (time.time() - rate_t0)
                trained = state["train_seconds"] - state["sched_seconds0"] + (time.time() - run_t0)
                left = budget - trained - reserve - 45
                state["total_steps"] = max(state["step"] + 1, int(state["step"] + 0.93 * rate * left))
                print(f"[schedule] {rate:.2f} steps/s -> cosine over {state['total_steps'] - state['sched_start']} "
                      f"steps (budget {budget / 60:.1f} min)", flush=True)

        if state["step"] % args.log_every == 0 or run_steps == 1:
            dt = time.time() - t_log
            short = {NAMES[0]: "T", NAMES[1]: "D"}
            vals = {n: tuple(x.item() for x in v) for n, v in losses.items()}
            per_type = {}
            for n, (ts, tc) in by_type.items():
                sums, cnts = ts.tolist(), tc.tolist()
                per_type[n] = {t: round(sv / cv, 4) for t, sv, cv in zip(examples.TASK_TYPES, sums, cnts) if cv}
                ts.zero_()
                tc.zero_()
            runs = {n: int(guards[n].run.item()) for n in names}
            read_bad()
            parts = " ".join(f"{short[n]}:loss={v[0]:.4f},tf={v[1]:.2f},gn={v[2]:.2f}"
                             + (f",aux={v[3]:.3f},aux_shape={v[4]:.2f}" if heads else "") for n, v in vals.items())
            bad = " ".join(f"{short[n]}:skipped={state['bad_steps'][n]}" for n in names if state["bad_steps"][n])
            rec = {"event": "step", "step": state["step"], "elapsed": round(time.time() - START, 1),
                   "steps_per_s": steps_log / dt, "examples_per_s": ex_log / dt, "tokens_per_s": tok_log / dt,
                   "data_wait": wait_log / dt, "lr_factor": f, "kind": batch["kind"],
                   "len": int(batch["ids"].shape[1]), "batch": n_ex, "examples": state["examples"],
                   "bad_steps": dict(state["bad_steps"]),
                   **{n: {"loss": v[0], "tf_exact": v[1], "grad_norm": v[2], "aux_loss": v[3],
                          "aux_shape_acc": v[4], "loss_by_type": per_type.get(n, {})} for n, v in vals.items()}}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            mem = f" mem {torch.cuda.max_memory_allocated(device) / 2**30:.1f}G" if device.type == "cuda" else ""
            print(f"step {state['step']:6d} {parts} lr*{f:.3f} {steps_log / dt:.2f} steps/s "
                  f"{ex_log / dt:.0f} ex/s {tok_log / dt / 1e3:.0f}k tok/s wait {100 * wait_log / dt:.0f}% "
                  f"{batch['kind'][0]}{n_ex}x{batch['ids'].shape[1]}{mem} {bad} t={time.time() - START:.0f}s",
                  flush=True)
            for n, pt in per_type.items():
                print(f"       {short[n]}: answer loss by type " + " ".join(f"{t}={v:.3f}" for t, v in pt.items()),
                      flush=True)
            t_log, ex_log, tok_log, wait_log, steps_log = time.time(), 0, 0, 0.0, 0
            worst = max(runs, key=runs.get)
            if runs[worst] >= args.max_bad_steps:
                stop_msg = (f"[stop] {worst}: loss or gradient norm non-finite in the last {runs[worst]} steps in a "
                            f"row (skipped, {state['bad_steps'][worst]} in all); the weights are those before "
                            f"the first of them. Stopping: lower --lr, or look at the batches from "
                            f"{state['next_batch'] - runs[worst]}.")
                print(stop_msg, flush=True)
                break

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
            export_periodic()
            last_ckpt = time.time()

    state["train_seconds"] += time.time() - run_t0
    del it, loader
    checkpoint()
    info = run_info(args, state, device)
    if args.eval_scenes:
        res = final_eval_and_export(models, cfgs, tok_json, text, items, export_dir, info, device,
                                    train_state_json(args, state), tgz_path)
        log.write(json.dumps({"event": "final", "step": state["step"], **res}) + "\n")
    log.close()
    print(f"[run] done: step {state['step']}, {state['examples']:,} examples, {time.time() - START:.0f}s wall",
          flush=True)
    if stop_msg:
        sys.exit(3)


if __name__ == "__main__":
    main()

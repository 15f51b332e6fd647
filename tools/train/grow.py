#!/usr/bin/env python3
"""tools/train/grow.py — a larger model grown from a trained smaller one, with the same outputs.

The target (vidi-shapes) is trained from the draft (vidi-shapes-draft) grown to the target's
size, instead of from fresh weights: the draft learns this task quickly and the fresh target
did not (tools/train/RUNS.md, runs 7-10). The grown model computes what the draft computes
(up to bf16 rounding) and then trains on with its extra width and depth.

What grows, and how the output stays the same:

  text width     hidden H -> H' (and heads, kv heads, intermediate in proportion): the
                 draft's weights fill the top-left block of each matrix. The residual
                 stream's new dimensions start at exactly 0: the embedding's new columns and
                 every row that writes them (o_proj, down_proj, the merger's last layer) are 0.
                 RMSNorm then divides by a root mean square over H' dimensions, sqrt(H'/H)
                 smaller, so every norm weight is scaled by sqrt(H/H'). New heads and new MLP
                 units keep their fresh random weights but their output columns are 0; the
                 weights that read the new dimensions keep fresh random values (those
                 dimensions are 0, so they change nothing yet, and they give the gradient a
                 way into the new dimensions).
  text depth     the draft's layer i becomes layer i * (L' / L); the layers in between are
                 fresh with o_proj and down_proj 0, so each adds 0 to the residual stream.
  vision depth   the same: the draft's block i becomes block i * (D' / D), the others are
                 fresh with attn.proj and mlp.fc2 0. The vision width (embed_dim, heads)
                 cannot grow this way (LayerNorm's mean and variance over the new
                 dimensions would change), so the grown model keeps the draft's.

GQA grouping stays right: transformers gives query head h the kv head h // (heads / kv
heads); the draft's query heads keep their indices and its kv heads too, as long as the
ratio heads / kv heads is the same in both models (checked).

    python tools/train/grow.py --from models/vidi-shapes-draft --out /tmp/grown \\
        [--layers 6 --hidden 256 --heads 4 --kv-heads 2 --intermediate 768 --vision-depth 6]

writes /tmp/grown/models/vidi-shapes/ (an exported folder that train.py --init-from takes,
with the draft's tokenizer) and, with --check, compares the two models' logits on a random
image prompt. Grown from run 10's draft, the exported model gave the draft's answer on all
426 questions of tests/data/shapes (tools/train/evaluate.py, CPU).
"""

import argparse
import copy
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import model_config  # noqa: E402
import mrope  # noqa: E402
import vocab  # noqa: E402

TEXT = "model.language_model."
VIS = "model.visual."


def grown_config(src, layers, hidden, heads, kv_heads, intermediate, vision_depth):
    cfg = copy.deepcopy(src)
    head_dim = src["hidden_size"] // src["num_attention_heads"]
    if hidden % heads or hidden // heads != head_dim:
        sys.exit(f"--hidden {hidden} / --heads {heads} must keep the head size {head_dim}")
    if heads * src["num_key_value_heads"] != kv_heads * src["num_attention_heads"]:
        sys.exit("--heads / --kv-heads must equal the source's heads / kv heads (GQA grouping)")
    for name, new, old in (("--layers", layers, src["num_hidden_layers"]),
                           ("--hidden", hidden, src["hidden_size"]),
                           ("--heads", heads, src["num_attention_heads"]),
                           ("--kv-heads", kv_heads, src["num_key_value_heads"]),
                           ("--intermediate", intermediate, src["intermediate_size"]),
                           ("--vision-depth", vision_depth, src["vision_config"]["depth"])):
        if new < old:
            sys.exit(f"{name} {new} is smaller than the source's {old}")
    if layers % src["num_hidden_layers"] or vision_depth % src["vision_config"]["depth"]:
        sys.exit("--layers and --vision-depth must be multiples of the source's")
    cfg.update(num_hidden_layers=layers, max_window_layers=layers, hidden_size=hidden,
               num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate)
    cfg["vision_config"]["depth"] = vision_depth
    cfg["vision_config"]["hidden_size"] = hidden
    return cfg


@torch.no_grad()
def grow(src_model, src_cfg, cfg, seed):
    """A model of config cfg computing what src_model computes."""
    torch.manual_seed(seed)
    dst = model_config.make_model(cfg)
    s = src_model.state_dict()
    d = dst.state_dict()
    H, H2 = src_cfg["hidden_size"], cfg["hidden_size"]
    hd = H // src_cfg["num_attention_heads"]
    nq, nkv = src_cfg["num_attention_heads"] * hd, src_cfg["num_key_value_heads"] * hd
    inter = src_cfg["intermediate_size"]
    norm_scale = math.sqrt(H / H2)

    def put(key, src_key=None, rows=None, cols=None, zero=False, scale=1.0):
        """d[key]: zero it first if asked, then its top-left block (rows x cols) = s[src_key] * scale."""
        t, v = d[key], s[src_key or key]
        if zero:
            t.zero_()
        if t.dim() == 1:
            t[:v.shape[0]] = v * scale
        else:
            t[:v.shape[0], :v.shape[1]] = v * scale
        assert rows is None or v.shape[0] == rows
        assert cols is None or v.shape[-1] == cols

    # ---- vision: patch embedding and merger as they are; blocks spread over the new depth
    D, D2 = src_cfg["vision_config"]["depth"], cfg["vision_config"]["depth"]
    for k in list(d):
        if not k.startswith(VIS) or ".blocks." in k:
            continue
        if k.startswith(VIS + "merger.mlp.2."):      # writes the text model's hidden size
            put(k, zero=True)
        else:
            assert d[k].shape == s[k].shape, k
            d[k].copy_(s[k])
    for j in range(D2):
        pre = f"{VIS}blocks.{j}."
        if j % (D2 // D) == 0:
            spre = f"{VIS}blocks.{j // (D2 // D)}."
            for k in [k for k in d if k.startswith(pre)]:
                d[k].copy_(s[spre + k[len(pre):]])
        else:
            for part in ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
                d[pre + part].zero_()

    # ---- text
    put(TEXT + "embed_tokens.weight", zero=True)          # new columns 0: new dimensions start at 0
    put(TEXT + "norm.weight", scale=norm_scale)
    d[TEXT + "norm.weight"][H:] = norm_scale
    L, L2 = src_cfg["num_hidden_layers"], cfg["num_hidden_layers"]
    for j in range(L2):
        pre = f"{TEXT}layers.{j}."
        if j % (L2 // L) != 0:
            d[pre + "self_attn.o_proj.weight"].zero_()
            d[pre + "mlp.down_proj.weight"].zero_()
            continue
        spre = f"{TEXT}layers.{j // (L2 // L)}."
        for k in [k for k in d if k.startswith(pre)]:
            part, sk = k[len(pre):], spre + k[len(pre):]
            if part.endswith("layernorm.weight"):
                put(k, sk, scale=norm_scale)
                d[k][H:] = norm_scale
            elif part in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
                put(k, sk, zero=True)       # new heads / units write nothing; nothing writes new dims
            elif part.endswith("_proj.bias"):
                put(k, sk, zero=True)
            else:                           # q/k/v/gate/up: fresh rows for new heads/units, fresh new columns
                put(k, sk)
            if part == "self_attn.q_proj.weight":
                assert s[sk].shape == (nq, H)
            if part in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
                assert s[sk].shape == (nkv, H)
            if part == "mlp.up_proj.weight":
                assert s[sk].shape == (inter, H)
    missing, unexpected = dst.load_state_dict(d, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    dst.tie_weights()
    assert dst.lm_head.weight is dst.model.language_model.embed_tokens.weight
    return dst


@torch.no_grad()
def check(a, b, cfg, ids):
    """Logits of both models on a prompt with an image of 4 x 4 merged tokens."""
    torch.manual_seed(0)
    grid = torch.tensor([[1, 8, 8]])
    pix = torch.randn(64, 3 * 2 * 14 * 14)
    n_img = 16
    text = torch.randint(0, 600, (1, 12))
    ids_ = torch.cat([text[:, :6], torch.tensor([[ids["<|vision_start|>"]]]),
                      torch.full((1, n_img), ids["<|image_pad|>"]),
                      torch.tensor([[ids["<|vision_end|>"]]]), text[:, 6:]], dim=1)
    pos, _ = mrope.positions(ids_[0].numpy(), [tuple(grid[0].tolist())], ids["<|image_pad|>"],
                             ids["<|video_pad|>"])
    pos = torch.from_numpy(pos)[:, None, :]
    out = []
    for m in (a, b):
        m.eval()
        out.append(m(input_ids=ids_, pixel_values=pix, image_grid_thw=grid, position_ids=pos).logits.float())
    diff = (out[0] - out[1]).abs().max().item()
    scale = out[0].abs().max().item()
    same = (out[0].argmax(-1) == out[1].argmax(-1)).float().mean().item()
    return diff, scale, same


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", required=True, help="the exported folder to grow")
    ap.add_argument("--out", required=True, help="writes OUT/models/NAME/")
    ap.add_argument("--name", default="vidi-shapes")
    t = model_config.SPECS["vidi-shapes"]["text"]
    ap.add_argument("--layers", type=int, default=t["num_hidden_layers"])
    ap.add_argument("--hidden", type=int, default=t["hidden_size"])
    ap.add_argument("--heads", type=int, default=t["num_attention_heads"])
    ap.add_argument("--kv-heads", type=int, default=t["num_key_value_heads"])
    ap.add_argument("--intermediate", type=int, default=t["intermediate_size"])
    ap.add_argument("--vision-depth", type=int, default=model_config.SPECS["vidi-shapes"]["vision"]["depth"])
    ap.add_argument("--seed", type=int, default=1234, help="the fresh parts' initialisation seed")
    ap.add_argument("--check", action="store_true", help="compare the logits of both models")
    args = ap.parse_args(argv)

    src_cfg, tok_json, src = model_config.load_folder(args.src)
    cfg = grown_config(src_cfg, args.layers, args.hidden, args.heads, args.kv_heads, args.intermediate,
                       args.vision_depth)
    dst = grow(src, src_cfg, cfg, args.seed)
    from tokenizers import Tokenizer

    ids = vocab.special_ids(Tokenizer.from_str(tok_json))
    out_dir = os.path.join(args.out, "models", args.name)
    readme = (f"# {args.name} (grown, untrained)\n\nGrown by tools/train/grow.py from {args.src} "
              f"(seed {args.seed}); it computes what that model computes until it is trained.\n")
    nbytes = model_config.export_folder(dst, cfg, tok_json, ids, out_dir, readme)
    c0, c1 = model_config.param_counts(src), model_config.param_counts(dst)
    print(f"[grow] {args.src}: {c0['total']:,} parameters -> {out_dir}: {c1['total']:,} "
          f"(vision {c1['vision']:,}, text {c1['text']:,}), {nbytes / 1e6:.2f} MB bf16", flush=True)
    if args.check:
        # the construction is exact in float32 (up to RMSNorm's eps); the bf16 export rounds the
        # norm weights scaled by sqrt(H/H'), which moves the logits by about 0.1
        diff, scale, same = check(src, dst, cfg, ids)
        print(f"[grow] float32 logits: max |difference| {diff:.5f} (largest logit {scale:.2f}), "
              f"same argmax at {same:.3f} of positions", flush=True)
        if diff > 1e-2 * max(1.0, scale):
            sys.exit("[grow] the grown model does not compute what the source computes")
        _, _, back = model_config.load_folder(out_dir)
        diff, scale, same = check(src, back, cfg, ids)
        print(f"[grow] exported (bf16) logits: max |difference| {diff:.4f}, same argmax at {same:.3f} "
              f"of positions (random tokens)", flush=True)
    with open(os.path.join(args.out, "models", "grow.json"), "w", encoding="utf-8") as f:
        json.dump({"from": os.path.abspath(args.src), "seed": args.seed, "config": cfg}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

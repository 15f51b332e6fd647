"""tools/train/greedy.py — batched greedy decoding with original-rule M-RoPE positions.

transformers' generate() would compute Qwen2-VL positions with the 5.x rule (see
mrope.py), so this is a small decoding loop of its own: left-padded prompts, explicit
position_ids (3, batch, length) for the prompt and for every new token (prompt maximum +
1 + k on all three axes), a KV cache, argmax, stop at an end-of-sequence id. It works
with transformers 5.17 (`past_key_values=`) and 5.24 (`cache=`).

    greedy(model, prompts, eos_ids, pad_id, max_new_tokens, autocast_dtype=None)
        prompts: [{"ids": [int], "pos": int array (3, L), "pixel_values": f32 (n, 1176),
                   "grid": (t, h, w), "kind": "image" | "video"}]
        returns: [[generated ids, without the end-of-sequence id]]
"""

import contextlib
import inspect

import torch


def _cache_kw(model):
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


@torch.no_grad()
def greedy(model, prompts, eos_ids, pad_id, max_new_tokens=32, autocast_dtype=None):
    dev = next(model.parameters()).device
    n = len(prompts)
    L = max(len(p["ids"]) for p in prompts)
    ids = torch.full((n, L), pad_id, dtype=torch.long)
    attn = torch.zeros((n, L), dtype=torch.long)
    pos = torch.ones((3, n, L), dtype=torch.long)
    nxt_pos = torch.zeros(n, dtype=torch.long)
    for i, p in enumerate(prompts):
        k = len(p["ids"])
        ids[i, L - k:] = torch.as_tensor(p["ids"])
        attn[i, L - k:] = 1
        pp = torch.as_tensor(p["pos"])
        pos[:, i, L - k:] = pp
        nxt_pos[i] = int(pp.max()) + 1
    kw = {}
    for kind, pv_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                   ("video", "pixel_values_videos", "video_grid_thw")):
        sel = [p for p in prompts if p["kind"] == kind]
        if sel:
            kw[pv_key] = torch.cat([p["pixel_values"] for p in sel]).to(dev)
            kw[grid_key] = torch.tensor([list(p["grid"]) for p in sel], device=dev)
    ids, attn, pos, nxt_pos = ids.to(dev), attn.to(dev), pos.to(dev), nxt_pos.to(dev)
    ckw = _cache_kw(model)
    eos = torch.tensor(eos_ids, device=dev)
    ctx = (torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    out_tokens = torch.zeros((n, 0), dtype=torch.long, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    with ctx:
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                    logits_to_keep=1, **kw)
        cache = _out_cache(out)
        for step in range(max_new_tokens):
            tok = out.logits[:, -1].float().argmax(-1)
            tok = torch.where(done, torch.full_like(tok, pad_id), tok)
            out_tokens = torch.cat([out_tokens, tok[:, None]], 1)
            done |= torch.isin(tok, eos)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=dev)], 1)
            p = (nxt_pos + step).view(1, n, 1).expand(3, n, 1)
            out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=p, use_cache=True,
                        **{ckw: cache})
            cache = _out_cache(out)
    res = []
    eos_set = set(eos_ids)
    for row in out_tokens.tolist():
        seq = []
        for t in row:
            if t in eos_set:
                break
            seq.append(t)
        res.append(seq)
    return res

"""tools/train/fast_vision.py — batched attention for the Qwen2-VL vision tower.

Without flash-attn, transformers' VisionAttention runs one SDPA call per attention chunk
(one per image, one per temporal step of a video): a batch of 48 videos makes about 200
calls per layer, forward and backward, and the launch overhead dominates a tiny tower on
a GPU. This replaces the forward of every VisionAttention of one model (instance
attributes, the class is not touched) with the same computation done as a few padded
SDPA calls: chunks are sorted by length and grouped so that a group's longest chunk is at
most GROUP_SLACK times its shortest; a group of equal lengths needs no mask, the others get
a key-padding mask (padded query rows attend to their chunk's real keys, so no row is ever
fully masked). The weights and their names are unchanged.

The plan (which chunk goes where) is a function of the chunk lengths only. make_plan
builds it on the CPU — train.py's data-loader workers build it with the batch — and
seed_plan hands it to the attention for a given cu_seqlens tensor, so a training forward
needs no host sync at all (gathers and one inverse permutation, no boolean indexing).
Without a seeded plan one is made from cu_seqlens (one host sync per forward).

    install(model)            patch a Qwen2VLForConditionalGeneration in place (returns it)
    make_plan(lengths)        plan for chunk lengths (CPU tensors)
    plan_to(plan, device)     the plan's tensors on a device
    seed_plan(cu_seqlens, plan)   use plan for forwards given this very cu_seqlens tensor
    vision_position_ids(grids), cu_seqlens(grids)   what transformers computes per forward
                              (rotary position ids, chunk boundaries), on the CPU
check.py compares outputs and gradients with transformers' own loop.
"""

import types

import numpy as np
import torch
import torch.nn.functional as F

GROUP_SLACK = 1.3
MERGE = 2


def _groups(lengths):
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups, cur = [], []
    for i in order:
        if cur and lengths[i] > GROUP_SLACK * lengths[cur[0]]:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return groups


def make_plan(lengths):
    """lengths: chunk lengths (ints). -> {"groups": [(idx (G, S) long, sel (n,) long,
    mask (G, 1, 1, S) bool or None)], "inv": (N,) long}: group g gathers tokens idx (a
    padded row per chunk, padding repeats the chunk's first token), attends with mask, and
    keeps its rows' valid positions sel (of the flattened G*S); the groups' kept outputs,
    concatenated, are the tokens in the order perm, and inv = argsort(perm) restores them."""
    lengths = [int(n) for n in lengths]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    groups, perm = [], []
    for g in _groups(lengths):
        ln = np.array([lengths[i] for i in g], np.int64)
        st = starts[g]
        s = int(ln.max())
        ar = np.arange(s)
        valid = ar[None, :] < ln[:, None]                              # (G, S)
        idx = np.where(valid, st[:, None] + ar[None, :], st[:, None])
        sel = np.flatnonzero(valid.reshape(-1))
        perm.append(idx.reshape(-1)[sel])
        mask = None if int(ln.min()) == s else torch.from_numpy(valid[:, None, None, :].copy())
        groups.append((torch.from_numpy(idx), torch.from_numpy(sel), mask))
    perm = np.concatenate(perm) if perm else np.zeros(0, np.int64)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    return {"groups": groups, "inv": torch.from_numpy(inv)}


def plan_to(plan, device, non_blocking=False):
    mv = (lambda t: None if t is None else t.to(device, non_blocking=non_blocking))
    return {"groups": [tuple(mv(t) for t in g) for g in plan["groups"]], "inv": mv(plan["inv"])}


_plan_cache = {"cu": None, "plan": None, "made": 0}     # made: plans computed here (host syncs)


def seed_plan(cu_seqlens, plan):
    """Forwards that get this cu_seqlens tensor (the same object) use plan (on its device)."""
    _plan_cache.update(cu=cu_seqlens, plan=plan)


def _plan(cu_seqlens, device):
    """Every block of one forward gets the same cu_seqlens tensor, so the plan (and the one
    host sync it costs when not seeded) is made once per forward. The cache holds the
    tensor itself, so an identity match cannot be a recycled object."""
    c = _plan_cache
    if c["cu"] is cu_seqlens:
        return c["plan"]
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    plan = plan_to(make_plan(lengths), device)
    c.update(cu=cu_seqlens, plan=plan, made=c["made"] + 1)
    return plan


def chunked_attention(q, k, v, cu_seqlens, scale):
    """q, k, v: (heads, N, d); attention within each [cu[i], cu[i+1]) chunk. -> (N, heads, d)"""
    h, n, d = q.shape
    plan = _plan(cu_seqlens, q.device)
    outs = []
    for idx, sel, mask in plan["groups"]:
        g, s = idx.shape
        qg, kg, vg = (t[:, idx].transpose(0, 1) for t in (q, k, v))  # (G, H, S, d)
        og = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, scale=scale)
        outs.append(og.transpose(0, 1).reshape(h, g * s, d)[:, sel])
    out = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    return out[:, plan["inv"]].transpose(0, 1)


def _forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    n = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(n, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    o = chunked_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), cu_seqlens, self.scaling)
    return self.proj(o.reshape(n, -1).contiguous())


def install(model):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import VisionAttention

    n = 0
    for m in model.modules():
        if isinstance(m, VisionAttention):
            m.forward = types.MethodType(_forward, m)
            n += 1
    assert n > 0, "no VisionAttention found"
    return model


# ----------------------------------------------------------------------------- per-batch inputs

def chunk_lengths(grids):
    """Attention chunks of the grids (t, h, w): one of h*w patches per temporal step."""
    return [int(h) * int(w) for t, h, w in grids for _ in range(int(t))]


def cu_seqlens(grids):
    """int32 chunk boundaries, as transformers' get_vision_cu_seqlens computes them."""
    return torch.from_numpy(np.concatenate([[0], np.cumsum(chunk_lengths(grids))]).astype(np.int32))


def vision_position_ids(grids, merge=MERGE):
    """(patches, 2) int64 (row, column) of every patch in the merged-block order, as
    transformers' get_vision_position_ids computes them."""
    out = []
    for t, h, w in grids:
        hp, wp = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        hp = hp.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        wp = wp.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([hp, wp], 1), (int(t), 1)))
    return torch.from_numpy(np.concatenate(out).astype(np.int64))

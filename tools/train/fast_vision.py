"""tools/train/fast_vision.py — batched attention for the Qwen2-VL vision tower.

Without flash-attn, transformers' VisionAttention runs one SDPA call per attention chunk
(one per image, one per temporal step of a video): a batch of 48 videos makes about 200
calls per layer, forward and backward, and the launch overhead dominates a tiny tower on
a GPU. This replaces the forward of every VisionAttention of one model (instance
attributes, the class is not touched) with the same computation done as a few padded
SDPA calls: chunks are sorted by length and grouped so that a group's longest chunk is at
most GROUP_SLACK times its shortest; a group of equal lengths needs no mask, the others get
a key-padding mask. The weights and their names are unchanged.

    install(model)      patch a Qwen2VLForConditionalGeneration in place (returns it)
check.py compares outputs and gradients with transformers' own loop.
"""

import types

import torch
import torch.nn.functional as F

GROUP_SLACK = 1.3


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


_plan_cache = {"key": None, "cu": None, "plan": None}


def _plan(cu_seqlens, device):
    """Per group: (gather index (G, S), valid mask (G, S), SDPA mask or None). Every block of
    one forward gets the same cu_seqlens tensor, so the plan (and the one host sync it
    costs) is made once per forward."""
    c = _plan_cache
    if c["cu"] is cu_seqlens and c["key"] == (cu_seqlens.data_ptr(), cu_seqlens.shape[0]):
        return c["plan"]
    starts = cu_seqlens[:-1].tolist()
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    plan = []
    for g in _groups(lengths):
        ln = [lengths[i] for i in g]
        s = max(ln)
        st = torch.tensor([starts[i] for i in g], device=device)
        lt = torch.tensor(ln, device=device)
        ar = torch.arange(s, device=device)
        valid = ar[None, :] < lt[:, None]                          # (G, S)
        idx = torch.where(valid, st[:, None] + ar[None, :], st[:, None])
        mask = None if min(ln) == s else valid[:, None, None, :]
        plan.append((idx, valid, idx[valid], mask))
    c.update(key=(cu_seqlens.data_ptr(), cu_seqlens.shape[0]), cu=cu_seqlens, plan=plan)
    return plan


def chunked_attention(q, k, v, cu_seqlens, scale):
    """q, k, v: (heads, N, d); attention within each [cu[i], cu[i+1]) chunk. -> (N, heads, d)"""
    h, n, d = q.shape
    out = q.new_zeros((h, n, d))
    heads = torch.arange(h, device=q.device)[:, None]
    for idx, valid, flat_idx, mask in _plan(cu_seqlens, q.device):
        qg, kg, vg = (t[:, idx].transpose(0, 1) for t in (q, k, v))  # (G, H, S, d)
        og = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, scale=scale)
        out = out.index_put((heads, flat_idx[None, :]), og.transpose(0, 1)[:, valid])
    return out.transpose(0, 1)


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

"""tools/train/aux.py — a dense auxiliary target for the vision tower (training only).

Why. Trained only through the language model's answer loss, the vision tower learnt colour
and count but not shape: shape questions stayed at chance after 739k examples (RUNS.md).
On the CPU, a 2-layer tower trained directly on per-token labels does learn shape, slowly
but steadily. So every merged vision token gets labels from the scene's ground truth and a
linear head on the tower's output (the merged tokens the language model reads) predicts
them; its cross-entropy is added to the answer loss with a weight (train.py --aux-weight).
The head is not part of the exported model.

Labels of a merged token (a 28x28 block of the resized frame, at the first frame of its
temporal pair), one row per token in the order the tower emits them (t, h/2, w/2):
    shape    0 background (no object pixel in the block), 1 + scene.SHAPES index of the
             object that covers most of the block when it covers >= MIN_COVER of it,
             IGNORE otherwise (a sliver of an object)
    colour   the same, with 1 + scene.COLOUR_NAMES index
    motion   videos: for object tokens, 0 still, 1 + scene.DIRECTIONS index of where the
             object is heading at that frame (after any bounce); IGNORE for background,
             slivers and images

    token_labels(scene, size, sample_frames)   -> int64 (tokens, 3)
    Head(dim)                                   the linear head (shape, colour, motion logits)
    loss(head, vis, labels)                     -> (weighted cross-entropy sum of the three,
                                                    shape accuracy on object tokens)
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shapes import render  # noqa: E402
from shapes import scene as scn  # noqa: E402

IGNORE = -100
MIN_COVER = 0.15
BLOCK = 28                   # pixels of a merged token (patch 14 x merge 2)
N_SHAPE = 1 + len(scn.SHAPES)
N_COLOUR = 1 + len(scn.COLOUR_NAMES)
N_MOTION = 1 + len(scn.DIRECTIONS)
BG_WEIGHT = 0.1              # background tokens outnumber object tokens about 10 to 1


def _heading(scene, o, f):
    """0 still, else 1 + DIRECTIONS index of the direction the object moves at frame f."""
    if o["axis"] is None:
        return 0
    x0, y0 = scn.position(scene, o, f)
    x1, y1 = scn.position(scene, o, f + 0.25)
    if o["axis"] == "x":
        d = "right" if float(x1) > float(x0) else "left"
    else:
        d = "down" if float(y1) > float(y0) else "up"
    return 1 + scn.DIRECTIONS.index(d)


def token_labels(scene, size, frames):
    """scene: a scene dict; size: (rh, rw) the model's frame size (multiples of 28); frames:
    the sampled frame indices (an image: [0]). -> int64 (T * rh/28 * rw/28, 3)."""
    h, w = scene["height"], scene["width"]
    rh, rw = size
    gh, gw = rh // BLOCK, rw // BLOCK
    # pixel centres of the resized frame, in the file's coordinates
    xs = (np.arange(rw) + 0.5) * (w / rw)
    ys = (np.arange(rh) + 0.5) * (h / rh)
    pairs = list(frames[0::2])
    out = np.full((len(pairs), gh * gw, 3), IGNORE, np.int64)
    video = scene["kind"] == "video"
    for t, f in enumerate(pairs):
        cover = np.zeros((len(scene["objects"]) + 1, gh * gw), np.float32)
        for k, o in enumerate(scene["objects"]):
            if not scn.visible(o, f):
                continue
            cx, cy = (float(v) for v in scn.position(scene, o, f))
            ext = scn.EXTENT * o["r"] + 1
            xa, xb = np.searchsorted(xs, cx - ext), np.searchsorted(xs, cx + ext)
            ya, yb = np.searchsorted(ys, cy - ext), np.searchsorted(ys, cy + ext)
            if xa >= xb or ya >= yb:
                continue
            m = np.zeros((rh, rw), np.float32)
            m[ya:yb, xa:xb] = render.shape_mask(o["shape"], o["r"], (xs[xa:xb] - cx)[None, :],
                                                (ys[ya:yb] - cy)[:, None])
            cover[k + 1] = m.reshape(gh, BLOCK, gw, BLOCK).mean((1, 3)).reshape(-1)
        any_obj = cover[1:].sum(0) > 0
        best = cover[1:].argmax(0)
        strong = cover[1:].max(0) >= MIN_COVER
        lab = out[t]
        lab[~any_obj, 0] = 0
        lab[~any_obj, 1] = 0
        for k, o in enumerate(scene["objects"]):
            sel = strong & (best == k)
            if not sel.any():
                continue
            lab[sel, 0] = 1 + scn.SHAPES.index(o["shape"])
            lab[sel, 1] = 1 + scn.COLOUR_NAMES.index(o["colour"])
            if video:
                lab[sel, 2] = _heading(scene, o, f)
    return out.reshape(-1, 3)


class Head(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = torch.nn.Linear(dim, N_SHAPE + N_COLOUR + N_MOTION)

    def forward(self, x):
        return self.proj(x)


def loss(head, vis, labels):
    """vis: (tokens, dim) the tower's merged output rows; labels: (tokens, 3) int64."""
    z = head(vis).float()
    zs, zc, zm = z.split([N_SHAPE, N_COLOUR, N_MOTION], 1)
    ws = torch.ones(N_SHAPE, device=z.device)
    ws[0] = BG_WEIGHT
    wc = torch.ones(N_COLOUR, device=z.device)
    wc[0] = BG_WEIGHT
    ls = F.cross_entropy(zs, labels[:, 0], weight=ws, ignore_index=IGNORE)
    lc = F.cross_entropy(zc, labels[:, 1], weight=wc, ignore_index=IGNORE)
    mm = labels[:, 2] != IGNORE
    # no motion labels in an image batch: a zero that keeps the graph (no host sync)
    lm = F.cross_entropy(zm, labels[:, 2].clamp(min=0), reduction="none")
    lm = (lm * mm).sum() / mm.sum().clamp(min=1)
    obj = labels[:, 0] > 0
    acc = ((zs.argmax(1) == labels[:, 0]) & obj).sum() / obj.sum().clamp(min=1)
    return ls + lc + lm, acc

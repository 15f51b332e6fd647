"""tools/train/mrope.py — Qwen2-VL M-RoPE positions by the original rule.

transformers 5.x computes the positions of text after a video differently from the rule
the Qwen2-VL models were trained with and vidi implements (see
shared/reference/fidelity-notes.md): after a vision block it advances by max(h/2, w/2)
only, ignoring the temporal extent. Training and evaluation therefore compute positions
here and pass them to the model explicitly (position_ids of shape (3, batch, length)).

Original rule (Qwen2-VL): text tokens get the same value on all three axes, continuing
from the previous maximum + 1; a vision block starting after position s gets
(t, h, w) = s + (temporal index, row, column) over the merged grid; the text after it
starts at the block's maximum + 1.

    positions(ids, grids, image_id, video_id) -> (int64 array (3, L), rope_delta)
Decoding: generated token k (0-based) after a prompt of length L sits at L + k + rope_delta
on all three axes. check.py compares this with tests/data/golden (the engine's reference).
"""

import numpy as np


def positions(ids, grids, image_id, video_id, merge=2):
    ids = np.asarray(ids)
    n = len(ids)
    pos = np.zeros((3, n), np.int64)
    nxt = 0
    i = 0
    gi = 0
    while i < n:
        if ids[i] == image_id or ids[i] == video_id:
            gt, gh, gw = grids[gi]
            gi += 1
            h2, w2 = gh // merge, gw // merge
            m = gt * h2 * w2
            assert (ids[i:i + m] == ids[i]).all(), "pad run shorter than its grid"
            t = np.repeat(np.arange(gt), h2 * w2)
            r = np.tile(np.repeat(np.arange(h2), w2), gt)
            c = np.tile(np.arange(w2), gt * h2)
            pos[0, i:i + m] = nxt + t
            pos[1, i:i + m] = nxt + r
            pos[2, i:i + m] = nxt + c
            nxt = int(pos[:, i:i + m].max()) + 1
            i += m
        else:
            pos[:, i] = nxt
            nxt += 1
            i += 1
    assert gi == len(grids), "more grids than vision blocks"
    return pos, int(pos.max()) + 1 - n if n else 0

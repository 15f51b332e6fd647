"""tools/shapes/scene.py — deterministic scenes of coloured shapes (numpy only).

A scene is a plain JSON-able dict, fully determined by (seed, kind):

    {"seed", "kind": "image" | "video", "width", "height", "background": [r, g, b],
     "fps", "n_frames",                       # images: fps 0, n_frames 1
     "sample_idx": [...],                     # the frames vidi/qwen-vl-utils sample (fps 2)
     "objects": [{"colour", "shape", "r",     # r: half extent in pixels
                  "x0", "y0",                 # centre at frame 0 (unbounded along the axis)
                  "axis": null | "x" | "y", "v": pixels per frame (signed),
                  "appear": first frame present, "disappear": first frame absent or null}]}

Motion is along one axis at constant speed, reflected at the walls (a bounce).
Everything the questions ask is computed from this ground truth by the helpers below
(position, visibility, direction, bounce), so the questions and the pixels agree.

Design rules that keep answers unambiguous on what the model sees:
  * every (colour, shape) pair is unique in a scene, so "the red circle" names one object;
  * objects never touch or overlap on any file frame (rejection sampling);
  * only still objects appear or disappear, and only at a temporal-patch boundary of the
    sampled frames (pairs of sampled frames are merged into one temporal token): the
    object is absent in every sampled frame before the event and present in every one
    after it (or the reverse), and each side spans at least one whole pair;
  * a moving object travels at least a third of its free range between the first and
    last sampled frame; a bouncing one turns once, in the middle third of the span.

Videos have 8-64 frames at 4-8 fps, so qwen-vl-utils samples 4-16 frames (2-8 s),
even sizes (H.264 yuv420p), at most 336*336 pixels (about 128-150 merged tokens per
pair of frames after smart_resize). Images are 64-448 per side.

Usage: from shapes.scene import make_scene; s = make_scene(1234, "video")
"""

import numpy as np

from . import qwen_rules

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (40, 90, 235),
    "yellow": (245, 215, 35),
    "purple": (150, 55, 195),
    "orange": (250, 135, 25),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross"]
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
          "diamond": "diamonds", "cross": "crosses"}
DIRECTIONS = ["left", "right", "up", "down"]

VIDEO_FPS = [4, 5, 6, 8]
# sampled frame counts and their weights (4-16 frames = 2-8 s at 2 fps)
VIDEO_NFRAMES = [4, 6, 8, 10, 12, 16]
VIDEO_NFRAMES_P = [0.30, 0.27, 0.23, 0.08, 0.07, 0.05]
VIDEO_MAX_AREA = 336 * 336
IMAGE_MAX_AREA = 448 * 448
MIN_SIDE, MAX_SIDE = 64, 448
MAX_ASPECT = 4.0
N_OBJECTS_P = [0.18, 0.24, 0.24, 0.19, 0.15]       # 1..5 objects
N_MOVERS_P = [0.22, 0.53, 0.25]                    # 0..2 moving objects (videos)
# (appearing, disappearing) still objects in a video
EVENTS = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2)]
EVENTS_P = [0.38, 0.24, 0.20, 0.10, 0.05, 0.03]
P_BOUNCE = 0.3
EXTENT = 1.2        # circumradius of any shape is at most EXTENT * r (star tips: 1.15 r)


def _choice(rng, n, p):
    return int(rng.choice(n, p=np.asarray(p, float) / np.sum(p)))


def _canvas(rng, kind):
    """Width and height: uniform sides in [64, 448], area and aspect limited; even for video."""
    max_area = VIDEO_MAX_AREA if kind == "video" else IMAGE_MAX_AREA
    while True:
        w = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
        h = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
        if kind == "video":
            w, h = w & ~1, h & ~1
        if w * h <= max_area and max(w, h) / min(w, h) <= MAX_ASPECT:
            return w, h


def _video_timing(rng, n_sampled=None):
    """(fps, total frames, sampled indices) with 8..64 frames and 4..16 sampled (exactly
    n_sampled when given: training draws its frame counts itself, see make_scene)."""
    while True:
        fps = VIDEO_FPS[int(rng.integers(len(VIDEO_FPS)))]
        if n_sampled is None:
            n = VIDEO_NFRAMES[_choice(rng, len(VIDEO_NFRAMES), VIDEO_NFRAMES_P)]
        else:
            n = int(n_sampled)
        # total/fps*2 in [n, n+2)  <=>  total in [n*fps/2, (n+2)*fps/2)
        lo = max(8, int(np.ceil(n * fps / 2)))
        hi = min(64, int(np.ceil((n + 2) * fps / 2)) - 1)
        if lo > hi:
            continue
        total = int(rng.integers(lo, hi + 1))
        if qwen_rules.smart_nframes(total, fps) != n:
            continue
        return fps, total, qwen_rules.frame_indices(total, n)


def reflect(q, lo, hi):
    """Position of a point moving freely to q, reflected into [lo, hi] (triangle wave)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(np.asarray(q, float), (lo + hi) / 2)
    m = np.mod(np.asarray(q, float) - lo, 2 * span)
    return lo + np.where(m <= span, m, 2 * span - m)


def bounds(scene, o):
    """[lo, hi] range of the centre along the object's axis."""
    side = scene["width"] if o["axis"] == "x" else scene["height"]
    return o["r"] * EXTENT, side - o["r"] * EXTENT


def position(scene, o, f):
    """Centre (x, y) of object o at frame(s) f (float arrays)."""
    f = np.asarray(f, float)
    x = np.full_like(f, o["x0"])
    y = np.full_like(f, o["y0"])
    if o["axis"] is not None:
        lo, hi = bounds(scene, o)
        if o["axis"] == "x":
            x = reflect(o["x0"] + o["v"] * f, lo, hi)
        else:
            y = reflect(o["y0"] + o["v"] * f, lo, hi)
    return x, y


def visible(o, f):
    f = np.asarray(f)
    vis = f >= o["appear"]
    if o["disappear"] is not None:
        vis &= f < o["disappear"]
    return vis


def bounces(scene, o):
    """Number of wall reflections between the first and the last sampled frame."""
    if o["axis"] is None:
        return 0
    lo, hi = bounds(scene, o)
    p0 = o["x0"] if o["axis"] == "x" else o["y0"]
    idx = scene["sample_idx"]
    q0, q1 = p0 + o["v"] * idx[0], p0 + o["v"] * idx[-1]
    k0, k1 = np.floor((q0 - lo) / (hi - lo)), np.floor((q1 - lo) / (hi - lo))
    return int(abs(k1 - k0))


def direction(o):
    """Initial direction of a moving object: left / right / up / down (image y grows down)."""
    if o["axis"] == "x":
        return "right" if o["v"] > 0 else "left"
    return "down" if o["v"] > 0 else "up"


def _mover(rng, scene, o, bounce):
    """Give object o a motion along a random axis; the centre covers a third or more of
    its range over the sampled span, and turns once in the middle third if bounce."""
    span = scene["sample_idx"][-1] - scene["sample_idx"][0]
    o["axis"] = "x" if rng.random() < 0.5 else "y"
    lo, hi = bounds(scene, o)
    length = hi - lo
    sign = 1.0 if rng.random() < 0.5 else -1.0
    other_side = scene["height"] if o["axis"] == "x" else scene["width"]
    other = float(rng.uniform(o["r"] * EXTENT, other_side - o["r"] * EXTENT))
    if not bounce:
        d = float(rng.uniform(0.35, 0.8)) * length
        start = float(rng.uniform(lo, hi - d)) if sign > 0 else float(rng.uniform(lo + d, hi))
    else:
        tau = float(rng.uniform(0.35, 0.65))             # fraction of the span at the bounce
        to_wall = float(rng.uniform(0.25, 0.4)) * length
        d = to_wall / tau                                 # total travel, turning once
        start = hi - to_wall if sign > 0 else lo + to_wall
        if to_wall * (1 - tau) / tau > 0.95 * length:     # would reach the other wall
            return False
    o["v"] = sign * d / span
    p0 = start - o["v"] * scene["sample_idx"][0]
    if o["axis"] == "x":
        o["x0"], o["y0"] = p0, other
    else:
        o["x0"], o["y0"] = other, p0
    return True


def _clear(scene, objs):
    """True when no two objects come closer than their extents (+2 px) on any frame."""
    frames = np.arange(scene["n_frames"])
    pos = [position(scene, o, frames) for o in objs]
    vis = [visible(o, frames) for o in objs]
    for i in range(len(objs)):
        for j in range(i):
            both = vis[i] & vis[j]
            if not both.any():
                continue
            d = np.hypot(pos[i][0] - pos[j][0], pos[i][1] - pos[j][1])
            if (d[both] < EXTENT * (objs[i]["r"] + objs[j]["r"]) + 2).any():
                return False
    return True


def _events(rng, scene, objs):
    """Assign appear / disappear frames to still objects at temporal-pair boundaries."""
    idx = scene["sample_idx"]
    pairs = len(idx) // 2
    still = [o for o in objs if o["axis"] is None]
    n_app, n_dis = EVENTS[_choice(rng, len(EVENTS), EVENTS_P)]
    if pairs < 2 or n_app + n_dis == 0:
        return
    # keep at least one object that is there the whole time
    while n_app + n_dis > 0 and n_app + n_dis >= len(objs):
        if n_dis:
            n_dis -= 1
        else:
            n_app -= 1
    if n_app + n_dis > len(still):
        return
    order = rng.permutation(len(still))
    for k, oi in enumerate(order[:n_app + n_dis]):
        o = still[int(oi)]
        j = int(rng.integers(1, pairs))                   # first pair after the event
        f = int(rng.integers(idx[2 * j - 1] + 1, idx[2 * j] + 1))
        if k < n_app:
            o["appear"] = f
        else:
            o["disappear"] = f


def _pairs(rng, n):
    """n distinct (colour, shape) pairs; a new object shares its colour with an earlier one
    with probability 0.25 and its shape with probability 0.25 (so that counts above one
    and ambiguous references occur often enough)."""
    out = []
    while len(out) < n:
        u = rng.random()
        c = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
        s = SHAPES[int(rng.integers(len(SHAPES)))]
        if out and u < 0.25:
            c = out[int(rng.integers(len(out)))][0]
        elif out and u < 0.5:
            s = out[int(rng.integers(len(out)))][1]
        if (c, s) not in out:
            out.append((c, s))
    return out


def make_scene(seed, kind, n_sampled=None):
    """The scene of (seed, kind). kind is "image" or "video". n_sampled (videos only, one
    of VIDEO_NFRAMES): make a video whose sampled frame count is n_sampled instead of
    drawing it from VIDEO_NFRAMES_P (tools/train batches videos of equal length); the
    scene of (seed, kind) without it is unchanged, and one with it is a different scene."""
    assert kind in ("image", "video"), kind
    assert n_sampled is None or (kind == "video" and n_sampled in VIDEO_NFRAMES), n_sampled
    if n_sampled is None:
        rng = np.random.default_rng([int(seed), 0 if kind == "image" else 1])
    else:
        rng = np.random.default_rng([int(seed), 2, int(n_sampled)])
    w, h = _canvas(rng, kind)
    tint = rng.integers(-12, 13, 3)
    grey = int(rng.integers(95, 156))
    bg = [int(np.clip(grey + t, 0, 255)) for t in tint]
    scene = {"seed": int(seed), "kind": kind, "width": w, "height": h, "background": bg,
             "fps": 0, "n_frames": 1, "sample_idx": [0], "objects": []}
    if kind == "video":
        fps, total, idx = _video_timing(rng, n_sampled)
        scene.update(fps=fps, n_frames=total, sample_idx=idx)

    n_obj = 1 + _choice(rng, 5, N_OBJECTS_P)
    n_mov = _choice(rng, 3, N_MOVERS_P) if kind == "video" else 0
    scale = 1.0
    for attempt in range(400):
        if attempt and attempt % 80 == 0:      # crowded: fewer objects, then smaller ones
            if n_obj > 1:
                n_obj -= 1
            else:
                scale *= 0.8
        pairs = _pairs(rng, n_obj)
        base = np.sqrt(w * h)
        r_hi = max(7.0, 0.2 * min(w, h)) * scale
        objs = []
        for c, s in pairs:
            r = float(np.clip(rng.uniform(0.065, 0.11) * base * scale, 7.0 * min(scale, 1.0), r_hi))
            o = {"colour": c, "shape": s, "r": round(r, 3),
                 "x0": float(rng.uniform(r * EXTENT, w - r * EXTENT)),
                 "y0": float(rng.uniform(r * EXTENT, h - r * EXTENT)),
                 "axis": None, "v": 0.0, "appear": 0, "disappear": None}
            objs.append(o)
        ok = True
        for o in objs[:n_mov]:
            bounce = len(scene["sample_idx"]) >= 6 and rng.random() < P_BOUNCE
            ok &= _mover(rng, scene, o, bounce)
        if kind == "video":
            _events(rng, scene, objs)
        if ok and _clear(scene, objs):
            break
    else:
        raise RuntimeError(f"could not place shapes for seed {seed}")
    # round the stored numbers so the JSON is short and the render uses the same values
    for o in objs:
        o["x0"], o["y0"], o["v"] = round(o["x0"], 3), round(o["y0"], 3), round(o["v"], 5)
    scene["objects"] = objs
    return scene


def name(o):
    return f"{o['colour']} {o['shape']}"

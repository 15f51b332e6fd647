"""tools/shapes/render.py — scenes to uint8 pixels (numpy only, no anti-aliasing).

    render_frame(scene, f)          -> (H, W, 3) uint8, frame f of the scene
    render_frames(scene, frames)    -> (T, H, W, 3) uint8
    render(scene)                   -> an image: (H, W, 3); a video: every frame (T, H, W, 3)

A pixel belongs to a shape when its centre (x + 0.5, y + 0.5) lies inside the shape's
outline. Shapes are sized by their half extent r (scene.py): circle radius r, square
half side 0.84 r, triangle / star / diamond circumradius 1.15 r, cross arms 1.05 r long
and 0.36 r wide, so that every shape stays within scene.EXTENT * r of its centre.
"""

import numpy as np

from . import scene as scn


def _regular(n, radius, phase):
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def _outline(shape, r):
    """Polygon vertices (k, 2) relative to the centre, or None for the circle / cross."""
    if shape == "square":
        s = 0.84 * r
        return np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    if shape == "triangle":              # pointing up (y grows down)
        return _regular(3, 1.15 * r, -np.pi / 2)
    if shape == "diamond":
        return _regular(4, 1.15 * r, -np.pi / 2)
    if shape == "star":                  # five points, inner radius 0.45 of the outer
        outer = _regular(5, 1.15 * r, -np.pi / 2)
        inner = _regular(5, 0.45 * 1.15 * r, -np.pi / 2 + np.pi / 5)
        return np.stack([outer, inner], 1).reshape(10, 2)
    return None


def _inside_polygon(px, py, poly):
    """Even-odd rule for points (px, py) (broadcast arrays) and polygon vertices."""
    inside = np.zeros(np.broadcast(px, py).shape, bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (py >= min(y1, y2)) & (py < max(y1, y2))
        xi = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < xi)
    return inside


def shape_mask(shape, r, dx, dy):
    """Boolean mask of a shape for offsets (dx, dy) of pixel centres from its centre."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "cross":
        arm, half = 1.05 * r, 0.36 * r
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= half) & (ay <= arm)) | ((ay <= half) & (ax <= arm))
    return _inside_polygon(dx, dy, _outline(shape, r))


def render_frame(scene, f):
    h, w = scene["height"], scene["width"]
    img = np.empty((h, w, 3), np.uint8)
    img[:] = np.asarray(scene["background"], np.uint8)
    for o in scene["objects"]:
        if not scn.visible(o, f):
            continue
        cx, cy = scn.position(scene, o, f)
        cx, cy = float(cx), float(cy)
        ext = scn.EXTENT * o["r"] + 1
        x0, x1 = max(0, int(np.floor(cx - ext))), min(w, int(np.ceil(cx + ext)) + 1)
        y0, y1 = max(0, int(np.floor(cy - ext))), min(h, int(np.ceil(cy + ext)) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]
        dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]
        m = shape_mask(o["shape"], o["r"], dx, dy)
        img[y0:y1, x0:x1][m] = scn.COLOURS[o["colour"]]
    return img


def render_frames(scene, frames):
    return np.stack([render_frame(scene, int(f)) for f in frames])


def render(scene):
    if scene["kind"] == "image":
        return render_frame(scene, 0)
    return render_frames(scene, range(scene["n_frames"]))

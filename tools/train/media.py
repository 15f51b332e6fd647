"""tools/train/media.py — scene pixels to model inputs, as vidi's media stage makes them.

The path a served file takes in vidi (and in qwen-vl-utils + transformers):
  video: decode -> sample frames (fps 2, qwen_rules.smart_nframes / frame_indices)
         -> resize every frame to qwen_rules.video_resized_size (torchvision bicubic,
            antialias, on uint8: float math, then clamp and round to uint8)
         -> rescale 1/255, normalise (CLIP mean/std) -> patchify (HF Qwen2-VL layout)
  image: decode -> smart_resize with the model's min/max_pixels (Pillow bicubic)
         -> rescale, normalise -> patchify (the frame repeated over the temporal patch)

Training renders a scene only at the frames that would be sampled, at the file's size,
and optionally degrades it the way lossy codecs do (codec_augment), in the data-loader
workers; then resizes and patchifies it with torch on the GPU. Images use torch's bicubic
instead of Pillow's: the two differ by about one uint8 step at shape edges, which the
augmentation covers.

    video_raw(scene) / image_raw(scene) -> (uint8 (T, 3, H, W) at file size, (rh, rw))
    augment_params(rng, kind)          -> codec degradation parameters or None
    model_frames(raw, size, aug)       -> uint8 (T, 3, rh, rw): degrade, then resize
    video_frames / image_frames(scene, rng, augment)  all of the above on the CPU
    resize_uint8(x, rh, rw)            torchvision-equal bicubic antialias resize of uint8 TCHW
    patchify(frames_uint8)             -> (float32 patches (t*h*w, 1176), grid (t, h, w))
    batch_patches(flat, shapes, sizes) a training batch's frames -> pixel values (resize,
                                       patch_layout, normalize_patches: patchify split up)
All of these run on any device. train.py degrades frames in the data-loader workers (CPU)
and resizes / patchifies the batch on the GPU.
check.py compares resize_uint8 with torchvision and patchify with transformers' processors.
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shapes import qwen_rules as qr  # noqa: E402
from shapes import render  # noqa: E402

import model_config  # noqa: E402

PATCH = 14
MERGE = 2
TEMPORAL = 2
MEAN = torch.tensor(model_config.CLIP_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(model_config.CLIP_STD).view(1, 3, 1, 1)


def resize_uint8(x, rh, rw):
    """x: uint8 (T, 3, H, W) -> uint8 (T, 3, rh, rw), as torchvision's resize(BICUBIC,
    antialias=True) computes it for uint8 tensors (bit-equal on the CPU; on CUDA a rare
    pixel may round the other way)."""
    if x.shape[-2:] == (rh, rw):
        return x.clone()
    y = F.interpolate(x.float(), size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
    return y.clamp_(0, 255).round_().to(torch.uint8)


def patchify(frames):
    """uint8 (T, 3, H, W), H and W multiples of 28 -> (patches f32 (gt*gh*gw, 3*2*14*14), grid).
    An odd frame count repeats the last frame (a single image becomes two equal frames)."""
    x = frames.float() * (1.0 / 255.0)
    x = (x - MEAN.to(x.device)) / STD.to(x.device)
    return patch_layout(x), grid_of(frames)


def augment_params(rng, kind):
    """Random codec-like degradation for one example (None: leave it clean). Videos are
    always lossy (H.264 / VP9, 4:2:0); images are jpg about half of the time."""
    if kind == "image" and rng.random() >= 0.6:
        return None
    return {"chroma": bool(rng.random() < (0.8 if kind == "image" else 0.7)),
            "blur": bool(rng.random() < (0.15 if kind == "image" else 0.25)),
            "sigma": float(rng.uniform(0.0, 2.5 if kind == "image" else 3.0)),
            "seed": int(rng.integers(2 ** 62))}


NOISE_BANK = 1 << 22        # luma noise values shared by all examples (per process and device)
_NOISE = {}


def _noise(n, seed, device):
    """n standard normal values for one example: a slice at a seed-chosen offset of a fixed
    bank (drawing fresh ones per example was a third of the worker's time)."""
    if n > NOISE_BANK // 2:
        gen = torch.Generator(device=device).manual_seed(seed)
        return torch.randn(n, generator=gen, device=device)
    key = str(device)
    if key not in _NOISE:
        gen = torch.Generator(device=device).manual_seed(20_250_505)
        _NOISE[key] = torch.randn(NOISE_BANK, generator=gen, device=device)
    off = seed % (NOISE_BANK - n + 1)
    return _NOISE[key][off:off + n]


def codec_augment(x, p):
    """Degrade uint8 (T, 3, H, W) frames roughly as JPEG / H.264 / VP9 at good quality do:
    4:2:0 chroma (2x2 averaged, repeated back), luma noise, sometimes a slight [1 2 1] blur.
    Runs on x's device (train.py: in the data-loader workers); the noise is chosen by
    p["seed"]."""
    f = x.float()
    r, g, b = f.unbind(1)
    y = r * 0.299
    y.add_(g, alpha=0.587).add_(b, alpha=0.114)
    t, h, w = y.shape
    c2 = torch.empty((t, 2, h, w), device=x.device)
    torch.mul(r, -0.168736, out=c2[:, 0])
    c2[:, 0].add_(g, alpha=-0.331264).add_(b, alpha=0.5)
    torch.mul(r, 0.5, out=c2[:, 1])
    c2[:, 1].add_(g, alpha=-0.418688).add_(b, alpha=-0.081312)
    if p["chroma"] and h >= 2 and w >= 2:
        hh, ww = h - h % 2, w - w % 2
        q = c2[:, :, 0:hh:2, 0:ww:2] + c2[:, :, 0:hh:2, 1:ww:2]
        q.add_(c2[:, :, 1:hh:2, 0:ww:2]).add_(c2[:, :, 1:hh:2, 1:ww:2]).mul_(0.25)
        for dy in (0, 1):
            for dx in (0, 1):
                c2[:, :, dy:hh:2, dx:ww:2] = q
    cb, cr = c2[:, 0], c2[:, 1]
    if p["blur"]:                        # [1 2 1] / 4 along x, then y; edges replicated
        yy = F.pad(y[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        yy = 0.25 * yy[:, :, :-2] + 0.5 * yy[:, :, 1:-1] + 0.25 * yy[:, :, 2:]
        y = 0.25 * yy[:, :-2] + 0.5 * yy[:, 1:-1] + 0.25 * yy[:, 2:]
    if p["sigma"] > 0:
        y.add_(_noise(y.numel(), p["seed"], x.device).view(y.shape), alpha=p["sigma"])
    out = f                              # reuse the float frames' memory
    torch.add(y, cr, alpha=1.402, out=out[:, 0])
    torch.add(y, cb, alpha=-0.344136, out=out[:, 1])
    out[:, 1].add_(cr, alpha=-0.714136)
    torch.add(y, cb, alpha=1.772, out=out[:, 2])
    return out.clamp_(0, 255).round_().to(torch.uint8)


def resize_float(x, size):
    """resize_uint8 without the final uint8 cast: float32 (T, 3, rh, rw) holding the same
    integer values (x: uint8 or float32 holding integers)."""
    rh, rw = size
    if x.shape[-2:] == (rh, rw):
        return x.float()
    y = F.interpolate(x.float(), size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
    return y.clamp_(0, 255).round_()


def patch_layout(x):
    """(T, 3, H, W) -> (gt*gh*gw, 3*2*14*14) in patchify's order, values unchanged (no
    normalisation); an odd frame count repeats the last frame."""
    t, c, h, w = x.shape
    if t % TEMPORAL:
        x = torch.cat([x, x[-1:].expand(TEMPORAL - t % TEMPORAL, -1, -1, -1)], 0)
        t = x.shape[0]
    gt, gh, gw = t // TEMPORAL, h // PATCH, w // PATCH
    x = x.view(gt, TEMPORAL, c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * TEMPORAL * PATCH * PATCH)


_COL = {}


def normalize_patches(x):
    """Float patches holding 0..255 (patch_layout) -> model input: the same arithmetic as
    patchify, per column (the channel of column k is k // 392), so bit-equal to it."""
    key = x.device
    if key not in _COL:
        ch = torch.arange(3 * TEMPORAL * PATCH * PATCH) // (TEMPORAL * PATCH * PATCH)
        _COL[key] = (MEAN.view(3)[ch].to(x.device), STD.view(3)[ch].to(x.device))
    mean, std = _COL[key]
    return (x * (1.0 / 255.0) - mean) / std


def batch_patches(flat, shapes, sizes):
    """A training batch's raw frames (one flat uint8 buffer, per-example (T, 3, H, W) shapes
    and target sizes; already degraded by the data-loader worker) -> resized, patchified,
    normalised pixel values of all examples, concatenated: per example only a resize and a
    copy, so a batch costs a few hundred small kernels on a GPU. Equal to
    cat([patchify(resize_uint8(x, *size))[0] for each example])."""
    flat = flat.float()
    out, o = [], 0
    for shp, size in zip(shapes, sizes):
        n = shp[0] * shp[1] * shp[2] * shp[3]
        out.append(patch_layout(resize_float(flat[o:o + n].view(shp), size)))
        o += n
    return normalize_patches(torch.cat(out) if len(out) > 1 else out[0])


def model_frames(raw, size, aug=None):
    """Raw uint8 (T, 3, H, W) frames at file size -> optional codec degradation -> resized
    uint8 (T, 3, rh, rw). Device-agnostic (held-out items and checks run it on the CPU)."""
    x = codec_augment(raw, aug) if aug is not None else raw
    return resize_uint8(x, *size)


def video_raw(scene):
    """The sampled frames at file size, uint8 (T, 3, H, W), and the model's frame size."""
    frames = render.render_frames(scene, scene["sample_idx"])
    size = qr.video_resized_size(scene["height"], scene["width"], len(scene["sample_idx"]))
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), size


def image_raw(scene, min_pixels=None, max_pixels=None):
    frame = render.render_frame(scene, 0)[None]
    size = qr.smart_resize(scene["height"], scene["width"], min_pixels or model_config.IMAGE_MIN_PIXELS,
                           max_pixels or model_config.IMAGE_MAX_PIXELS)
    return torch.from_numpy(frame).permute(0, 3, 1, 2).contiguous(), size


def video_frames(scene, rng=None, augment=False):
    raw, size = video_raw(scene)
    return model_frames(raw, size, augment_params(rng, "video") if augment else None)


def image_frames(scene, rng=None, augment=False):
    raw, size = image_raw(scene)
    return model_frames(raw, size, augment_params(rng, "image") if augment else None)


def grid_of(frames):
    t, _, h, w = frames.shape
    return grid_for(t, (h, w))


def grid_for(n_frames, size):
    return ((n_frames + TEMPORAL - 1) // TEMPORAL, size[0] // PATCH, size[1] // PATCH)

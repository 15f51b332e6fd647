"""tools/shapes/qwen_rules.py — which frames and what resolution a Qwen2-VL model sees.

A re-implementation (standard library only) of the qwen-vl-utils 0.0.14 rules that
vidi's media stage follows (media/video.c, media/preprocess.c), so that the scene
generator can place events on the frames the model will see and the training
pipeline can feed the model exactly what vidi feeds it, without qwen-vl-utils,
Pillow or ffmpeg (the GPU host has none of them).

  smart_nframes(total, video_fps)      how many frames are sampled (fps 2.0, >= 4, even)
  frame_indices(total, n)              which ones: round(linspace(0, total-1, n)), ties to even
  smart_resize(h, w, min_px, max_px)   the resized frame/image size (multiples of 28)
  video_pixel_bounds(n)                the per-frame [min_pixels, max_pixels] for n sampled frames
  video_resized_size(h, w, n)          smart_resize with those bounds
  merged_tokens(grid)                  LLM tokens of a (t, h, w) patch grid

tools/train/check.py compares these with qwen_vl_utils and torch.linspace on the CPU.
"""

import math

FACTOR = 28                      # patch_size 14 x spatial merge 2
FPS = 2.0                        # sampling rate
FRAME_FACTOR = 2                 # temporal patch size: frame counts are even
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * FACTOR * FACTOR          # 100352
VIDEO_MAX_PIXELS = 768 * FACTOR * FACTOR          # 602112
VIDEO_TOTAL_PIXELS = 128000 * FACTOR * FACTOR * 0.9
MAX_RATIO = 200


def _round_by(x, f):
    return round(x / f) * f      # Python round: half to even, as qwen-vl-utils


def _ceil_by(x, f):
    return math.ceil(x / f) * f


def _floor_by(x, f):
    return math.floor(x / f) * f


def smart_nframes(total_frames, video_fps, fps=FPS, min_frames=FPS_MIN_FRAMES, max_frames=FPS_MAX_FRAMES):
    """qwen_vl_utils.smart_nframes with `fps` given: total/video_fps*fps clamped to
    [ceil2(min_frames), floor2(min(max_frames, total))] and to total, floored to even."""
    lo = _ceil_by(min_frames, FRAME_FACTOR)
    hi = _floor_by(min(max_frames, total_frames), FRAME_FACTOR)
    n = total_frames / video_fps * fps
    n = min(min(max(n, lo), hi), total_frames)
    n = _floor_by(n, FRAME_FACTOR)
    if not (FRAME_FACTOR <= n <= total_frames):
        raise ValueError(f"nframes should be in [{FRAME_FACTOR}, {total_frames}], got {n}")
    return int(n)


def frame_indices(total_frames, n):
    """round(linspace(0, total-1, n)) with ties to even, the last index exactly total-1
    (vidi computes i * step in double; qwen-vl-utils uses torch.linspace in float32 —
    check.py confirms both agree for every (total, n) the generator uses)."""
    if n == 1:
        return [0]
    step = (total_frames - 1) / (n - 1)
    idx = [int(round(i * step)) for i in range(n)]
    idx[-1] = total_frames - 1
    return idx


def smart_resize(height, width, min_pixels, max_pixels, factor=FACTOR):
    """qwen_vl_utils.smart_resize: both sides multiples of `factor`, area within
    [min_pixels, max_pixels], aspect ratio kept as far as possible."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError("aspect ratio above 200")
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = _floor_by(height / beta, factor)
        w_bar = _floor_by(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
    return int(h_bar), int(w_bar)


def video_pixel_bounds(nframes):
    """qwen_vl_utils.fetch_video's per-frame pixel bounds with the defaults."""
    min_p = VIDEO_MIN_PIXELS
    max_p = max(min(VIDEO_MAX_PIXELS, VIDEO_TOTAL_PIXELS / nframes * FRAME_FACTOR), int(min_p * 1.05))
    return min_p, max_p


def video_resized_size(height, width, nframes):
    lo, hi = video_pixel_bounds(nframes)
    return smart_resize(height, width, lo, hi)


def video_grid(height, width, nframes, patch=14, temporal=2):
    rh, rw = video_resized_size(height, width, nframes)
    return ((nframes + temporal - 1) // temporal, rh // patch, rw // patch)


def image_grid(height, width, min_pixels, max_pixels, patch=14):
    rh, rw = smart_resize(height, width, min_pixels, max_pixels)
    return (1, rh // patch, rw // patch)


def merged_tokens(grid, merge=2):
    t, h, w = grid
    return t * (h // merge) * (w // merge)

#!/usr/bin/env python3
"""Media reference data for vidi's parity tests (issue 3).

    /opt/golden/bin/python tools/golden/media.py --out tests/data [--full DIR]

Writes (and first deletes):
  <out>/media/                      small sample files, made with the ffmpeg CLI (and Pillow
                                    for the image modes ffmpeg cannot write)
  <out>/golden/media/<case>/        manifest.json + pixel_values.npy per case
  <out>/golden/media/resize_cases.json + resize_*.npy

References:
  images  qwen-vl-utils fetch_image (Image.open -> to_rgb -> smart_resize(28) -> PIL resize
          BICUBIC) -> transformers Qwen2VLImageProcessorPil (do_resize=False).
  videos  PyAV decodes every frame in presentation order (to_ndarray rgb24), display-matrix
          rotation applied, frames chosen by the qwen-vl-utils 0.0.10 rules, torchvision
          resize(BICUBIC, antialias=True) on uint8 -> Qwen2VLVideoProcessor (do_resize=False,
          do_sample_frames=False).
pixel_values are large (12 bytes per pixel per frame), so a case stores all rows only when it
has at most FULL_ROWS of them; otherwise a fixed set of rows (listed in the manifest) plus the
sum and absolute sum of the whole array and md5s of the resized uint8 frames. `--full DIR`
also writes every case's complete pixel_values to DIR (not committed) for debugging.
Two runs give byte-identical files (checked with --check).
"""
import argparse
import hashlib
import importlib.metadata as md
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import av  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.transforms import InterpolationMode  # noqa: E402
from torchvision.transforms import functional as TF  # noqa: E402

import qwen_vl_utils.vision_process as qvu  # noqa: E402

torch.set_num_threads(1)

FULL_ROWS = 6
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMG_MIN_PIXELS = 3136
IMG_MAX_PIXELS = 12845056
VIDEO_MIN_PIXELS = 128 * 28 * 28  # 100352
VIDEO_MAX_PIXELS = 768 * 28 * 28  # 602112
VIDEO_TOTAL_PIXELS = 128000 * 28 * 28 * 0.9  # 90316800.0
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768

FF = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"]


# ----------------------------------------------------------------------------- helpers

def md5(b):
    return hashlib.md5(bytes(b)).hexdigest()


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def save_npy(path, arr, dtype):
    np.save(path, np.ascontiguousarray(np.asarray(arr).astype(dtype)), allow_pickle=False)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), r.stderr.decode(errors="replace")))
    return r.stdout


def ffmpeg_version():
    return run(["ffmpeg", "-version"]).decode().splitlines()[0]


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "av": md.version("av"),
        "av_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "qwen_vl_utils": md.version("qwen-vl-utils"),
        "ffmpeg_cli": ffmpeg_version(),
    }


def lavfi_rgb(src, w, h):
    """One frame of an ffmpeg test source as uint8 HxWx3."""
    ew, eh = w + (w & 1), h + (h & 1)  # some sources only make even sizes
    raw = run(FF + ["-f", "lavfi", "-i", "%s=size=%dx%d:rate=1" % (src, ew, eh), "-frames:v", "1",
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    return np.frombuffer(raw, np.uint8).reshape(eh, ew, 3)[:h, :w].copy()


def lcg_bytes(seed, n):
    """Deterministic test bytes the C side can regenerate:
    s = (s * 1103515245 + 12345) mod 2^31; byte = (s >> 16) & 255."""
    out = np.empty(n, np.uint8)
    s = seed
    for i in range(n):
        s = (s * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (s >> 16) & 255
    return out


def pick_rows(rows):
    if rows <= FULL_ROWS:
        return list(range(rows))
    r = {0, 1, rows // 3, 2 * rows // 3, rows - 2, rows - 1}
    return sorted(r)


# ----------------------------------------------------------------------------- samples

# (name, file, lavfi source, size, rate, duration or None, frames or None, codec args, extra)
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p", "-threads", "1",
        "-g", "25", "-x264-params", "log-level=error"]
VIDEO_SAMPLES = [
    ("h264.mp4", "testsrc2", (160, 90), 25, 3.0, None, X264, []),
    ("hevc.mkv", "mandelbrot", (128, 72), 24, 2.0, None,
     ["-c:v", "libx265", "-preset", "ultrafast", "-crf", "32", "-pix_fmt", "yuv420p",
      "-x265-params", "pools=none:frame-threads=1:log-level=error"], []),
    ("vp8.webm", "testsrc2", (96, 64), 30, 2.0, None,
     ["-c:v", "libvpx", "-b:v", "150k", "-threads", "1", "-deadline", "good", "-cpu-used", "4",
      "-pix_fmt", "yuv420p"], []),
    ("vp9_97x61.webm", "testsrc2", (97, 61), 15, 3.0, None,
     ["-c:v", "libvpx-vp9", "-crf", "40", "-b:v", "0", "-threads", "1", "-row-mt", "0",
      "-deadline", "good", "-cpu-used", "8", "-pix_fmt", "yuv420p"], []),
    ("av1.mkv", "testsrc2", (64, 48), 10, 2.0, None,
     ["-c:v", "libaom-av1", "-crf", "50", "-b:v", "0", "-cpu-used", "8", "-threads", "1",
      "-row-mt", "0", "-tiles", "1x1", "-pix_fmt", "yuv420p"], []),
    ("mpeg4_15frames.avi", "testsrc2", (120, 80), 10, None, 15,
     ["-c:v", "mpeg4", "-q:v", "6", "-threads", "1", "-pix_fmt", "yuv420p"], []),
    ("mjpeg.avi", "testsrc2", (88, 72), 12, 2.0, None,
     ["-c:v", "mjpeg", "-q:v", "6", "-threads", "1", "-pix_fmt", "yuvj420p"], []),
    ("portrait_72x128.mov", "testsrc2", (72, 128), 30, 1.5, None, X264, []),
    ("plain_160x96.mp4", "testsrc2", (160, 96), 20, 2.0, None, X264, []),  # remuxed below, then removed
    ("vfr.mp4", "testsrc2", (128, 72), 30, 3.0, None, X264,
     # 10 fps for the first second, 30 fps for the second, 5 fps for the third
     ["-vf", "select='if(lt(t\\,1)\\,not(mod(n\\,3))\\,if(lt(t\\,2)\\,1\\,not(mod(n\\,6))))'",
      "-fps_mode", "vfr"]),
    ("one_frame.mp4", "testsrc2", (64, 64), 25, None, 1, X264, []),
    ("two_frames.mkv", "smptebars", (64, 48), 25, None, 2, X264, []),
]


def make_videos(mdir):
    for fname, src, (w, h), rate, dur, frames, codec, extra in VIDEO_SAMPLES:
        ew, eh = w + (w & 1), h + (h & 1)  # testsrc2 makes even sizes only: crop
        cmd = FF + ["-f", "lavfi", "-i", "%s=size=%dx%d:rate=%d" % (src, ew, eh, rate)]
        if (ew, eh) != (w, h):
            cmd += ["-vf", "crop=%d:%d:0:0:exact=1" % (w, h)]
        cmd += ["-t", "%g" % dur] if dur else ["-frames:v", str(frames)]
        cmd += extra + codec + BITEXACT
        run(cmd + [os.path.join(mdir, fname)])
    # Rotation: this ffmpeg (5.1) has no -display_rotation and ignores the "rotate" tag when
    # encoding; a stream-copy remux with the tag writes the tkhd display matrix.
    plain = os.path.join(mdir, "plain_160x96.mp4")
    for fname, tag in (("rotate90.mp4", "90"), ("rotate270.mp4", "-90")):
        run(FF + ["-i", plain, "-c", "copy", "-metadata:s:v:0", "rotate=" + tag] + BITEXACT
            + [os.path.join(mdir, fname)])
    os.remove(plain)


def make_images(mdir):
    p = lambda f: os.path.join(mdir, f)  # noqa: E731
    # ffmpeg-written images
    run(FF + ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=1", "-frames:v", "1", "-c:v", "mjpeg",
              "-pix_fmt", "yuvj420p", "-q:v", "3"] + BITEXACT + [p("baseline.jpg")])
    run(FF + ["-f", "lavfi", "-i", "smptebars=size=120x90:rate=1", "-frames:v", "1", "-pix_fmt", "rgb24"]
        + BITEXACT + [p("rgb.png")])
    run(FF + ["-f", "lavfi", "-i", "testsrc2=size=62x48:rate=1", "-vf", "crop=61:47:0:0:exact=1", "-frames:v", "1",
              "-pix_fmt", "bgr24"]
        + BITEXACT + [p("odd_61x47.bmp")])
    run(FF + ["-f", "lavfi", "-i", "testsrc2=size=90x70:rate=1", "-frames:v", "1", "-pix_fmt", "rgb24"]
        + BITEXACT + [p("rgb.tiff")])
    run(FF + ["-f", "lavfi", "-i", "testsrc2=size=80x60:rate=4", "-frames:v", "3", "-c:v", "gif"]
        + BITEXACT + [p("anim.gif")])
    run(FF + ["-f", "lavfi", "-i", "testsrc2=size=100x76:rate=1", "-frames:v", "1", "-c:v", "libwebp",
              "-lossless", "0", "-q:v", "75", "-pix_fmt", "yuv420p"] + BITEXACT + [p("lossy.webp")])
    # rgb48 PNG with a low byte that differs from the high byte
    base = lavfi_rgb("testsrc2", 84, 52).astype(np.uint16)
    low = lcg_bytes(7, base.size).reshape(base.shape).astype(np.uint16)
    rgb48 = (base << 8) | low
    run(FF + ["-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", "84x52", "-i", "-", "-frames:v", "1",
              "-pix_fmt", "rgb48be"] + BITEXACT + [p("rgb48.png")], input=rgb48.astype("<u2").tobytes())

    # Pillow-written images (modes ffmpeg cannot write or Pillow-specific options)
    tex = Image.fromarray(lavfi_rgb("testsrc2", 144, 108))
    tex.save(p("progressive.jpg"), "JPEG", quality=85, progressive=True, optimize=True)
    tex.convert("L").save(p("gray.jpg"), "JPEG", quality=85)
    tex.convert("CMYK").save(p("cmyk.jpg"), "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display; the reference ignores it
    tex.save(p("exif_orient6.jpg"), "JPEG", quality=85, exif=exif.tobytes())
    # RGBA with alpha 0, partial and 255
    a = np.zeros((70, 96), np.uint8)
    a[:, :32] = 0
    a[:, 32:64] = np.linspace(0, 255, 32).astype(np.uint8)[None, :]
    a[:, 64:] = 255
    rgba = np.dstack([lavfi_rgb("testsrc2", 96, 70), a])
    Image.fromarray(rgba, "RGBA").save(p("rgba.png"))
    Image.fromarray(rgba, "RGBA").save(p("rgba_lossless.webp"), "WEBP", lossless=True, quality=100, method=4)
    la = np.dstack([np.asarray(tex.convert("L"))[:50, :70], np.tile(np.linspace(0, 255, 70).astype(np.uint8), (50, 1))])
    Image.fromarray(la, "LA").save(p("la.png"))
    g16 = (np.arange(64 * 40, dtype=np.uint32).reshape(40, 64) * 37 % 1024).astype(np.uint16)
    g16[:, :8] = 65535
    Image.fromarray(g16.astype("<u2"), "I;16").save(p("gray16.png"))
    pal = tex.resize((88, 66), Image.NEAREST).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.save(p("palette.png"))
    pal.save(p("palette_trns.png"), transparency=0)
    Image.fromarray(lavfi_rgb("testsrc2", 13, 9)).save(p("tiny_13x9.png"))
    Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(p("one_1x1.png"))
    Image.fromarray(lavfi_rgb("smptebars", 400, 14)).save(p("wide_400x14.png"))
    Image.fromarray(lavfi_rgb("mandelbrot", 517, 333)).save(p("textured_517x333.jpg"), "JPEG", quality=90)


# ----------------------------------------------------------------------------- reference: images

def image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": IMG_MIN_PIXELS, "longest_edge": IMG_MAX_PIXELS},
                                    image_mean=CLIP_MEAN, image_std=CLIP_STD, do_resize=False)


def video_processor():
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor(size={"shortest_edge": IMG_MIN_PIXELS, "longest_edge": IMG_MAX_PIXELS},
                                 image_mean=CLIP_MEAN, image_std=CLIP_STD, do_resize=False,
                                 do_sample_frames=False, cap_pixels_per_frame=True)


def store_pixels(cdir, man, pv, resized_frames, full_dir):
    pv = np.asarray(pv, np.float32)
    rows = pick_rows(pv.shape[0])
    save_npy(os.path.join(cdir, "pixel_values.npy"), pv[rows], np.float32)
    man["pixel_values"] = "pixel_values.npy"
    man["pixel_values_shape"] = list(pv.shape)
    man["pixel_values_rows"] = rows
    man["pixel_values_sum"] = float(pv.astype(np.float64).sum())
    man["pixel_values_abs_sum"] = float(np.abs(pv.astype(np.float64)).sum())
    man["resized_md5"] = [md5(f.tobytes()) for f in resized_frames]
    if full_dir:
        d = os.path.join(full_dir, man["name"])
        os.makedirs(d, exist_ok=True)
        save_npy(os.path.join(d, "pixel_values.npy"), pv, np.float32)


IMAGE_CASES = [
    # name, file, options
    ("img_jpeg_baseline", "baseline.jpg", {}),
    ("img_jpeg_progressive", "progressive.jpg", {}),
    ("img_jpeg_gray", "gray.jpg", {}),
    ("img_jpeg_cmyk", "cmyk.jpg", {}),
    ("img_jpeg_exif_orient6", "exif_orient6.jpg", {}),
    ("img_png_rgb", "rgb.png", {}),
    ("img_png_rgba", "rgba.png", {}),
    ("img_png_la", "la.png", {}),
    ("img_png_rgb48", "rgb48.png", {}),
    ("img_png_gray16", "gray16.png", {}),
    ("img_png_palette", "palette.png", {}),
    ("img_png_palette_trns", "palette_trns.png", {}),
    ("img_webp_lossy", "lossy.webp", {}),
    ("img_webp_rgba_lossless", "rgba_lossless.webp", {}),
    ("img_bmp_61x47", "odd_61x47.bmp", {}),
    ("img_gif_anim", "anim.gif", {}),
    ("img_tiff", "rgb.tiff", {}),
    ("img_tiny_13x9", "tiny_13x9.png", {}),
    ("img_one_1x1", "one_1x1.png", {}),
    ("img_wide_400x14", "wide_400x14.png", {}),
    ("img_textured_517x333", "textured_517x333.jpg", {}),
    ("img_textured_517x333_max50176", "textured_517x333.jpg", {"max_pixels": 50176}),
    ("img_textured_517x333_min401408", "textured_517x333.jpg", {"min_pixels": 401408}),
]


def image_case(out, name, fname, opts, vers, full_dir):
    path = os.path.join(out, "media", fname)
    src = Image.open(path)
    mode, fmt = src.mode, src.format
    rgb = np.asarray(qvu.to_rgb(Image.open(path)))
    h0, w0 = rgb.shape[:2]
    ele = {"image": "file://" + path}
    ele.update(opts)
    min_p = opts.get("min_pixels", IMG_MIN_PIXELS)
    max_p = opts.get("max_pixels", IMG_MAX_PIXELS)
    ele.setdefault("min_pixels", min_p)
    ele.setdefault("max_pixels", max_p)
    img = qvu.fetch_image(ele)  # to_rgb + smart_resize + resize(BICUBIC)
    rh, rw = qvu.smart_resize(h0, w0, 28, min_p, max_p)
    assert img.size == (rw, rh), (img.size, rw, rh)
    resized = np.asarray(img)
    r = image_processor()(images=[img], return_tensors="pt")
    grid = [int(x) for x in r["image_grid_thw"][0]]
    assert grid == [1, rh // 14, rw // 14], grid
    man = {
        "name": name, "file": "media/" + fname, "kind": "image", "options": opts,
        "decoder_note": "Pillow %s Image.open (format %s, mode %s) -> qwen_vl_utils.to_rgb "
                        "(only mode RGBA is composited on white; every other mode is convert('RGB'))"
                        % (PIL.__version__, fmt, mode),
        "pil_mode": mode, "pil_format": fmt,
        "width": w0, "height": h0,
        "decoded_sum": int(rgb.astype(np.int64).sum()), "decoded_md5": md5(rgb.tobytes()),
        "min_pixels": min_p, "max_pixels": max_p,
        "resized": [rh, rw], "grid": grid,
    }
    cdir = os.path.join(out, "golden", "media", name)
    os.makedirs(cdir, exist_ok=True)
    store_pixels(cdir, man, r["pixel_values"].numpy(), [resized], full_dir)
    man["versions"] = vers
    write_json(os.path.join(cdir, "manifest.json"), man)
    return man


# ----------------------------------------------------------------------------- reference: videos

def decode_all(path):
    """Every frame in presentation order, rotated to the displayed orientation."""
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "NONE"
        rate = s.average_rate
        frames, times, rots = [], [], set()
        for f in c.decode(s):
            a = f.to_ndarray(format="rgb24")
            rot = int(round(f.rotation)) % 360 if f.rotation is not None else 0
            rots.add(rot)
            if rot:
                a = np.ascontiguousarray(np.rot90(a, k=rot // 90))  # rotation is counterclockwise
            frames.append(a)
            times.append(float(f.time))
        info = {"codec": s.codec_context.name, "container": c.format.name,
                "average_rate": float(rate) if rate else None,
                "stream_frames_metadata": int(s.frames), "rotation": sorted(rots)}
    order = np.argsort(np.array(times), kind="stable")
    assert list(order) == list(range(len(times))), "decoder output not in pts order"
    return np.stack(frames), times, info


def ffmpeg_cli_frames(path, w, h):
    """Every frame as the ffmpeg CLI decodes it (autorotate on), or None if the size differs."""
    raw = run(FF + ["-i", path, "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-"])
    if len(raw) % (w * h * 3):
        return None
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def nframes_rule(opts, total, video_fps):
    """qwen-vl-utils 0.0.10 smart_nframes (identical in 0.0.14)."""
    ele = {k: opts[k] for k in ("fps", "nframes", "min_frames", "max_frames") if k in opts}
    return qvu.smart_nframes(ele, total_frames=total, video_fps=video_fps)


VIDEO_CASES = [
    ("vid_h264_mp4", "h264.mp4", {}),
    ("vid_h264_mp4_nframes8", "h264.mp4", {"nframes": 8}),
    ("vid_h264_mp4_nframes7", "h264.mp4", {"nframes": 7}),
    ("vid_h264_mp4_nframes5", "h264.mp4", {"nframes": 5}),
    ("vid_h264_mp4_fps1", "h264.mp4", {"fps": 1.0}),
    ("vid_h264_mp4_trim", "h264.mp4", {"start_time": 0.5, "end_time": 2.25}),
    ("vid_h264_mp4_small", "h264.mp4", {"min_pixels": 3136, "max_pixels": 12544}),
    ("vid_h264_mp4_total", "h264.mp4", {"min_pixels": 3136, "total_pixels": 40000}),
    ("vid_hevc_mkv", "hevc.mkv", {}),
    ("vid_vp8_webm", "vp8.webm", {}),
    ("vid_vp9_97x61_webm", "vp9_97x61.webm", {}),
    ("vid_av1_mkv", "av1.mkv", {}),
    ("vid_mpeg4_15frames_avi", "mpeg4_15frames.avi", {}),
    ("vid_mjpeg_avi", "mjpeg.avi", {}),
    ("vid_portrait_mov", "portrait_72x128.mov", {}),
    ("vid_rotate90_mp4", "rotate90.mp4", {}),
    ("vid_rotate90_mp4_small", "rotate90.mp4", {"min_pixels": 3136, "max_pixels": 12544}),
    ("vid_rotate270_mp4_small", "rotate270.mp4", {"min_pixels": 3136, "max_pixels": 12544}),
    ("vid_vfr_mp4", "vfr.mp4", {}),
    ("vid_one_frame_mp4", "one_frame.mp4", {}),
    ("vid_two_frames_mkv", "two_frames.mkv", {}),
]


def video_case(out, name, fname, opts, vers, full_dir):
    path = os.path.join(out, "media", fname)
    frames, times, info = decode_all(path)
    n_all = len(frames)
    video_fps = info["average_rate"] or n_all / (times[-1] - times[0] + 1e-9)
    # start/end: keep frames whose time lies in [start_time, end_time] (torchvision read_video,
    # the 0.0.10 path); the times chosen here are off the frame grid, where 0.0.14's
    # ceil(start*fps)..floor(end*fps) frame range gives the same frames.
    first, last = 0, n_all - 1
    if "start_time" in opts or "end_time" in opts:
        st, en = opts.get("start_time", -1e30), opts.get("end_time", 1e30)
        keep = [i for i, t in enumerate(times) if st <= t <= en]
        first, last = keep[0], keep[-1]
        assert keep == list(range(first, last + 1))
        if "start_time" in opts:
            assert first == math.ceil(opts["start_time"] * video_fps)
        if "end_time" in opts:
            assert last == min(math.floor(opts["end_time"] * video_fps), n_all - 1)
    total = last - first + 1
    h0, w0 = frames.shape[1:3]
    cli = ffmpeg_cli_frames(path, w0, h0)
    if cli is None or len(cli) != n_all:
        cli_note = "ffmpeg CLI gives another size or frame count"
    else:
        d = np.abs(cli.astype(np.int16) - frames.astype(np.int16))
        cli_note = "ffmpeg CLI (%s, autorotate) rgb24 frames: max abs diff %d, mean %.4f vs PyAV" % (
            ffmpeg_version().split()[2], int(d.max()), float(d.mean()))
        if info["rotation"] != [0]:
            assert d.mean() < 2.0, "rotation disagrees with ffmpeg's autorotate"
    man = {"name": name, "file": "media/" + fname, "kind": "video", "options": opts,
           "decoder_note": "PyAV %s (libavcodec %s) decodes every frame in presentation order, "
                           "VideoFrame.to_ndarray('rgb24'); display-matrix rotation %s applied "
                           "(np.rot90 by the counterclockwise angle) so frames are in displayed "
                           "orientation; total_frames counts decoded frames, not metadata; "
                           "video_fps = stream average_rate"
                           % (md.version("av"), ".".join(map(str, av.library_versions["libavcodec"])),
                              info["rotation"]),
           "ffmpeg_cli_check": cli_note, "rotation": info["rotation"],
           "codec": info["codec"], "container": info["container"],
           "width": int(w0), "height": int(h0), "video_fps": video_fps,
           "stream_frames_metadata": info["stream_frames_metadata"],
           "decoded_frames": n_all, "all_timestamps": times,
           "trim_first_index": first, "total_frames": total}
    cdir = os.path.join(out, "golden", "media", name)
    os.makedirs(cdir, exist_ok=True)
    try:
        n = nframes_rule(opts, total, video_fps)
    except ValueError as e:
        man["error"] = str(e)
        man["frame_md5"] = [md5(f.tobytes()) for f in frames]
        man["versions"] = vers
        write_json(os.path.join(cdir, "manifest.json"), man)
        return man
    rel = torch.linspace(0, total - 1, n).round().long().tolist()
    idx = [first + i for i in rel]
    sample_fps = n / max(total, 1e-6) * video_fps
    sel = frames[idx]
    min_p = opts.get("min_pixels", VIDEO_MIN_PIXELS)
    total_p = opts.get("total_pixels", VIDEO_TOTAL_PIXELS)
    max_p = max(min(VIDEO_MAX_PIXELS, total_p / n * 2), int(min_p * 1.05))
    max_p = min(opts.get("max_pixels", max_p), max_p)
    rh, rw = qvu.smart_resize(h0, w0, 28, min_p, max_p)
    vt = torch.from_numpy(sel).permute(0, 3, 1, 2).contiguous()  # T,3,H,W uint8
    res = TF.resize(vt, [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert res.dtype == torch.uint8
    r = video_processor()(videos=[res], return_tensors="pt")
    grid = [int(x) for x in r["video_grid_thw"][0]]
    assert grid == [(n + 1) // 2, rh // 14, rw // 14], grid
    man.update({
        "frame_indices": idx, "timestamps": [times[i] for i in idx],
        "frame_md5": [md5(f.tobytes()) for f in sel],
        "frame_sum": [int(f.astype(np.int64).sum()) for f in sel],
        "nframes": n, "sample_fps": sample_fps, "second_per_grid_t": 2.0 / sample_fps,
        "min_pixels": min_p, "max_pixels": max_p,
        "resized": [rh, rw], "grid": grid,
    })
    store_pixels(cdir, man, r["pixel_values_videos"].numpy(),
                 [f for f in res.permute(0, 2, 3, 1).contiguous().numpy()], full_dir)
    man["versions"] = vers
    write_json(os.path.join(cdir, "manifest.json"), man)
    return man


# ----------------------------------------------------------------------------- resize cases

RESIZE_CASES = [  # (src w, src h, dst w, dst h, seed)
    (37, 23, 56, 28, 1),
    (300, 200, 84, 140, 2),
    (20, 30, 56, 84, 3),
    (640, 480, 224, 308, 4),
    (97, 61, 308, 196, 5),
]
RESIZE_STORE_LIMIT = 15000  # values; larger arrays are given by md5 (+ the LCG for inputs)


def resize_cases(gdir):
    cases = []
    for sw, sh, dw, dh, seed in RESIZE_CASES:
        x = lcg_bytes(seed, sh * sw * 3).reshape(sh, sw, 3)
        pil = np.asarray(Image.fromarray(x).resize((dw, dh), Image.BICUBIC))
        tv = TF.resize(torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous(), [dh, dw],
                       interpolation=InterpolationMode.BICUBIC, antialias=True)[0].permute(1, 2, 0).numpy()
        base = "resize_%dx%d_to_%dx%d" % (sw, sh, dw, dh)
        c = {"name": base, "src_w": sw, "src_h": sh, "dst_w": dw, "dst_h": dh, "lcg_seed": seed,
             "input_md5": md5(x.tobytes()), "pil_md5": md5(pil.tobytes()), "torch_md5": md5(tv.tobytes()),
             "pil_sum": int(pil.astype(np.int64).sum()), "torch_sum": int(tv.astype(np.int64).sum()),
             "pil_vs_torch_max_diff": int(np.abs(pil.astype(int) - tv.astype(int)).max())}
        if x.size <= RESIZE_STORE_LIMIT:
            save_npy(os.path.join(gdir, base + "_input.npy"), x, np.int32)
            c["input"] = base + "_input.npy"
        if pil.size <= RESIZE_STORE_LIMIT:
            save_npy(os.path.join(gdir, base + "_pil.npy"), pil, np.int32)
            save_npy(os.path.join(gdir, base + "_torch.npy"), tv, np.int32)
            c["pil"], c["torch"] = base + "_pil.npy", base + "_torch.npy"
        cases.append(c)
    write_json(os.path.join(gdir, "resize_cases.json"), {
        "note": "uint8 RGB HxWx3 inputs from the LCG s=(s*1103515245+12345) mod 2^31, byte=(s>>16)&255, "
                "starting from s=lcg_seed, filled in HWC order; 'pil' = PIL Image.resize((dst_w,dst_h), "
                "BICUBIC); 'torch' = torchvision resize(uint8 [1,3,H,W], [dst_h,dst_w], BICUBIC, "
                "antialias=True). md5 over the uint8 HWC bytes; npy files are int32 HxWx3, present "
                "when at most %d values." % RESIZE_STORE_LIMIT,
        "cases": cases})


# ----------------------------------------------------------------------------- main

MEDIA_FILES = sorted({c[1] for c in IMAGE_CASES + VIDEO_CASES} | {"plain_160x96.mp4"})


def generate(out, full_dir):
    # Other generators may write next to these files: delete only what this script writes.
    mdir = os.path.join(out, "media")
    gdir = os.path.join(out, "golden", "media")
    os.makedirs(mdir, exist_ok=True)
    os.makedirs(gdir, exist_ok=True)
    for f in MEDIA_FILES:
        if os.path.exists(os.path.join(mdir, f)):
            os.remove(os.path.join(mdir, f))
    for name in [c[0] for c in IMAGE_CASES + VIDEO_CASES]:
        shutil.rmtree(os.path.join(gdir, name), ignore_errors=True)
    for f in os.listdir(gdir):
        if f == "resize_cases.json" or (f.startswith("resize_") and f.endswith(".npy")):
            os.remove(os.path.join(gdir, f))
    vers = versions()
    make_videos(mdir)
    make_images(mdir)
    summary = []
    for name, fname, opts in IMAGE_CASES:
        m = image_case(out, name, fname, opts, vers, full_dir)
        summary.append((name, m["pil_mode"], m["width"], m["height"], m["resized"], m["grid"]))
    for name, fname, opts in VIDEO_CASES:
        m = video_case(out, name, fname, opts, vers, full_dir)
        summary.append((name, m["codec"], m["width"], m["height"], m.get("frame_indices", m.get("error")),
                        m.get("grid")))
    resize_cases(gdir)
    for s in summary:
        print(*s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="tests/data")
    ap.add_argument("--full", help="also write complete pixel_values here (not committed)")
    a = ap.parse_args()
    generate(os.path.abspath(a.out), a.full)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""tools/shapes/write_files.py — render scenes to real media files plus a manifest.

CPU only: needs numpy, Pillow and the ffmpeg CLI (not used on the training host).

    python tools/shapes/write_files.py --out /tmp/shapes-files --seeds 0:200
    python tools/shapes/write_files.py --out examples --seeds 0:4 --kinds video,image

Scenes: seed i of the range gets kind kinds[i % len(kinds)] and, within its kind, the
formats in turn (images: png, jpg; videos: mp4, webm), unless --all-formats writes every
format of its kind. Files are named <kind>_<seed>.<ext>.

Encodings (single-threaded and bitexact, so two runs give identical bytes):
  .png   Pillow, lossless
  .jpg   Pillow, quality 90, 4:2:0
  .mp4   ffmpeg libx264, yuv420p, crf 18, preset medium, keyframe every 12 frames
  .webm  ffmpeg libvpx-vp9, yuv420p, crf 30, good / cpu-used 4, keyframe every 12 frames
Videos are stored at the scene's own frame rate (4, 5, 6 or 8 fps, stated in the manifest
and in the container), even sizes only (the generator makes them so).

Seeds: held-out scenes for tests and examples live below 1,000,000; training never uses
those (tools/train/examples.py draws training scenes from 1e9 up).

manifest.json: {"generator", "versions", "scenes": [{"file", "kind", "format", "seed",
"width", "height", "fps", "n_frames", "sample_idx", "questions": [{"type", "question",
"answer"}], "caption_prompt", "caption", "scene"}]}
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shapes import questions as qs  # noqa: E402
from shapes import render  # noqa: E402
from shapes import scene as scn  # noqa: E402

FF = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"]
CODECS = {
    "mp4": ["-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p", "-threads", "1",
            "-g", "12", "-x264-params", "log-level=error", "-movflags", "+faststart"],
    "webm": ["-c:v", "libvpx-vp9", "-crf", "30", "-b:v", "0", "-pix_fmt", "yuv420p", "-threads", "1",
             "-row-mt", "0", "-deadline", "good", "-cpu-used", "4", "-g", "12"],
}
FORMATS = {"image": ["png", "jpg"], "video": ["mp4", "webm"]}
JPEG_QUALITY = 90


def write_video(path, frames, fps, fmt):
    t, h, w, _ = frames.shape
    assert w % 2 == 0 and h % 2 == 0, (w, h)
    cmd = FF + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    cmd += CODECS[fmt] + BITEXACT + [path]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True)


def write_image(path, img, fmt):
    from PIL import Image

    im = Image.fromarray(img, "RGB")
    if fmt == "png":
        im.save(path, "PNG")
    else:
        im.save(path, "JPEG", quality=JPEG_QUALITY, subsampling=2)


def versions():
    import PIL

    ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"numpy": np.__version__, "pillow": PIL.__version__, "ffmpeg": ff}


def parse_range(s):
    a, b = s.split(":")
    return range(int(a), int(b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--seeds", default="0:100", help="seed range start:stop (default 0:100)")
    ap.add_argument("--kinds", default="video,image", help="kinds in turn (default video,image)")
    ap.add_argument("--formats", default=None,
                    help="restrict to these formats (comma list of png,jpg,mp4,webm)")
    ap.add_argument("--all-formats", action="store_true", help="write every format of each scene's kind")
    ap.add_argument("--manifest", default="manifest.json", help="manifest name inside --out")
    args = ap.parse_args()

    kinds = args.kinds.split(",")
    allowed = set(args.formats.split(",")) if args.formats else None
    fmts = {k: [f for f in FORMATS[k] if allowed is None or f in allowed] for k in kinds}
    for k in kinds:
        if not fmts[k]:
            sys.exit(f"no format left for kind {k}")
    os.makedirs(args.out, exist_ok=True)
    entries = []
    for i, seed in enumerate(parse_range(args.seeds)):
        kind = kinds[i % len(kinds)]
        s = scn.make_scene(seed, kind)
        pixels = render.render(s)
        chosen = fmts[kind] if args.all_formats else [fmts[kind][(i // len(kinds)) % len(fmts[kind])]]
        for fmt in chosen:
            name = f"{kind}_{seed}.{fmt}"
            path = os.path.join(args.out, name)
            if kind == "image":
                write_image(path, pixels, fmt)
            else:
                write_video(path, pixels, s["fps"], fmt)
            entries.append({
                "file": name, "kind": kind, "format": fmt, "seed": seed,
                "width": s["width"], "height": s["height"], "fps": s["fps"], "n_frames": s["n_frames"],
                "sample_idx": s["sample_idx"],
                "questions": qs.pick_questions(s),
                "caption_prompt": qs.caption_prompt(kind),
                "caption": qs.caption(s),
                "scene": s,
            })
        print(f"{name}: {s['width']}x{s['height']} {len(s['objects'])} shapes"
              + (f", {s['n_frames']} frames at {s['fps']} fps" if kind == "video" else ""))
    man = {"generator": "tools/shapes/write_files.py", "seeds": args.seeds, "kinds": kinds,
           "versions": versions(), "scenes": entries}
    with open(os.path.join(args.out, args.manifest), "w", encoding="utf-8") as f:
        json.dump(man, f, indent=1)
        f.write("\n")
    print(f"wrote {len(entries)} files and {args.manifest} to {args.out}")


if __name__ == "__main__":
    main()

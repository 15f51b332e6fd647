#!/opt/golden/bin/python
"""tools/golden/video_fixtures.py — the small test videos of tests/media/test_video.c
and what the reference says about them.

Run:  /opt/golden/bin/python tools/golden/video_fixtures.py [--regen]

--regen re-creates the videos under tests/data/media/vid/ with the ffmpeg CLI
(x264/libvpx with one thread, so the bytes are stable on one machine; the
committed files are the fixtures). Without it only expected.json is rewritten.

expected.json holds, per file, what PyAV (decode every frame, to_ndarray
rgb24, frames ordered by presentation time, rotation applied as ffmpeg's
autorotate does) gives: the md5 of each frame's RGB bytes, each frame's time,
and the frame choice of qwen-vl-utils' smart_nframes + round(linspace) for a
few request options. video_fps follows vidi's rule (media/video.c): the
stream's average frame rate when it agrees with the timestamps within 25 %,
else (count - 1) / span of the timestamps.
"""
import hashlib
import json
import math
import os
import struct
import subprocess
import sys

import av
import numpy as np
import torch
from qwen_vl_utils import vision_process as qvu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "media", "vid")


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def patch_mkv_lies(path):
    """Matroska header that lies: Duration 60 s (really 6 s) and
    DefaultDuration 40 ms = 25 fps (really 10 fps); block times stay true."""
    d = bytearray(open(path, "rb").read())
    i = d.find(b"\x44\x89\x88")  # Duration, 8-byte float, in TimecodeScale units (1 ms)
    assert i > 0
    struct.pack_into(">d", d, i + 3, 60000.0)
    i = d.find(b"\x23\xe3\x83\x84")  # DefaultDuration, 4-byte uint, ns
    assert i > 0
    struct.pack_into(">I", d, i + 4, 40000000)
    open(path, "wb").write(d)


def patch_mp4_rotate90(path):
    """Display matrix of a phone held upright: rotation -90 (av_display_rotation_get),
    which ffmpeg's autorotate turns clockwise by 90 degrees."""
    d = bytearray(open(path, "rb").read())
    i = d.find(b"tkhd")
    ver = d[i + 4]
    off = i + 8 + (20 if ver == 0 else 32) + 8 + 8
    struct.pack_into(">9i", d, off, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    open(path, "wb").write(d)


def regen():
    os.makedirs(OUT, exist_ok=True)
    p = lambda n: os.path.join(OUT, n)
    src = lambda size, rate: ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-threads", "1", "-an"]
    # H.264 with B-frames, closed GOP of 12: sampling 20 of 150 frames must seek
    ffmpeg(*src("96x64", 15), "-t", "10", *x264, "-bf", "3", "-g", "12", "-keyint_min", "12",
           "-sc_threshold", "0", p("h264_bframes.mp4"))
    ffmpeg(*src("64x48", 12), "-t", "5", "-c:v", "libvpx-vp9", "-deadline", "realtime",
           "-cpu-used", "8", "-g", "12", "-b:v", "100k", "-threads", "1", p("vp9.webm"))
    # variable frame rate: 10 fps for 2 s, then 30 fps
    ffmpeg(*src("64x48", 30), "-t", "4", "-vf", "select='not(mod(n\\,3))+gt(n\\,60)'",
           "-fps_mode", "vfr", *x264, "-bf", "2", "-g", "15", p("vfr.mp4"))
    ffmpeg(*src("64x48", 10), "-t", "6", *x264, "-bf", "2", "-g", "10", p("lying.mkv"))
    patch_mkv_lies(p("lying.mkv"))
    ffmpeg(*src("64x48", 10), "-t", "4", *x264, "-bf", "0", "-g", "10", p("rotated.mp4"))
    patch_mp4_rotate90(p("rotated.mp4"))
    # BT.709-tagged limited range (what phones write): conversion must follow the tags
    ffmpeg(*src("64x48", 10), "-t", "2", *x264, "-bf", "2", "-g", "8", "-colorspace", "bt709",
           "-color_primaries", "bt709", "-color_trc", "bt709", p("bt709.mp4"))
    # no video at all: must be refused with a clear message
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", "-b:a", "32k",
           p("audio_only.m4a"))


def decode_all(path):
    with av.open(path) as c:
        st = c.streams.video[0]
        frames = []
        for f in c.decode(st):
            rgb = f.to_ndarray(format="rgb24")
            frames.append((f.pts, rgb, f.rotation))
        tb = float(st.time_base)
        avg = float(st.average_rate) if st.average_rate else 0.0
        info = dict(codec=st.codec_context.name, container=c.format.name, avg_rate=avg)
    frames.sort(key=lambda x: x[0])
    rot = frames[0][2]
    theta = int(round(-rot)) % 360  # ffmpeg autorotate: theta = -av_display_rotation_get
    out = []
    for pts, rgb, _ in frames:
        if theta:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=-(theta // 90)))  # clockwise
        out.append((pts, rgb))
    t0 = out[0][0]
    times = [(pts - t0) * tb for pts, _ in out]
    return info, theta, out, times


def video_fps_rule(avg, times):
    n = len(times)
    table = (n - 1) / (times[-1] - times[0]) if n >= 2 and times[-1] > times[0] else 0.0
    if 0 < avg <= 1000 and (table == 0 or abs(avg / table - 1) <= 0.25):
        return avg
    return table


def choose(total, video_fps, opt):
    ele = {}
    if "nframes" in opt:
        ele["nframes"] = opt["nframes"]
    else:
        ele["fps"] = opt.get("fps", 2.0)
        for k in ("min_frames", "max_frames"):
            if k in opt:
                ele[k] = opt[k]
    try:
        n = qvu.smart_nframes(ele, total_frames=total, video_fps=video_fps)
    except ValueError as e:
        return None, str(e)
    idx = np.round(np.linspace(0, total - 1, n)).astype(np.int64)
    tidx = torch.linspace(0, total - 1, n).round().long().numpy()
    assert (idx == tidx).all(), "numpy and torch disagree on round(linspace)"
    return [int(i) for i in idx], None


CASES = {
    "h264_bframes.mp4": [{}, {"fps": 1.0}, {"nframes": 7}, {"start": 2.5, "end": 7.0},
                         {"fps": 15.0}],
    "vp9.webm": [{}, {"nframes": 10}],
    "vfr.mp4": [{}, {"fps": 4.0}, {"start": 1.0, "end": 3.0}],
    "lying.mkv": [{}],
    "rotated.mp4": [{}],
    "bt709.mp4": [{}],
}


def main():
    if "--regen" in sys.argv:
        regen()
    out = {"generator": "tools/golden/video_fixtures.py", "pyav": av.__version__, "videos": {}}
    total_bytes = 0
    for name, cases in CASES.items():
        path = os.path.join(OUT, name)
        total_bytes += os.path.getsize(path)
        info, theta, frames, times = decode_all(path)
        vfps = video_fps_rule(info["avg_rate"], times)
        h, w = frames[0][1].shape[:2]
        ent = dict(info, rotation=theta, width=w, height=h, total_frames=len(frames),
                   video_fps=vfps, times=times,
                   md5=[hashlib.md5(rgb.tobytes()).hexdigest() for _, rgb in frames], cases=[])
        for opt in cases:
            start, end = opt.get("start", -1.0), opt.get("end", -1.0)
            sel = [i for i, t in enumerate(times)
                   if (start < 0 or t >= start - 1e-9) and (end < 0 or t <= end + 1e-9)]
            total = len(sel)
            idx, err = choose(total, vfps, opt)
            case = dict(opt=opt, total_frames=total, error=err)
            if idx is not None:
                case["indices"] = [sel[0] + i for i in idx]
                case["sample_fps"] = len(idx) / total * vfps
            ent["cases"].append(case)
        out["videos"][name] = ent
        print(f"{name}: {info} rot {theta} {w}x{h} frames {len(frames)} video_fps {vfps:.4f}")
    assert total_bytes < 400 * 1024, total_bytes
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {OUT}/expected.json ({total_bytes} bytes of video)")


if __name__ == "__main__":
    main()

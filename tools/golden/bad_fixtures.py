#!/usr/bin/env python3
"""tools/golden/bad_fixtures.py — the small committed samples behind
tests/media/test_bad_input.c (the bad input catalogue) and the fuzz seeds.

Only what cannot be made cheaply in C at test time is committed here; the test
truncates, corrupts and crafts the rest from these. Everything is deterministic:
ffmpeg runs single-threaded with bitexact flags and no metadata, PNGs are
written by hand with zlib.

  good.jpg        64x48 baseline JPEG (testsrc)      truncation / SOF patching
  good.png        32x24 RGB PNG                      CRC / chunk length / wrong extension
  good.mp4        64x48 H.264, 10 fps, 1 s, faststart (moov before mdat)
  small.mkv       16x16 H.264, 4 frames              corrupt EBML header
  audio.m4a       0.25 s 440 Hz sine, AAC, no video
  long_10h.mp4    16x16 H.264 at 1/60 fps for 36000 s (600 frames): a real 10-hour video
  huge_frame.mp4  MJPEG in MP4 whose sample entry and every SOF declare 50000x50000
  no_frames.mp4   an MP4 with no track at all (ffmpeg -frames:v 0)
  empty_track.mp4 good.mp4 with its sample tables emptied and durations zeroed:
                  a video stream that holds no frames and lasts 0 s
  wide.png        10000x20 grey PNG (aspect ratio 500)

Also in that directory, not written here: fuzz_*.* are inputs found by
tests/fuzz/fuzz_media, kept byte for byte as regression cases.

Usage: python3 tools/golden/bad_fixtures.py [--out tests/data/media/bad]
"""

import argparse
import os
import struct
import subprocess
import zlib

FF = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
BITEXACT = ["-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1",
            "-threads", "1"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-x264-params", "threads=1:sliced-threads=0"]


def ff(*args):
    subprocess.run(FF + list(args), check=True)


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_png(path, w, h, row_fn):
    raw = b"".join(b"\x00" + row_fn(y) for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def patch_huge_frame(src, dst, side=50000):
    """Rewrite the MJPEG sample entry's width/height and each frame's SOF0."""
    b = bytearray(open(src, "rb").read())
    i = b.find(b"stsd")
    assert i > 0
    # stsd: size(4) 'stsd' ver/flags(4) count(4) | entry: size(4) fmt(4) reserved(6)
    # dref(2) pre_defined/reserved(16) width(2) height(2)
    entry = i + 4 + 8
    off = entry + 8 + 6 + 2 + 16
    struct.pack_into(">HH", b, off, side, side)
    t = b.find(b"tkhd")
    # tkhd v0: ... width/height are the last 8 bytes (16.16 fixed) of the 84-byte box body
    size = struct.unpack(">I", b[t - 4:t])[0]
    struct.pack_into(">II", b, t - 4 + size - 8, side << 16, side << 16)
    n = 0
    p = 0
    while True:
        p = b.find(b"\xff\xc0", p)
        if p < 0:
            break
        # FFC0 len(2) precision(1) height(2) width(2)
        struct.pack_into(">HH", b, p + 5, side, side)
        n += 1
        p += 2
    assert n > 0
    open(dst, "wb").write(bytes(b))


def patch_empty_track(src, dst):
    """Zero the entry counts of every sample table and every duration."""
    b = bytearray(open(src, "rb").read())
    for box in (b"stts", b"stss", b"stsc", b"stco", b"ctts", b"sdtp"):
        i = b.find(box)
        if i > 0:
            struct.pack_into(">I", b, i + 8, 0)  # after version/flags
    i = b.find(b"stsz")
    struct.pack_into(">II", b, i + 8, 0, 0)  # sample_size, sample_count
    for box, off in ((b"mvhd", 16), (b"mdhd", 16), (b"tkhd", 20)):
        i = b.find(box)
        assert b[i + 4] == 0  # version 0 boxes only
        struct.pack_into(">I", b, i + 4 + off, 0)
    open(dst, "wb").write(bytes(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                  "tests", "data", "media", "bad"))
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    o = lambda n: os.path.join(out, n)  # noqa: E731

    ff("-f", "lavfi", "-i", "testsrc=size=64x48:rate=1", "-frames:v", "1", *BITEXACT,
       "-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p", o("good.jpg"))
    write_png(o("good.png"), 32, 24,
              lambda y: bytes((x * 8 + c * 40 + y * 5) & 255 for x in range(32) for c in range(3)))
    write_png(o("wide.png"), 10000, 20, lambda y: b"\x80" * (10000 * 3))
    ff("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1", *BITEXACT, *X264,
       "-g", "5", "-movflags", "+faststart", o("good.mp4"))
    ff("-f", "lavfi", "-i", "testsrc=size=16x16:rate=4", "-frames:v", "4", *BITEXACT, *X264,
       o("small.mkv"))
    ff("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "0.25", *BITEXACT,
       "-c:a", "aac", "-b:a", "24k", o("audio.m4a"))
    ff("-f", "lavfi", "-i", "color=c=gray:size=16x16:rate=1/60", "-t", "36000", *BITEXACT,
       *X264, "-tune", "stillimage", "-g", "600", "-movflags", "+faststart", o("long_10h.mp4"))
    tmp = o("_mjpeg.mp4")
    ff("-f", "lavfi", "-i", "testsrc=size=16x16:rate=2", "-frames:v", "2", *BITEXACT,
       "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-movflags", "+faststart", tmp)
    patch_huge_frame(tmp, o("huge_frame.mp4"))
    os.remove(tmp)
    ff("-f", "lavfi", "-i", "testsrc=size=16x16:rate=2", "-frames:v", "0", *BITEXACT, *X264,
       o("no_frames.mp4"))
    patch_empty_track(o("good.mp4"), o("empty_track.mp4"))

    total = 0
    for n in sorted(os.listdir(out)):
        s = os.path.getsize(o(n))
        total += s
        print(f"{s:8d}  {n}")
    print(f"{total:8d}  total")
    assert total < 300 * 1024


if __name__ == "__main__":
    main()

"""tools/golden/image_fixtures.py — small image files and what the reference makes of them.

Writes tests/data/media/img/*: one small file per format and pixel layout that
vidi_image_decode must handle, plus expected.json giving, for each file, the
size and the md5 of the RGB888 bytes that the reference path produces:
Pillow's Image.open followed by qwen-vl-utils' to_rgb (RGBA composited on
white with paste(mask=alpha); every other mode through convert("RGB")).
Also writes a few "bomb" files whose headers declare a huge size.

Deterministic: fixed seeds, no timestamps; two runs give identical bytes.

    /opt/golden/bin/python tools/golden/image_fixtures.py [--out tests/data/media/img]
"""
import argparse
import hashlib
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL
from PIL import Image


def to_rgb(im):
    """qwen-vl-utils 0.0.10 vision_process.to_rgb, restated."""
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.split()[3])
        return bg
    return im.convert("RGB")


def picture(w, h, seed):
    """Gradients plus noise plus a few hard edges: exercises chroma upsampling and rounding."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 / max(w - 1, 1))
    g = (y * 255 / max(h - 1, 1))
    b = ((x + y) * 3) % 256
    img = np.stack([r, g, b], -1) + rs.randint(-40, 41, (h, w, 3))
    img[h // 3: h // 3 + 5, :, :] = [250, 10, 10]
    img[:, w // 2: w // 2 + 3, :] = [10, 10, 250]
    return np.clip(img, 0, 255).astype(np.uint8)


def alpha(w, h, seed):
    rs = np.random.RandomState(seed)
    a = rs.randint(0, 256, (h, w))
    a[:, :4] = 0
    a[:, -4:] = 255
    return a.astype(np.uint8)


def png_raw(w, h, bitdepth, ctype, rows, extra=b""):
    """A PNG written by hand (Pillow cannot write 16-bit RGB / LA)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, bitdepth, ctype, 0, 0, 0)
    data = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(data, 9)) + chunk(b"IEND", b""))


def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def fixtures():
    W, H = 61, 45  # odd sizes: partial MCUs and odd chroma edges
    rgb = picture(W, H, 1)
    a = alpha(W, H, 2)
    rgba = np.dstack([rgb, a])
    gray = rgb[..., 1]
    im_rgb = Image.fromarray(rgb, "RGB")
    f = {}
    # JPEG (Pillow writes with libjpeg-turbo; decoding is what is compared)
    f["jpeg_420.jpg"] = save(im_rgb, "JPEG", quality=90, subsampling=2)
    f["jpeg_422.jpg"] = save(im_rgb, "JPEG", quality=85, subsampling=1)
    f["jpeg_444.jpg"] = save(im_rgb, "JPEG", quality=95, subsampling=0)
    f["jpeg_progressive.jpg"] = save(im_rgb, "JPEG", quality=80, progressive=True)
    f["jpeg_gray.jpg"] = save(Image.fromarray(gray, "L"), "JPEG", quality=90)
    cmyk = np.dstack([255 - rgb, (gray // 3)[..., None]]).astype(np.uint8)
    f["jpeg_cmyk.jpg"] = save(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=90)
    f["jpeg_big.jpg"] = save(Image.fromarray(picture(333, 257, 7), "RGB"), "JPEG", quality=75)
    # PNG
    f["png_rgb.png"] = save(im_rgb, "PNG")
    f["png_rgba.png"] = save(Image.fromarray(rgba, "RGBA"), "PNG")
    f["png_gray.png"] = save(Image.fromarray(gray, "L"), "PNG")
    # every (value, alpha) pair once: pins the composite-on-white rounding
    yy, xx = np.mgrid[0:256, 0:256]
    every = np.stack([xx, 255 - xx, (xx * 7 + yy) % 256, yy], -1).astype(np.uint8)
    f["png_rgba_every_alpha.png"] = save(Image.fromarray(every, "RGBA"), "PNG")
    f["png_la.png"] = save(Image.fromarray(np.dstack([gray, a]), "LA"), "PNG")
    pal = im_rgb.quantize(24, dither=Image.Dither.NONE)
    f["png_p.png"] = save(pal, "PNG")
    f["png_p_trns.png"] = save(pal, "PNG", transparency=5)
    f["png_p4.png"] = save(im_rgb.quantize(12, dither=Image.Dither.NONE), "PNG", bits=4)
    f["png_1bit.png"] = save(Image.fromarray(gray, "L").convert("1"), "PNG")
    f["png_gray_trns.png"] = save(Image.fromarray(gray, "L"), "PNG", transparency=7)
    rs = np.random.RandomState(3)
    v16 = (rgb.astype(np.uint16) * 257 + rs.randint(0, 257, rgb.shape)).astype(">u2")
    f["png_rgb16.png"] = png_raw(W, H, 16, 2, [r.tobytes() for r in v16])
    a16 = (a.astype(np.uint16) * 257 + rs.randint(0, 257, a.shape)).astype(">u2")
    f["png_rgba16.png"] = png_raw(W, H, 16, 6, [r.tobytes() for r in np.dstack([v16, a16]).astype(">u2")])
    f["png_la16.png"] = png_raw(W, H, 16, 4, [r.tobytes() for r in np.dstack([v16[..., 0], a16]).astype(">u2")])
    # 16-bit gray: Pillow's I;16 -> RGB clamps at 255, so keep many values small
    g16 = np.where(rs.rand(H, W) < 0.5, rs.randint(0, 300, (H, W)), rs.randint(0, 65536, (H, W)))
    f["png_gray16.png"] = png_raw(W, H, 16, 0, [r.tobytes() for r in g16.astype(">u2")])
    f["png_gray2.png"] = png_raw(W, H, 2, 0, [np.packbits(np.unpackbits((gray[y] >> 6)[:, None], axis=1)[:, 6:].reshape(-1)).tobytes() for y in range(H)])
    f["png_interlaced.png"] = _interlaced_png(picture(13, 11, 4))
    # WebP (libwebp inside Pillow)
    f["webp_lossless.webp"] = save(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True)
    f["webp_lossy.webp"] = save(im_rgb, "WEBP", quality=80, method=4)
    f["webp_lossy_alpha.webp"] = save(Image.fromarray(rgba, "RGBA"), "WEBP", quality=70, method=4)
    # BMP
    f["bmp_rgb.bmp"] = save(im_rgb, "BMP")
    f["bmp_p.bmp"] = save(pal, "BMP")
    f["bmp_gray.bmp"] = save(Image.fromarray(gray, "L"), "BMP")
    # GIF: animated (first frame differs from the rest), and one with transparency
    frames = [Image.fromarray(picture(W, H, s), "RGB").quantize(64, dither=Image.Dither.NONE) for s in (10, 11, 12)]
    f["gif_anim.gif"] = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    f["gif_trns.gif"] = save(pal, "GIF", transparency=5)
    # TIFF
    f["tiff_rgb.tif"] = save(im_rgb, "TIFF")
    f["tiff_lzw.tif"] = save(im_rgb, "TIFF", compression="tiff_lzw")
    f["tiff_rgba.tif"] = save(Image.fromarray(rgba, "RGBA"), "TIFF")
    return f


def _interlaced_png(rgb):
    """Adam7-interlaced 8-bit RGB PNG, written by hand."""
    h, w = rgb.shape[:2]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    data = b""
    for x0, y0, dx, dy in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        data += b"".join(b"\x00" + r.tobytes() for r in sub)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data, 9))
            + chunk(b"IEND", b""))


def bombs(f):
    """Files whose headers declare 50000 x 50000 pixels (2.5 G pixels)."""
    out = {}
    out["bomb_png.png"] = png_raw(50000, 50000, 8, 2, [b"\x00" * 30])
    j = bytearray(f["jpeg_420.jpg"])
    i = j.find(b"\xff\xc0")
    struct.pack_into(">HH", j, i + 5, 50000, 50000)
    out["bomb_jpeg.jpg"] = bytes(j)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/data/media/img"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    f = fixtures()
    expected = {"pillow": PIL.__version__, "rule": "Image.open + qwen_vl_utils.to_rgb", "files": {}}
    for name, data in sorted(f.items()):
        with open(os.path.join(args.out, name), "wb") as fh:
            fh.write(data)
        im = Image.open(io.BytesIO(data))
        mode = im.mode
        out = np.asarray(to_rgb(im))
        assert out.dtype == np.uint8 and out.shape[2] == 3
        expected["files"][name] = {"mode": mode, "width": out.shape[1], "height": out.shape[0],
                                   "md5": hashlib.md5(out.tobytes()).hexdigest()}
    for name, data in sorted(bombs(f).items()):
        with open(os.path.join(args.out, name), "wb") as fh:
            fh.write(data)
    with open(os.path.join(args.out, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Dev check of media/resize.c against Pillow and torchvision on random cases.

Builds nothing itself: pass the path of a shared library built from
media/resize.c + core/err.c + core/pool.c, e.g.
  cc -O2 -shared -fPIC -I. media/resize.c core/err.c core/pool.c -lm -lpthread -o /tmp/rs/libresize.so
  /opt/golden/bin/python tools/golden/resize_check.py /tmp/rs/libresize.so [n_cases] [seed]
Prints the match rate (cases bit-exact) of each resizer and the worst case.
"""
import ctypes
import sys

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF


class Err(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("msg", ctypes.c_char * 1024)]


def load(path):
    lib = ctypes.CDLL(path)
    for name in ("vidi_resize_pil_bicubic", "vidi_resize_torch_bicubic"):
        f = getattr(lib, name)
        f.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                      ctypes.POINTER(Err)]
        f.restype = ctypes.c_int
    return lib


def run_c(fn, img, dw, dh):
    sh, sw, _ = img.shape
    src = np.ascontiguousarray(img)
    dst = np.zeros((dh, dw, 3), np.uint8)
    e = Err()
    rc = fn(src.ctypes.data, sw, sh, dst.ctypes.data, dw, dh, ctypes.byref(e))
    if rc != 0:
        raise RuntimeError(e.msg.decode())
    return dst


def ref_pil(img, dw, dh):
    return np.asarray(Image.fromarray(img).resize((dw, dh), Image.BICUBIC))


def ref_torch(img, dw, dh):
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    out = TF.resize(t, [dh, dw], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return out.numpy().transpose(1, 2, 0)


def rand_side(rng):
    r = rng.random()
    if r < 0.1:
        return int(rng.integers(1, 4))
    if r < 0.6:
        return int(rng.integers(4, 80))
    return int(rng.integers(80, 700))


def main():
    lib = load(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    stats = {}
    for name, cfn, ref in (("pil", lib.vidi_resize_pil_bicubic, ref_pil),
                           ("torch", lib.vidi_resize_torch_bicubic, ref_torch)):
        ok, worst = 0, (0, None)
        for i in range(n):
            sw, sh, dw, dh = (rand_side(rng) for _ in range(4))
            kind = rng.random()
            if kind < 0.6:
                img = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
            elif kind < 0.8:  # saturated extremes stress the clamps
                img = (rng.integers(0, 2, (sh, sw, 3)) * 255).astype(np.uint8)
            else:  # smooth gradient
                yy, xx = np.mgrid[0:sh, 0:sw]
                img = np.stack([(xx * 7 + yy * 3) % 256, (xx * yy) % 256, (yy * 11) % 256], -1).astype(np.uint8)
            a = run_c(cfn, img, dw, dh)
            b = ref(img, dw, dh)
            d = int(np.abs(a.astype(int) - b.astype(int)).max())
            if d == 0:
                ok += 1
            elif d > worst[0] or worst[1] is None:
                worst = (d, (sw, sh, dw, dh, int((a != b).sum())))
        stats[name] = (ok, n, worst)
        print(f"{name}: {ok}/{n} bit-exact; worst max|diff| {worst[0]} at (sw,sh,dw,dh,ndiff)={worst[1]}")
    return 0 if all(s[0] == s[1] for s in stats.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

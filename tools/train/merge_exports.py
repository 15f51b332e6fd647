#!/usr/bin/env python3
"""tools/train/merge_exports.py — one models.tgz from the exports of trainings run side by side.

Runs that train one model each (train.py --models vidi-shapes / --models vidi-shapes-draft,
see RUNS.md) export only their own model. The next run's --init-from wants both folders,
with one tokenizer, in one archive:

    python tools/train/merge_exports.py A-models.tgz B-models.tgz --out .train/models.tgz \\
        [--state-from B-models.tgz]

Each model folder (vidi-shapes/, vidi-shapes-draft/) and its heldout_*.json are taken from
the archive that holds it (an error when two do, or none); train_state.json from
--state-from (default: the archive holding vidi-shapes). The tokenizers must be equal.
"""

import argparse
import os
import shutil
import sys
import tarfile
import tempfile

NAMES = ["vidi-shapes", "vidi-shapes-draft"]


def unpack(path, dest):
    with tarfile.open(path, "r:*") as t:
        t.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(dest)
    root = os.path.join(dest, "models")
    if not os.path.isdir(root):
        sys.exit(f"{path}: no models/ folder inside")
    return root


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archives", nargs="+", help="models.tgz files written by train.py")
    ap.add_argument("--out", required=True, help="the merged models.tgz")
    ap.add_argument("--state-from", default=None, help="the archive whose train_state.json is kept")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="merge-") as tmp:
        roots = {a: unpack(a, os.path.join(tmp, str(i))) for i, a in enumerate(args.archives)}
        out_root = os.path.join(tmp, "out", "models")
        os.makedirs(out_root)
        source = {}
        for name in NAMES:
            have = [a for a, r in roots.items() if os.path.isfile(os.path.join(r, name, "config.json"))]
            if len(have) != 1:
                sys.exit(f"{name}: in {len(have)} of the archives ({', '.join(have) or 'none'}); need exactly one")
            source[name] = have[0]
            shutil.copytree(os.path.join(roots[have[0]], name), os.path.join(out_root, name))
            held = os.path.join(roots[have[0]], f"heldout_{name}.json")
            if os.path.isfile(held):
                shutil.copy2(held, out_root)
        toks = {n: open(os.path.join(out_root, n, "tokenizer.json"), encoding="utf-8").read() for n in NAMES}
        if toks[NAMES[0]] != toks[NAMES[1]]:
            sys.exit("the two models have different tokenizers: they cannot be a target / draft pair")
        state_from = args.state_from or source[NAMES[0]]
        if state_from not in roots:
            sys.exit(f"--state-from {state_from} is not one of the archives")
        st = os.path.join(roots[state_from], "train_state.json")
        if os.path.isfile(st):
            shutil.copy2(st, out_root)
        tmp_out = args.out + ".tmp"
        with tarfile.open(tmp_out, "w:gz", compresslevel=3) as t:
            t.add(out_root, arcname="models")
        os.replace(tmp_out, args.out)
    print(f"{args.out}: " + ", ".join(f"{n} from {source[n]}" for n in NAMES) + f"; train_state from {state_from}")


if __name__ == "__main__":
    main()

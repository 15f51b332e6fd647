#!/usr/bin/env python3
"""tools/train/evaluate.py — transformers' reference answers on real files (CPU).

Runs a model folder with PyTorch + transformers (float32, CPU) on every question of a
manifest written by tools/shapes/write_files.py, with the media path vidi follows:

  images  qwen_vl_utils.process_vision_info (Image.open -> to_rgb -> smart_resize with the
          folder's preprocessor_config min/max_pixels -> Pillow bicubic) ->
          Qwen2VLImageProcessorPil(do_resize=False)
  videos  qwen_vl_utils.process_vision_info with a PyAV reader registered as its video
          backend (this torchvision has no read_video and neither decord nor torchcodec is
          installed): every frame decoded in presentation order, total = decoded frames,
          video_fps = the stream's average_rate (as tools/golden/media.py does), then
          qwen-vl-utils' own smart_nframes, round(linspace) and torchvision resize ->
          Qwen2VLVideoProcessor(do_resize=False, do_sample_frames=False)
  text    the chat template (default system turn, the media, the question, the generation
          prompt), M-RoPE positions by the original Qwen2-VL rule passed explicitly,
          greedy decoding (greedy.py) until <|im_end|> or --max-tokens.

Writes --out (JSON): model, manifest, versions, "answers": [{file, kind, seed, type,
question, truth, answer, correct, ids}], accuracy per type and overall (captions
excluded; with --captions they are run too and reported apart). This file is the
reference the C engine's answers are compared with.

    /opt/golden/bin/python tools/train/evaluate.py --model models/vidi-shapes \\
        --manifest /tmp/shapes-files/manifest.json --out /tmp/shapes-files/reference_answers.json
"""

import argparse
import collections
import importlib.metadata as md
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import greedy  # noqa: E402
import mrope  # noqa: E402
import vocab  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))


def read_video_pyav(ele):
    """A qwen-vl-utils video reader backend on PyAV (same return values as its own)."""
    import av
    import qwen_vl_utils.vision_process as qvu

    path = ele["video"]
    if path.startswith("file://"):
        path = path[7:]
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "NONE"
        rate = s.average_rate
        frames, times = [], []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.time))
    assert times == sorted(times), "decoder output not in presentation order"
    total = len(frames)
    video_fps = float(rate) if rate else total / (times[-1] - times[0] + 1e-9)
    start, end, total = qvu.calculate_video_frame_range(ele, total, video_fps)
    n = qvu.smart_nframes(ele, total_frames=total, video_fps=video_fps)
    idx = torch.linspace(start, end, n).round().long().tolist()
    video = torch.from_numpy(np.stack([frames[i] for i in idx])).permute(0, 3, 1, 2).contiguous()
    sample_fps = n / max(total, 1e-6) * video_fps
    meta = {"fps": video_fps, "frames_indices": idx, "total_num_frames": total, "video_backend": "pyav"}
    return video, meta, sample_fps


def install_reader():
    import qwen_vl_utils.vision_process as qvu

    qvu.VIDEO_READER_BACKENDS["pyav"] = read_video_pyav
    qvu.get_video_reader_backend = lambda: "pyav"


def processors(model_dir):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    with open(os.path.join(model_dir, "preprocessor_config.json")) as f:
        pp = json.load(f)
    size = {"shortest_edge": pp["min_pixels"], "longest_edge": pp["max_pixels"]}
    ip = Qwen2VLImageProcessorPil(size=size, image_mean=pp["image_mean"], image_std=pp["image_std"],
                                  do_resize=False)
    vp = Qwen2VLVideoProcessor(size=size, image_mean=pp["image_mean"], image_std=pp["image_std"],
                               do_resize=False, do_sample_frames=False, cap_pixels_per_frame=True)
    return pp, ip, vp


def media_inputs(path, kind, pp, ip, vp):
    """(pixel_values f32, grid (t, h, w)) of one file, through qwen-vl-utils."""
    from qwen_vl_utils import process_vision_info

    if kind == "image":
        ele = {"type": "image", "image": path, "min_pixels": pp["min_pixels"], "max_pixels": pp["max_pixels"]}
    else:
        ele = {"type": "video", "video": path}
    images, videos = process_vision_info([{"role": "user", "content": [ele]}])
    if kind == "image":
        r = ip(images=images, return_tensors="pt")
        return r["pixel_values"].float(), tuple(int(x) for x in r["image_grid_thw"][0])
    v = videos[0]
    assert v.dtype == torch.float32 and torch.equal(v, v.round()), "resized frames are not whole numbers"
    r = vp(videos=[v.to(torch.uint8)], return_tensors="pt")
    return r["pixel_values_videos"].float(), tuple(int(x) for x in r["video_grid_thw"][0])


def prompt_for(tok, ids, kind, question, pv, grid):
    pad = ids["<|image_pad|>"] if kind == "image" else ids["<|video_pad|>"]
    base = tok.encode(vocab.render_prompt(kind, question), add_special_tokens=False).ids
    k = base.index(pad)
    toks = base[:k] + [pad] * (grid[0] * (grid[1] // 2) * (grid[2] // 2)) + base[k + 1:]
    pos, _ = mrope.positions(toks, [grid], ids["<|image_pad|>"], ids["<|video_pad|>"])
    return {"ids": toks, "pos": pos, "pixel_values": pv, "grid": grid, "kind": kind}


def versions():
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__}
    for p in ("qwen-vl-utils", "av", "pillow", "tokenizers", "numpy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--captions", action="store_true", help="also answer the caption prompt of each scene")
    ap.add_argument("--limit", type=int, default=0, help="first N scenes only")
    ap.add_argument("--max-tokens", type=int, default=24, help="new tokens per answer (captions: 4x)")
    ap.add_argument("--batch-size", type=int, default=1, help="questions of one file decoded together")
    args = ap.parse_args()

    from tokenizers import Tokenizer
    from transformers import Qwen2VLForConditionalGeneration
    import transformers

    transformers.logging.set_verbosity_error()
    install_reader()
    model = Qwen2VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32,
                                                            attn_implementation="sdpa").eval()
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    ids = vocab.special_ids(tok)
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    pp, ip, vp = processors(args.model)
    with open(args.manifest) as f:
        man = json.load(f)
    root = os.path.dirname(os.path.abspath(args.manifest))
    scenes = man["scenes"][:args.limit] if args.limit else man["scenes"]

    rows = []
    t0 = time.time()
    for s in scenes:
        path = os.path.join(root, s["file"])
        pv, grid = media_inputs(path, s["kind"], pp, ip, vp)
        qlist = list(s["questions"])
        if args.captions:
            qlist.append({"type": "caption", "question": s["caption_prompt"], "answer": s["caption"]})
        for k in range(0, len(qlist), args.batch_size):
            chunk = qlist[k:k + args.batch_size]
            prompts = [prompt_for(tok, ids, s["kind"], q["question"], pv, grid) for q in chunk]
            max_new = args.max_tokens * (4 if chunk[0]["type"] == "caption" else 1)
            outs = greedy.greedy(model, prompts, eos, ids["<|endoftext|>"], max_new_tokens=max_new)
            for q, o in zip(chunk, outs):
                a = tok.decode(o, skip_special_tokens=True).strip()
                rows.append({"file": s["file"], "kind": s["kind"], "seed": s["seed"], "type": q["type"],
                             "question": q["question"], "truth": q["answer"], "answer": a,
                             "correct": a == q["answer"], "ids": o})
        print(f"{s['file']}: " + "; ".join(f"{r['question']} -> {r['answer']!r}"
                                          for r in rows[-len(qlist):]), flush=True)
    per = collections.defaultdict(lambda: [0, 0])
    for r in rows:
        per[r["type"]][0] += r["correct"]
        per[r["type"]][1] += 1
    qa = [t for t in per if t != "caption"]
    n = sum(per[t][1] for t in qa)
    acc = sum(per[t][0] for t in qa) / n if n else 0.0
    out = {
        "model": args.model, "manifest": args.manifest,
        "generator": "tools/train/evaluate.py", "versions": versions(),
        "media_path": "qwen_vl_utils.process_vision_info (PyAV reader) + transformers Qwen2-VL processors "
                      "(do_resize=False); original-rule M-RoPE positions; float32; greedy",
        "accuracy": {"overall": acc, "n": n,
                     "per_type": {t: {"acc": per[t][0] / per[t][1], "n": per[t][1]} for t in sorted(per)}},
        "answers": rows,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"shapes accuracy: {acc:.2f} (N={n}) " +
          " ".join(f"{t}={per[t][0] / per[t][1]:.3f}" for t in sorted(per)) +
          f"  [{time.time() - t0:.1f}s] -> {args.out}")


if __name__ == "__main__":
    main()

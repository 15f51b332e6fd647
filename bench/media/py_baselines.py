"""bench/media/py_baselines.py — the Python baselines of the media benchmark,
timed in-process (interpreter start and imports excluded).

  pyav_sample_rgb       qwen-vl-utils' torchvision reader, done with PyAV:
                        decode every frame, convert each to rgb24, keep
                        round(linspace(0, total-1, n)) of them
  pyav_sample_patches   qwen_vl_utils.fetch_video with that reader (its
                        smart_resize + torchvision antialiased bicubic), then
                        transformers' Qwen2VLVideoProcessor -> patches
  pil_jpeg_patches      qwen_vl_utils.fetch_image (Pillow open, convert,
                        smart_resize, resize), then Qwen2VLImageProcessorPil

torchvision 0.29 no longer has io.read_video, which qwen-vl-utils' torchvision
reader calls; read_video decoded with PyAV exactly this way (every frame to an
rgb24 array), but also kept all of them in memory before selecting (11 GB
for the 60-s 1080p clip, more than this machine can spare). The reader here
keeps only the chosen frames, which favours the baseline slightly. The
processors get do_resize=False: fetch_video / fetch_image already resized to
a size their own smart_resize keeps, so this only skips a same-size resize
(again in the baseline's favour).

Prints one JSON line per case, like bench_media.
"""
import argparse
import json
import os
import statistics
import time

os.environ["FORCE_QWENVL_VIDEO_READER"] = "torchvision"  # read at import time

import av  # noqa: E402
import torch  # noqa: E402
from qwen_vl_utils import vision_process  # noqa: E402

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
THREADS = 2


def read_video_pyav(ele):
    """Drop-in for qwen-vl-utils' _read_video_torchvision (same frame choice,
    same return values), decoding with PyAV as torchvision.io.read_video did."""
    with av.open(ele["video"]) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = THREADS
        video_fps = float(stream.average_rate)
        total_frames = stream.frames  # checked against the decoded count below
        nframes = vision_process.smart_nframes(ele, total_frames=total_frames, video_fps=video_fps)
        idx = torch.linspace(0, total_frames - 1, nframes).round().long()
        want = {}
        for k, i in enumerate(idx.tolist()):
            want.setdefault(i, []).append(k)
        out = [None] * nframes
        n = 0
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")  # every frame, as read_video
            for k in want.get(n, ()):
                out[k] = torch.from_numpy(rgb)
            n += 1
    if n != total_frames:
        raise RuntimeError(f"decoded {n} frames, the container says {total_frames}")
    video = torch.stack(out).permute(0, 3, 1, 2).contiguous()  # TCHW uint8
    sample_fps = nframes / max(total_frames, 1e-6) * video_fps
    meta = dict(fps=video_fps, frames_indices=idx, total_num_frames=total_frames,
                video_backend="torchvision")
    return video, meta, sample_fps


vision_process.VIDEO_READER_BACKENDS["torchvision"] = read_video_pyav


def video_processor():
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor(image_mean=CLIP_MEAN, image_std=CLIP_STD, do_sample_frames=False,
                                 cap_pixels_per_frame=True)


def image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": 3136, "longest_edge": 12845056},
                                    image_mean=CLIP_MEAN, image_std=CLIP_STD)


def timed(name, fn, runs, extra):
    fn()  # warm-up
    ms = []
    info = {}
    for _ in range(runs):
        t0 = time.perf_counter()
        info = fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    row = {"case": name, "threads": THREADS, **extra, **info,
           "median_ms": round(statistics.median(ms), 3), "runs_ms": [round(x, 3) for x in ms]}
    print(json.dumps(row), flush=True)


def main():
    global THREADS
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--jpeg", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nframes", type=int, default=32)
    a = ap.parse_args()
    THREADS = a.threads
    torch.set_num_threads(a.threads)
    vp, ip = video_processor(), image_processor()
    ele = {"video": a.clip, "nframes": a.nframes}

    def sample_rgb():
        v, meta, _ = read_video_pyav(ele)
        return {"frames": int(v.shape[0]), "total_frames": int(meta["total_num_frames"])}

    def sample_patches():
        v = vision_process.fetch_video(ele)
        r = vp(videos=[v], do_resize=False, return_tensors="pt")
        g = [int(x) for x in r["video_grid_thw"][0]]
        return {"frames": int(v.shape[0]), "grid": g, "rows": int(r["pixel_values_videos"].shape[0])}

    def jpeg_patches():
        img = vision_process.fetch_image({"image": a.jpeg})
        r = ip(images=[img], do_resize=False, return_tensors="pt")
        g = [int(x) for x in r["image_grid_thw"][0]]
        return {"grid": g, "rows": int(r["pixel_values"].shape[0])}

    versions = {"pyav": av.__version__, "torch": torch.__version__}
    timed("pyav_sample_rgb", sample_rgb, a.runs, versions)
    timed("pyav_sample_patches", sample_patches, a.runs, versions)
    timed("pil_jpeg_patches", jpeg_patches, a.runs, versions)


if __name__ == "__main__":
    main()

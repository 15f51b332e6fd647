"""bench/media/report.py — turn the media benchmark's raw JSON lines (one per
case, from bench_media, decode_all and py_baselines.py in the same run) into
bench/results/media-sampling.json and media-image.json (../shared/BENCH.md
format) and print a short table.

Metrics are throughputs (videos/s, images/s = 1000 / median ms), so ratio =
value / baseline_value is vidi's speed-up and higher is better. Median
milliseconds are in the table and the notes.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def tool_version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--clip", required=True)
    ap.add_argument("--jpeg", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", required=True)
    a = ap.parse_args()

    rows = {}
    with open(a.raw) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                key = r["case"] + ("_rgb" if r.get("rgb") else "")
                if key in rows:  # a later round: pool its runs
                    r["runs_ms"] = rows[key]["runs_ms"] + r["runs_ms"]
                rows[key] = r
    for r in rows.values():
        r["median_ms"] = statistics.median(r["runs_ms"])
    need = ["vidi_sample_rgb", "vidi_sample_patches", "vidi_jpeg_patches", "decode_all",
            "decode_all_rgb", "pyav_sample_rgb", "pyav_sample_patches", "pil_jpeg_patches"]
    missing = [k for k in need if k not in rows]
    if missing:
        raise SystemExit(f"report.py: missing cases in {a.raw}: {missing}")

    # the two pipelines must agree on what they produce before their times are compared
    for v, b in (("vidi_sample_patches", "pyav_sample_patches"), ("vidi_jpeg_patches", "pil_jpeg_patches")):
        if rows[v]["grid"] != rows[b]["grid"] or rows[v]["rows"] != rows[b]["rows"]:
            raise SystemExit(f"report.py: {v} grid {rows[v]['grid']} != {b} grid {rows[b]['grid']}")
    gop60 = [k for k in ("vidi_sample_rgb_gop60", "decode_all_gop60", "decode_all_gop60_rgb") if k in rows]
    if gop60 and len(gop60) != 3:
        raise SystemExit(f"report.py: the GOP-60 clip lacks cases: has only {gop60}")
    total = rows["decode_all"]["frames"]
    if rows["vidi_sample_rgb"]["total_frames"] != total or rows["pyav_sample_rgb"]["total_frames"] != total:
        raise SystemExit("report.py: the frame counts of vidi, FFmpeg and PyAV disagree")
    if gop60 and rows["vidi_sample_rgb_gop60"]["total_frames"] != rows["decode_all_gop60"]["frames"]:
        raise SystemExit("report.py: the frame counts of vidi and FFmpeg disagree on the GOP-60 clip")

    ff = tool_version(["ffmpeg", "-version"]).split(" Copyright")[0]
    pyav, torch_v = rows["pyav_sample_rgb"]["pyav"], rows["pyav_sample_rgb"]["torch"]
    machine = f"{cpu_name()}, {os.cpu_count()} cores"
    date = datetime.date.today().isoformat()
    nf = rows["vidi_sample_rgb"]["frames"]
    g = rows["vidi_sample_patches"]["grid"]
    gi = rows["vidi_jpeg_patches"]["grid"]
    clip_desc = f"60 s 1920x1080 30 fps H.264, GOP 250 ({total} frames), {nf} frames"
    clip2_desc = f"60 s 1920x1080 30 fps H.264, GOP 60 ({total} frames), {nf} frames"
    jpeg_desc = "4032x3024 JPEG q90"

    def result(case, metric, v, b, label):
        value = 1000.0 / rows[v]["median_ms"]
        base = 1000.0 / rows[b]["median_ms"]
        return {"case": case, "metric": metric, "value": round(value, 4), "baseline": label,
                "baseline_value": round(base, 4), "ratio": round(value / base, 2),
                "higher_is_better": True}

    sampling = [
        result(f"{clip_desc} to RGB888 (seek-based decode)", "videos/s", "vidi_sample_rgb", "decode_all",
               f"{ff} libavcodec decoding every frame, no colour conversion, threads {a.threads}"),
        result(f"{clip_desc} to RGB888 (seek-based decode)", "videos/s", "vidi_sample_rgb", "decode_all_rgb",
               f"{ff} libavcodec decoding every frame + swscale to RGB24, threads {a.threads}"),
        result(f"{clip_desc} to RGB888 (seek-based decode)", "videos/s", "vidi_sample_rgb", "pyav_sample_rgb",
               f"PyAV {pyav}: every frame decoded to rgb24, round(linspace) kept (qwen-vl-utils reader), "
               f"threads {a.threads}"),
        result(f"{clip_desc} to patches, grid {g[0]}x{g[1]}x{g[2]}", "videos/s", "vidi_sample_patches",
               "pyav_sample_patches",
               f"qwen_vl_utils.fetch_video (PyAV {pyav} reader, torchvision resize) + transformers "
               f"Qwen2VLVideoProcessor, torch {torch_v}, {a.threads} threads"),
    ]
    if gop60:
        sampling += [
            result(f"{clip2_desc} to RGB888 (seek-based decode)", "videos/s", "vidi_sample_rgb_gop60",
                   "decode_all_gop60",
                   f"{ff} libavcodec decoding every frame, no colour conversion, threads {a.threads}"),
            result(f"{clip2_desc} to RGB888 (seek-based decode)", "videos/s", "vidi_sample_rgb_gop60",
                   "decode_all_gop60_rgb",
                   f"{ff} libavcodec decoding every frame + swscale to RGB24, threads {a.threads}"),
        ]
    image = [
        result(f"{jpeg_desc} to patches, grid {gi[0]}x{gi[1]}x{gi[2]}", "images/s", "vidi_jpeg_patches",
               "pil_jpeg_patches",
               f"qwen_vl_utils.fetch_image (Pillow open, convert, smart_resize, resize) + transformers "
               f"Qwen2VLImageProcessorPil, torch {torch_v}"),
    ]
    ms = {k: rows[k]["median_ms"] for k in need + gop60}
    ms_txt = ", ".join(f"{k} {ms[k]:.1f}" for k in need + gop60)
    common = (f"Median of {a.rounds} rounds; in each round every case runs once after its own warm-up, "
              f"the cases taking turns (so that load from other jobs falls on all of them alike), all in "
              f"one run of bench/media/run.sh "
              f"on a shared {os.cpu_count()}-core VM (other jobs may run beside it: ratios hold better "
              f"than absolute times). threads={a.threads} everywhere: libavcodec thread_count (frame+slice) "
              f"for vidi, decode_all and PyAV, torch.set_num_threads for the Python baselines. "
              f"Python times are in-process, imports and interpreter start excluded; vidi cases include "
              f"reading the file. Median ms: {ms_txt}. ")
    notes_s = common + (
        f"Inputs generated by run.sh with the ffmpeg CLI (testsrc2, libx264 preset veryfast, GOP 250, "
        f"yuv420p); frames round(linspace(0, {total - 1}, {nf})) as qwen-vl-utils; vidi seeks to the keyframe "
        f"before each target and decodes forward, skipping non-reference frames other than the targets "
        f"(AVDISCARD_NONREF), with runs of GOPs split over {a.threads} workers that each own a demuxer and a "
        f"single-threaded decoder (the kept frames are bit-identical either way; tests/media checks them "
        f"against PyAV decode-all): it decoded {rows['vidi_sample_rgb']['frames_decoded']} of "
        f"{total} frames to get these {nf} (targets {(total - 1) / (nf - 1):.0f} frames apart, keyframes "
        f"250 apart, so every GOP holds several targets). The goal (issue 3) is sampling >= 3x faster than "
        f"decode-all: on the GOP-250 clip "
        f"{'met' if ms['decode_all'] / ms['vidi_sample_rgb'] >= 3 else 'NOT met'} in this run "
        f"({ms['decode_all'] / ms['vidi_sample_rgb']:.2f}x)" + (
            f"; on the same picture encoded with a keyframe every 2 s (-g 60, as phones and streaming "
            f"encoders write), vidi decoded {rows['vidi_sample_rgb_gop60']['frames_decoded']} frames, "
            f"{'met' if ms['decode_all_gop60'] / ms['vidi_sample_rgb_gop60'] >= 3 else 'NOT met'} "
            f"({ms['decode_all_gop60'] / ms['vidi_sample_rgb_gop60']:.2f}x against decoding only, "
            f"{ms['decode_all_gop60_rgb'] / ms['vidi_sample_rgb_gop60']:.2f}x against decoding + RGB, which is "
            f"what vidi's side produces)" if gop60 else "") + f". The PyAV baseline keeps only the chosen frames in memory (torchvision's "
        f"read_video, which qwen-vl-utils calls and torchvision 0.29 dropped, kept all {total}, 11 GB); the "
        f"HF processors get do_resize=False since the frames are already at their smart_resize size; both "
        f"favour the baseline. Grids of vidi and the reference path were checked equal in this run. "
        f"Patches: video frames resized to {g[1] * 14}x{g[2] * 14}, f32 [{rows['vidi_sample_patches']['rows']}, "
        f"{rows['vidi_sample_patches']['cols']}].")
    notes_i = common + (
        f"JPEG from testsrc2 + uniform grain saved by Pillow quality 90 (4:2:0). Qwen2-VL preprocessor "
        f"defaults (min_pixels 3136, max_pixels 12845056): 4032x3024 is already a multiple of 28 inside the "
        f"bounds, so both resizes keep the size; the time is decode + rescale/normalise + patchify to "
        f"f32 [{rows['vidi_jpeg_patches']['rows']}, {rows['vidi_jpeg_patches']['cols']}]. Grids checked equal.")

    os.makedirs(a.out, exist_ok=True)
    for name, res, notes in (("media-sampling", sampling, notes_s), ("media-image", image, notes_i)):
        doc = {"bench": name, "date": date, "machine": machine, "command": a.command, "results": res,
               "notes": notes}
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")

    print(f"\n{'case':<42} {'vidi ms':>9} {'baseline':<34} {'base ms':>9} {'speed-up':>8}")
    table = [
        ("32 frames -> RGB", "vidi_sample_rgb", "decode_all", "FFmpeg decode all"),
        ("32 frames -> RGB", "vidi_sample_rgb", "decode_all_rgb", "FFmpeg decode all + RGB"),
        ("32 frames -> RGB", "vidi_sample_rgb", "pyav_sample_rgb", "PyAV (qwen-vl-utils reader)"),
        ("32 frames -> patches", "vidi_sample_patches", "pyav_sample_patches", "fetch_video + HF processor"),
        ("4032x3024 JPEG -> patches", "vidi_jpeg_patches", "pil_jpeg_patches", "Pillow + HF processor (Pil)"),
    ]
    if gop60:
        table += [
            ("32 frames -> RGB, GOP 60", "vidi_sample_rgb_gop60", "decode_all_gop60", "FFmpeg decode all"),
            ("32 frames -> RGB, GOP 60", "vidi_sample_rgb_gop60", "decode_all_gop60_rgb", "FFmpeg decode all + RGB"),
        ]
    for case, v, b, label in table:
        print(f"{case:<42} {ms[v]:>9.1f} {label:<34} {ms[b]:>9.1f} {ms[b] / ms[v]:>7.2f}x")
    print(f"\nwrote {a.out}/media-sampling.json and {a.out}/media-image.json")


if __name__ == "__main__":
    main()

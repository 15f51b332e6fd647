"""bench/gpu/report.py — turn the GPU benchmark's raw JSON lines (baselines.py
and bench_gpu, one file per model shape: bench/results/gpu-raw-<model>.jsonl)
into bench/results/gpu-{vision,prefill,attention,decode,gemm}.json in the format
of ../shared/BENCH.md, and print a table.

    python3 bench/gpu/report.py --out bench/results --command "..." bench/results/gpu-raw-*.jsonl

Every row compares vidi with a baseline timed in the same run (same raw file).
`ratio` is vidi's advantage, > 1 meaning vidi is better: value / baseline_value
for higher-is-better metrics (images/s, TFLOP/s, tokens/s) and baseline_value /
value for times (TTFT ms). A case vidi or the baseline could not run has value
(or baseline_value) null and ratio null, and the notes say why; nothing is
filled in.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_models  # noqa: E402  (shapes only; torch is not imported)

HBM_BYTES_PER_S = 3.35e12   # H100 SXM HBM3, as issue 4 states it


def load(paths):
    runs = []   # one entry per raw file: {"model", "lines": {(case, impl): line}, "env": {...}}
    for p in paths:
        lines, env, vidi_env, failed = {}, None, None, []
        model = None
        with open(p) as f:
            for ln in f:
                ln = ln.strip()
                if not ln.startswith("{"):
                    continue
                try:
                    r = json.loads(ln)
                except json.JSONDecodeError:
                    continue
                c, impl = r.get("case"), r.get("impl")
                if c == "env" and impl == "transformers":
                    env = r
                elif c == "env" and impl == "vidi":
                    vidi_env = r
                elif c == "step_failed":
                    failed.append(r)
                if r.get("model") and r.get("model") != "op" and not model:
                    model = r["model"]
                if "runs_ms" in r and r["runs_ms"]:
                    r["median_ms"] = statistics.median(r["runs_ms"])
                lines[(c, impl)] = r
        runs.append({"path": p, "model": model or os.path.basename(p), "lines": lines, "env": env or {},
                     "vidi_env": vidi_env or {}, "failed": failed})
    return runs


def fmt(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


class Sheet:
    def __init__(self, bench):
        self.bench, self.results, self.notes = bench, [], []

    def add(self, case, metric, value, baseline, baseline_value, higher, why=None):
        ratio = None
        if value is not None and baseline_value is not None and value > 0 and baseline_value > 0:
            ratio = value / baseline_value if higher else baseline_value / value
        self.results.append({"case": case, "metric": metric,
                             "value": None if value is None else round(value, 3),
                             "baseline": baseline,
                             "baseline_value": None if baseline_value is None else round(baseline_value, 3),
                             "ratio": None if ratio is None else round(ratio, 3),
                             "higher_is_better": higher})
        if why:
            self.notes.append(f"{case} vs {baseline}: {why}")


def why_missing(lines, case, impl, failed, model):
    r = lines.get((case, impl))
    if r is None and impl == "vidi":
        for step in ("backend", "config", "load"):
            e = lines.get((step, "vidi"))
            if e and "error" in e and (step != "load" or not case.startswith(("attn_", "gemm_"))):
                return f"vidi did not run it: {step} failed: {e['error']}"
    if r is None:
        f = [x for x in failed if x.get("impl") == ("vidi" if impl == "vidi" else "transformers")]
        if f:
            return f"{impl} did not report it (its step ended with rc {f[0].get('rc', '?')}, " \
                   f"limit {f[0].get('limit_s', '?')} s{', ' + f[0]['error'] if 'error' in f[0] else ''})"
        return f"{impl} did not report it"
    if "error" in r:
        return f"{impl} failed: {r['error']}"
    if "unsupported" in r:
        return f"{impl}: {r['unsupported']}"
    return None


def val(lines, case, impl, fn):
    r = lines.get((case, impl))
    if r is None or "error" in r or "unsupported" in r:
        return None
    try:
        return fn(r)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def tflops(r):
    return r["flops"] / (r["median_ms"] / 1e3) / 1e12


def prefill_flops(model, S):
    """Matrix FLOPs of the decoder over S tokens (2 per multiply-add, lm_head for
    the last row only) plus causal attention (4*S*S*D*Hq/2 per layer)."""
    c = make_models.MODELS[model]
    h, i, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    hq, hkv = c["num_attention_heads"], c["num_key_value_heads"]
    d = h // hq
    per_layer = h * h + 2 * h * hkv * d + h * h + 3 * h * i
    return 2.0 * S * per_layer * L + 2.0 * h * c["vocab_size"] + L * 4.0 * S * S * d * hq / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("raw", nargs="+")
    a = ap.parse_args()
    runs = load(a.raw)
    runs.sort(key=lambda r: r["model"])

    sheets = {k: Sheet(f"gpu-{k}") for k in ("vision", "prefill", "attention", "decode", "gemm")}
    machines, dates, versions = set(), set(), set()
    for run in runs:
        L, M, failed = run["lines"], run["model"], run["failed"]
        env = run["env"]
        if env:
            machines.add(f"{env.get('gpu', '?')}, CUDA {env.get('cuda', '?')}")
            dates.add(env.get("date", "?"))
            versions.add(f"torch {env.get('torch', '?')}, transformers {env.get('transformers', '?')}, "
                         f"cuDNN {env.get('cudnn', '?')}")
        tfv = f"transformers {env.get('transformers', '?')}"
        # ---- vision ----
        vis = [c for (c, i) in L if c.startswith("vision_448_b") and i == "transformers"] or ["vision_448_b32"]
        for c in vis:
            n = int(c.rsplit("b", 1)[1])
            v = val(L, c, "vidi", lambda r: r["items"] / (r["median_ms"] / 1e3))
            b = val(L, c, "transformers", lambda r: r["items"] / (r["median_ms"] / 1e3))
            why = why_missing(L, c, "vidi", failed, M) or why_missing(L, c, "transformers", failed, M)
            sheets["vision"].add(f"{M} vision tower, {n} images 448x448 (grid 1x32x32) in one call", "images/s",
                                 v, f"{tfv} sdpa bf16", b, True, why)
        # ---- prefill (TTFT) + effective TFLOP/s against the measured GEMM peak ----
        gemm_peak = None
        peaks = [tflops(r) for (c, i), r in L.items() if c.startswith("gemm_") and i == "torch_matmul"
                 and "error" not in r]
        if peaks:
            gemm_peak = max(peaks)
        for S in (8192, 32768):
            c = f"prefill_text_{S}"
            v = val(L, c, "vidi", lambda r: r["median_ms"])
            b = val(L, c, "transformers", lambda r: r["median_ms"])
            why = why_missing(L, c, "vidi", failed, M) or why_missing(L, c, "transformers", failed, M)
            sheets["prefill"].add(f"{M} text prefill TTFT, {S} tokens", "ms", v, f"{tfv} sdpa bf16", b, False, why)
            fl = prefill_flops(M, S) if M in make_models.MODELS else None
            if fl and v:
                sheets["prefill"].add(f"{M} text prefill {S} tokens, effective TFLOP/s vs the GEMM peak",
                                      "TFLOP/s", fl / (v / 1e3) / 1e12,
                                      "best torch.matmul TFLOP/s of this run (gpu-gemm.json)", gemm_peak, True,
                                      None if gemm_peak else "no torch.matmul number in this run")
        c = "video64_448"
        v = val(L, c, "vidi", lambda r: r["median_ms"])
        b = val(L, c, "transformers", lambda r: r["median_ms"])
        why = why_missing(L, c, "vidi", failed, M) or why_missing(L, c, "transformers", failed, M)
        tok = val(L, c, "transformers", lambda r: r["tokens"]) or val(L, c, "vidi", lambda r: r["tokens"])
        sheets["prefill"].add(f"{M} video prompt TTFT, 64 frames 448x448 (grid 32x32x32, {tok} tokens)", "ms",
                              v, f"{tfv} sdpa bf16", b, False, why)
        # ---- attention (the 2B run carries it) ----
        for S in (8192, 32768, 131072):
            c = f"attn_causal_{S}"
            if not any(k[0] == c for k in L):
                continue
            v = val(L, c, "vidi", tflops)
            for bname in ("flash", "cudnn"):
                impl = f"torch_sdpa_{bname}"
                b = val(L, c, impl, tflops)
                why = why_missing(L, c, "vidi", failed, M) or why_missing(L, c, impl, failed, M)
                sheets["attention"].add(f"causal attention S={S}, 12 q heads / 2 kv heads, D=128, bf16", "TFLOP/s",
                                        v, f"torch {env.get('torch', '?')} SDPA {bname} backend (k/v expanded "
                                        f"to 12 heads)", b, True, why)
        # ---- decode ----
        c = "decode_b1"
        v = val(L, c, "vidi", lambda r: r["tokens_per_s"])
        why_v = why_missing(L, c, "vidi", failed, M)
        w = L.get(("weights", "transformers"), {})
        if w:
            sheets["decode"].add(f"{M} decode batch 1, tokens/s", "tokens/s", v,
                                 f"HBM roofline: all {w['all_bytes'] / 1e9:.2f} GB of weights / 3.35 TB/s "
                                 "(issue 4's definition)", HBM_BYTES_PER_S / w["all_bytes"], True, why_v)
            sheets["decode"].add(f"{M} decode batch 1, tokens/s", "tokens/s", v,
                                 f"HBM roofline: {w['decode_bytes'] / 1e9:.2f} GB a step reads (decoder layers, "
                                 "final norm, lm_head; no vision tower, no unread embedding table) / 3.35 TB/s",
                                 HBM_BYTES_PER_S / w["decode_bytes"], True, None)
        b = val(L, c, "transformers", lambda r: r["tokens_per_s"])
        sheets["decode"].add(f"{M} decode batch 1, tokens/s", "tokens/s", v,
                             f"{tfv} generate greedy, dynamic cache", b, True,
                             why_v or why_missing(L, c, "transformers", failed, M))
        c = "decode_b1_paged"
        v = val(L, c, "vidi", lambda r: r["tokens_per_s"])
        why_v = why_missing(L, c, "vidi", failed, M)
        if w:
            sheets["decode"].add(f"{M} decode batch 1 over the paged KV pool, tokens/s", "tokens/s", v,
                                 f"HBM roofline: all {w['all_bytes'] / 1e9:.2f} GB of weights / 3.35 TB/s "
                                 "(issue 4's definition)", HBM_BYTES_PER_S / w["all_bytes"], True, why_v)
        b = val(L, "decode_b1", "transformers", lambda r: r["tokens_per_s"])
        sheets["decode"].add(f"{M} decode batch 1 over the paged KV pool, tokens/s", "tokens/s", v,
                             f"{tfv} generate greedy, dynamic cache", b, True,
                             why_v or why_missing(L, "decode_b1", "transformers", failed, M))
        c = "decode_b64"
        v = val(L, c, "vidi", lambda r: r["tokens_per_s"])
        b = val(L, c, "transformers", lambda r: r["tokens_per_s"])
        sheets["decode"].add(f"{M} decode batch 64, tokens/s", "tokens/s", v,
                             f"{tfv} generate greedy, dynamic cache", b, True,
                             why_missing(L, c, "vidi", failed, M) or why_missing(L, c, "transformers", failed, M))
        # ---- GEMM ----
        for (c, impl), r in sorted(L.items()):
            if not c.startswith("gemm_") or impl != "torch_matmul":
                continue
            v = val(L, c, "vidi", tflops)
            b = val(L, c, impl, tflops)
            why = why_missing(L, c, "vidi", failed, M) or why_missing(L, c, impl, failed, M)
            sheets["gemm"].add(f"{M} {c[5:]} M={r['m']} N={r['n']} K={r['k']} bf16", "TFLOP/s", v,
                               f"torch {env.get('torch', '?')} torch.matmul(x, w.t()) bf16", b, True, why)

    smi = ""
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    machine = "; ".join(sorted(machines)) or "unknown GPU"
    if smi:
        machine += f" (nvidia-smi: {smi})"
    vidi_dev = sorted({r["vidi_env"].get("device", "") for r in runs if r["vidi_env"]} - {""})
    date = sorted(dates - {"?"})[-1] if dates - {"?"} else datetime.date.today().isoformat()
    common = [
        f"{', '.join(sorted(versions)) or 'no baseline environment line'}; vidi backend on {', '.join(vidi_dev) or '?'}.",
        "Random-weight checkpoints with the real shapes of Qwen2-VL-2B-Instruct and Qwen2-VL-7B-Instruct "
        "(bench/gpu/make_models.py: transformers builds them in bf16 on the GPU, weights N(0, 0.02), norms 1, "
        "saved as safetensors; vidi loads the same folder). Everything bf16 with fp32 accumulation.",
        "Each case: a warm-up, then the median of the timed runs, the GPU synchronised before every clock read "
        "(torch.cuda.synchronize / be->ops->synchronize); short ops (attention, GEMM) time back-to-back calls "
        "per run. vidi and its baseline run one after the other in the same run on the same GPU.",
        "ratio > 1 means vidi is better: value / baseline_value for rates, baseline_value / value for times (ms).",
    ]
    if len(runs) > 1 and (len(machines) > 1 or len(dates) > 1):
        common.append(f"The model shapes were run in separate runs ({', '.join(sorted(dates))}; "
                      f"{'; '.join(sorted(machines))}); each row still pairs numbers of one run.")
    specific = {
        "vision": "vidi's time includes uploading the f32 pixels from host memory (vidi_vision_encode takes host "
                  "pixels); transformers gets bf16 pixels already on the GPU.",
        "prefill": "Text: S random ids, one forward, logits of the last row only (transformers: "
                   "logits_to_keep=1) and a greedy pick; vidi: vidi_text_embed + vidi_text_forward into a KV "
                   "cache of capacity S + sample. Video: 8 text ids, vision start, 8192 video pads, vision end, 8 "
                   "text ids with pixel rows [32768, 1176]; vidi: vidi_generate(max_tokens 1) from host f32 "
                   "pixels, transformers: forward with pixel_values_videos bf16 on the GPU. Effective TFLOP/s "
                   "counts 2 FLOPs per multiply-add of the decoder's projections and causal attention "
                   "(4*S*S*D*Hq/2 per layer); the goal is >= 0.75 of the best torch.matmul number.",
        "attention": "FLOPs = 4*S*S*D*Hq/2 (causal half), batch 1, one sequence. vidi's op reads the 2 KV heads "
                     "(GQA); torch SDPA gets k/v expanded to 12 heads.",
        "decode": "Greedy, 16 random prompt ids, no stop at end-of-sequence; tokens/s = B*(N-1) / (t(N new "
                  "tokens) - t(1 new token)), N = 128, whole generate calls timed on both sides. vidi's batch 1 is "
                  "vidi_generate (contiguous KV cache, graphs); 'over the paged KV pool' and batch 64 are "
                  "vidi_text_forward_paged per prompt then vidi_text_decode_batch steps (graphs) with GPU "
                  "sampling. The roofline rows use 3.35 TB/s.",
        "gemm": "y[M,N] = x[M,K] w[N,K]^T, M = 8192 rows, no bias; FLOPs = 2*M*N*K. vis_* are the vision "
                "tower's projections (same in both shapes).",
    }
    os.makedirs(a.out, exist_ok=True)
    print(f"\nGPU benchmark — {machine}, {date}")
    for k, s in sheets.items():
        doc = {"bench": s.bench, "date": date, "machine": machine, "command": a.command, "results": s.results,
               "notes": " ".join(common + [specific[k]] + s.notes)}
        with open(os.path.join(a.out, f"{s.bench}.json"), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"\n{s.bench}")
        print(f"  {'case':<78} {'metric':>9} {'vidi':>10} {'baseline':>10} {'ratio':>7}  baseline")
        for r in s.results:
            print(f"  {r['case'][:78]:<78} {r['metric']:>9} {fmt(r['value'])[:10]:>10} "
                  f"{fmt(r['baseline_value'])[:10]:>10} {fmt(r['ratio'], 2):>7}  {r['baseline'][:60]}")
        for n in s.notes:
            print(f"  note: {n}")
    print(f"\nwrote {', '.join(s.bench + '.json' for s in sheets.values())} to {a.out}")


if __name__ == "__main__":
    main()

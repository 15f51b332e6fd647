"""bench/gpu/baselines.py — the transformers / torch side of the GPU benchmark
(issue 4 item 5). Prints one JSON line per case on stdout (progress on
stderr); bench_gpu.c prints the same lines for vidi and report.py pairs them.

    python3 bench/gpu/baselines.py --model qwen2vl-2b-shape --models-dir /tmp/vidi-bench-models \
        [--quick] [--cases vision,prefill,video,attention,gemm,decode]

The model folder is made first when missing (make_models.build: random bf16
weights with the real shapes, built on the GPU and saved), and the model just
built is the one timed. Everything is bf16 on one GPU, attention "sdpa",
torch.inference_mode. Each case: warm-up, then the median of --runs runs,
torch.cuda.synchronize() before every clock read.

Cases (same names, shapes and counting in bench_gpu.c):
  vision_448_b32     32 images of 448x448 (grid 1x32x32 each, 32768 patch rows
                     [32768, 1176] bf16 already on the GPU) through the vision
                     tower in one call; images/s
  prefill_text_<S>   S random text ids, one forward with a fresh cache, logits
                     of the last row (logits_to_keep=1) and their argmax; TTFT ms
  video64_448        a 64-frame 448x448 video (grid 32x32x32: 32768 patch rows,
                     8192 merged tokens) between 8 + 8 text tokens and the vision
                     start/end tokens: vision tower + prefill + argmax; TTFT ms
  attn_causal_<S>    torch SDPA, causal, D=128, 12 query heads, 2 KV heads (the
                     2B model) expanded to 12 for SDPA, batch 1, flash and cuDNN
                     backends; TFLOP/s counting 4*S*S*D*Hq/2 (causal half)
  gemm_<name>        torch.matmul(x[M,K], w[N,K].T), M = 8192, the model's
                     projection shapes; TFLOP/s counting 2*M*N*K
  decode_b<B>        model.generate greedy, B prompts of 16 random ids, dynamic
                     cache; tokens/s = B*(N-1) / (t(N new) - t(1 new)), N = 128
"""
import argparse
import inspect
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import make_models  # noqa: E402

TEXT_VOCAB = 151643   # ids below the special tokens
VIDEO_PAD, VSTART, VEND = 151656, 151652, 151653


def log(*a):
    print("baselines:", *a, file=sys.stderr, flush=True)


def emit(**kw):
    print(json.dumps(kw), flush=True)


DEV = "cuda"


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def time_runs(fn, runs, warmup=1):
    for _ in range(warmup):
        fn()
    sync()
    ms = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def time_op(fn, runs, min_ms=25.0):
    """Short ops: each run is `reps` back-to-back calls, reps chosen from the
    warm-up so that a run lasts at least min_ms. Returns ms per call."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max((time.perf_counter() - t0) * 1e3, 1e-3)
    reps = max(1, min(200, int(min_ms / one) + 1))
    ms = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        ms.append((time.perf_counter() - t0) * 1e3 / reps)
    return ms, reps


def gemm_shapes(name):
    c = make_models.MODELS[name]
    h, i, nh, kvh = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = h // nh
    v = c["vision_config"]
    e = v["embed_dim"]
    return [("q_proj", h, h), ("kv_proj", kvh * d, h), ("o_proj", h, h), ("gate_up_proj", i, h),
            ("down_proj", h, i), ("vis_qkv", 3 * e, e), ("vis_proj", e, e),
            ("vis_fc1", e * v["mlp_ratio"], e), ("vis_fc2", e, e * v["mlp_ratio"])]


def weight_bytes(model):
    seen, allb = set(), 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        allb += p.numel() * p.element_size()
    inner = getattr(model, "model", model)
    vis = getattr(inner, "visual", None) or getattr(model, "visual")
    visb = sum(p.numel() * p.element_size() for p in vis.parameters())
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    # a decode step reads every decoder layer, the final norm and lm_head; the
    # embedding table only when it is lm_head (tied)
    dec = allb - visb - (0 if tied else emb.numel() * emb.element_size())
    return allb, dec, tied


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2vl-2b-shape", choices=sorted(make_models.MODELS))
    ap.add_argument("--models-dir", default="/tmp/vidi-bench-models")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", default="vision,prefill,video,attention,gemm,decode")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script only (tiny model)")
    a = ap.parse_args()
    global DEV
    DEV = dev = a.device
    cases = set(a.cases.split(","))
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("baselines.py: no CUDA device")
    import transformers

    if dev == "cuda":
        emit(case="env", impl="transformers", date=time.strftime("%Y-%m-%d"), torch=torch.__version__, transformers=transformers.__version__,
             cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), gpu=torch.cuda.get_device_name(0),
             gpu_mem_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))

    M = a.model
    runs = a.runs
    model, folder, t_build, t_save = make_models.build(M, a.models_dir, device=dev)
    emit(case="make_model", impl="transformers", model=M, dir=folder, build_s=round(t_build, 2),
         save_s=round(t_save, 2))
    allb, decb, tied = weight_bytes(model)
    emit(case="weights", impl="transformers", model=M, all_bytes=allb, decode_bytes=decb, tied=tied)
    cfg = make_models.MODELS[M]
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None) or getattr(model, "visual")
    fwd_params = inspect.signature(model.forward).parameters
    g = torch.Generator(device="cpu").manual_seed(1)

    def guarded(case, fn, impl="transformers"):
        try:
            with torch.inference_mode():
                fn()
        except Exception as e:  # a case that cannot run is reported, not faked
            emit(case=case, impl=impl, model=M, error=f"{type(e).__name__}: {e}"[:500])
            log(case, "failed:", e)
        finally:
            if dev == "cuda":
                torch.cuda.empty_cache()

    # ---- vision tower, 32 images 448x448 ----
    def vision():
        n, side = 32, 32
        pix = torch.randn(n * side * side, 1176, generator=g).to(dev, torch.bfloat16)
        grid = torch.tensor([[1, side, side]] * n, device=dev)
        ms = time_runs(lambda: visual(pix, grid_thw=grid), runs)
        emit(case="vision_448_b32", impl="transformers", model=M, items=n, patch_rows=n * side * side,
             median_ms=statistics.median(ms), runs_ms=ms)
    if "vision" in cases:
        log("vision tower")
        guarded("vision_448_b32", vision)

    # ---- prefill TTFT ----
    def prefill(S):
        ids = torch.randint(0, TEXT_VOCAB, (1, S), generator=g).to(dev)

        def f():
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1].argmax(-1)
        ms = time_runs(f, runs)
        emit(case=f"prefill_text_{S}", impl="transformers", model=M, tokens=S,
             median_ms=statistics.median(ms), runs_ms=ms)
    if "prefill" in cases:
        for S in (8192, 32768):
            log("prefill", S)
            guarded(f"prefill_text_{S}", lambda S=S: prefill(S))

    # ---- video prompt TTFT ----
    def video():
        t, side, pre, post = 32, 32, 8, 8
        nvis = t * side * side // 4
        ids = torch.cat([torch.randint(0, TEXT_VOCAB, (pre,), generator=g), torch.tensor([VSTART]),
                         torch.full((nvis,), VIDEO_PAD), torch.tensor([VEND]),
                         torch.randint(0, TEXT_VOCAB, (post,), generator=g)])[None].to(dev)
        pix = torch.randn(t * side * side, 1176, generator=g).to(dev, torch.bfloat16)
        grid = torch.tensor([[t, side, side]], device=dev)
        kw = dict(input_ids=ids, pixel_values_videos=pix, video_grid_thw=grid, use_cache=True, logits_to_keep=1)
        if "mm_token_type_ids" in fwd_params:
            kw["mm_token_type_ids"] = (ids == VIDEO_PAD).int() * 2

        def f():
            return model(**kw).logits[:, -1].argmax(-1)
        ms = time_runs(f, runs)
        emit(case="video64_448", impl="transformers", model=M, tokens=int(ids.shape[1]), patch_rows=t * side * side,
             median_ms=statistics.median(ms), runs_ms=ms)
    if "video" in cases:
        log("video prompt")
        guarded("video64_448", video)

    # ---- attention (2B heads; the op is model-independent, run once) ----
    def attention(S, backend, bname):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        hq, hkv, D = 12, 2, 128
        q = torch.randn(1, hq, S, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, hkv, S, D, device=dev, dtype=torch.bfloat16).repeat_interleave(hq // hkv, 1)
        v = torch.randn(1, hkv, S, D, device=dev, dtype=torch.bfloat16).repeat_interleave(hq // hkv, 1)
        be = getattr(SDPBackend, backend)
        with sdpa_kernel([be]):
            ms, reps = time_op(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), runs)
        flops = 4.0 * S * S * D * hq / 2
        emit(case=f"attn_causal_{S}", impl=f"torch_sdpa_{bname}", model="op", seq=S, heads_q=hq, heads_kv=hkv,
             head_dim=D, flops=flops, reps=reps, median_ms=statistics.median(ms), runs_ms=ms)
    if "attention" in cases and M != "qwen2vl-7b-shape":
        sizes = (8192, 32768) if a.quick else (8192, 32768, 131072)
        for S in sizes:
            for backend, bname in (("FLASH_ATTENTION", "flash"), ("CUDNN_ATTENTION", "cudnn")):
                log("attention", S, bname)
                guarded(f"attn_causal_{S}", lambda S=S, b=backend, n=bname: attention(S, b, n),
                        impl=f"torch_sdpa_{bname}")

    # ---- GEMM ----
    def gemm(pname, N, K, Mrows=8192):
        x = torch.randn(Mrows, K, device=dev, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
        ms, reps = time_op(lambda: torch.matmul(x, w.t()), runs)
        emit(case=f"gemm_{pname}", impl="torch_matmul", model=M, m=Mrows, n=N, k=K, flops=2.0 * Mrows * N * K,
             reps=reps, median_ms=statistics.median(ms), runs_ms=ms)
    if "gemm" in cases:
        for pname, N, K in gemm_shapes(M):
            if M == "qwen2vl-7b-shape" and pname.startswith("vis_"):
                continue  # the vision tower is the same in both models
            log("gemm", pname, N, K)
            guarded(f"gemm_{pname}", lambda p=pname, N=N, K=K: gemm(p, N, K), impl="torch_matmul")

    # ---- decode ----
    def decode(B):
        ntok = a.decode_tokens
        ids = torch.randint(0, TEXT_VOCAB, (B, 16), generator=g).to(dev)
        mask = torch.ones_like(ids)

        def gen(n):
            return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0)
        out = gen(ntok)
        assert out.shape[1] == 16 + ntok, out.shape
        t1 = time_runs(lambda: gen(1), runs)
        tn = time_runs(lambda: gen(ntok), runs, warmup=0)
        dt = statistics.median(tn) - statistics.median(t1)
        emit(case=f"decode_b{B}", impl="transformers", model=M, batch=B, prompt=16, new_tokens=ntok,
             t1_ms=statistics.median(t1), tn_ms=statistics.median(tn), runs_ms=tn,
             tokens_per_s=B * (ntok - 1) / (dt / 1e3), median_ms=statistics.median(tn))
    if "decode" in cases:
        for B in (1, 64):
            log("decode batch", B)
            guarded(f"decode_b{B}", lambda B=B: decode(B))


if __name__ == "__main__":
    main()

"""bench/gpu/make_models.py — random-weight Qwen2-VL checkpoints with the real
shapes of Qwen2-VL-2B-Instruct and Qwen2-VL-7B-Instruct, written by
transformers from a config (no download; never committed).

    python3 bench/gpu/make_models.py --out /tmp/vidi-bench-models [--7b] [--tiny]

Each model goes to <out>/<name>/ (qwen2vl-2b-shape, qwen2vl-7b-shape; with
--tiny a 2-layer toy, qwen2vl-tiny-shape, for a CPU smoke test). The model is
built in bf16 on the GPU (CPU when there is none), every parameter drawn anew
(matrices and biases N(0, 0.02), norm weights 1), and saved with
save_pretrained (safetensors). config.json is then written in the flat form of
the Hub checkpoints, which both transformers and vidi read. A folder whose
config.json and weights already exist is kept (delete it to remake).

baselines.py imports build() so that the model it times is the one it just
saved, without loading it again.
"""
import argparse
import json
import os
import sys
import time

# The Hub config.json of Qwen2-VL-2B-Instruct / 7B-Instruct (weights random).
_COMMON = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "max_position_embeddings": 32768,
    "model_type": "qwen2_vl",
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
}

_VISION = {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
           "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
           "temporal_patch_size": 2}

MODELS = {
    "qwen2vl-2b-shape": dict(_COMMON, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                             max_window_layers=28, num_attention_heads=12, num_key_value_heads=2,
                             tie_word_embeddings=True, vocab_size=151936,
                             vision_config=dict(_VISION, hidden_size=1536)),
    "qwen2vl-7b-shape": dict(_COMMON, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                             max_window_layers=28, num_attention_heads=28, num_key_value_heads=4,
                             tie_word_embeddings=False, vocab_size=152064,
                             vision_config=dict(_VISION, hidden_size=3584)),
    # a toy with the same structure (head_dim 128, mrope 16/24/24) for a CPU smoke test
    "qwen2vl-tiny-shape": dict(_COMMON, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                               max_window_layers=2, num_attention_heads=2, num_key_value_heads=1,
                               tie_word_embeddings=True, vocab_size=151936,
                               vision_config=dict(_VISION, depth=2, embed_dim=128, num_heads=2,
                                                  hidden_size=256)),
}

GENERATION_CONFIG = {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "do_sample": False,
                     "pad_token_id": 151643}


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _has_weights(d):
    return os.path.exists(os.path.join(d, "model.safetensors")) or \
        os.path.exists(os.path.join(d, "model.safetensors.index.json"))


def build(name, out_root, device=None, save=True, log=sys.stderr):
    """Build model `name` on `device` (bf16, random weights) and save it under
    out_root/name unless it exists. Returns (model, folder, seconds to build,
    seconds to save; save is 0 when the folder was kept)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    flat = MODELS[name]
    exists = os.path.exists(os.path.join(d, "config.json")) and _has_weights(d)
    if not exists:
        _write_json(os.path.join(d, "config.json"), flat)
    cfg = Qwen2VLConfig.from_pretrained(d)
    cfg._attn_implementation = "sdpa"

    t0 = time.perf_counter()
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen2VLForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(old)
    model = model.to(device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02)
            elif "norm" in pname or ".ln_" in pname or "ln_q" in pname:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    if flat["tie_word_embeddings"]:
        model.tie_weights()
    if device == "cuda":
        torch.cuda.synchronize()
    t_build = time.perf_counter() - t0

    t_save = 0.0
    if save and not exists:
        t1 = time.perf_counter()
        try:
            model.save_pretrained(d, safe_serialization=True, max_shard_size="5GB")
        except TypeError:  # a transformers without safe_serialization (always safetensors)
            model.save_pretrained(d, max_shard_size="5GB")
        # the flat Hub form, which vidi's config parser and every transformers read
        _write_json(os.path.join(d, "config.json"), flat)
        _write_json(os.path.join(d, "generation_config.json"), GENERATION_CONFIG)
        t_save = time.perf_counter() - t1
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"make_models: {name}: {n / 1e9:.3f} B parameters, built on {device} in {t_build:.1f} s"
          + (f", saved to {d} in {t_save:.1f} s" if t_save else f", kept {d}"), file=log)
    return model, d, t_build, t_save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/vidi-bench-models")
    ap.add_argument("--7b", dest="big", action="store_true", help="also the 7B shape")
    ap.add_argument("--tiny", action="store_true", help="only the tiny toy (CPU smoke test)")
    a = ap.parse_args()
    names = ["qwen2vl-tiny-shape"] if a.tiny else ["qwen2vl-2b-shape"] + (["qwen2vl-7b-shape"] if a.big else [])
    for n in names:
        model, d, tb, ts = build(n, a.out)
        print(json.dumps({"model": n, "dir": d, "build_s": round(tb, 2), "save_s": round(ts, 2)}))
        del model


if __name__ == "__main__":
    main()

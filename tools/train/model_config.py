"""tools/train/model_config.py — the vidi-shapes and vidi-shapes-draft configurations,
and writing a model as a Hugging Face folder the C engine loads.

Both models are Qwen2VLForConditionalGeneration with tied embeddings:

                 vision tower                          text model
  vidi-shapes    depth 6, embed 128, 2 heads (64)      6 layers, hidden 256, 4 heads (64), 2 kv,
                 mlp 4x, quick_gelu, patch 14,          intermediate 768, M-RoPE [8, 12, 12],
                 merge 2, temporal patch 2              rope_theta 10000
  ...-draft      depth 2, embed 128, 2 heads (64)      2 layers, hidden 128, 2 heads (64), 1 kv,
                                                        intermediate 384

Head dims are 64 everywhere so that every attention of both models has a shape vidi's own
CUDA attention kernels take (16/64/80/128), not only cuDNN's.

    flat_config(name, ids, vocab)   config.json dict (the flat Qwen2-VL form, as the
                                    released Qwen2-VL checkpoints and tests/data write it)
    make_model(cfg)                 a fresh Qwen2VLForConditionalGeneration (float32)
    export_folder(model, cfg, tok_json, ids, out_dir, readme)
                                    config.json, generation_config.json, tokenizer.json,
                                    tokenizer_config.json, chat_template.json,
                                    preprocessor_config.json, model.safetensors (bf16, the
                                    old weight names "model.*" / "visual.*", no lm_head since
                                    it is tied), README.md
    load_folder(dir)                (config, tokenizer.json text, float32 model) from such
                                    a folder (train.py --init-from)
"""

import copy
import json
import os

import safetensors.torch
import torch
import transformers

import vocab

# images: 32..144 merged tokens (videos follow qwen-vl-utils' fixed bounds, see media.py)
IMAGE_MIN_PIXELS = 32 * 28 * 28      # 25088
IMAGE_MAX_PIXELS = 144 * 28 * 28     # 112896
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

SPECS = {
    "vidi-shapes": {
        "text": {"hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "intermediate_size": 768, "mrope_section": [8, 12, 12]},
        # the draft's width: vidi-shapes is grown from the draft (grow.py), which keeps it
        "vision": {"depth": 6, "embed_dim": 128, "num_heads": 2, "mlp_ratio": 4},
    },
    "vidi-shapes-draft": {
        "text": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "num_key_value_heads": 1, "intermediate_size": 384, "mrope_section": [8, 12, 12]},
        "vision": {"depth": 2, "embed_dim": 128, "num_heads": 2, "mlp_ratio": 4},
    },
}
ROPE_THETA = 10000.0


def padded_vocab(n):
    return (n + 63) // 64 * 64


def flat_config(name, ids, vocab_size):
    t, v = SPECS[name]["text"], SPECS[name]["vision"]
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": t["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": 32768,
        "max_window_layers": t["num_hidden_layers"],
        "model_type": "qwen2_vl",
        "num_attention_heads": t["num_attention_heads"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_theta": ROPE_THETA,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": v["depth"],
            "embed_dim": v["embed_dim"],
            "mlp_ratio": v["mlp_ratio"],
            "num_heads": v["num_heads"],
            "in_chans": 3,
            "hidden_act": "quick_gelu",
            "hidden_size": t["hidden_size"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": list(t["mrope_section"])},
        "vocab_size": vocab_size,
    }


def preprocessor_config():
    return {
        "min_pixels": IMAGE_MIN_PIXELS,
        "max_pixels": IMAGE_MAX_PIXELS,
        "size": {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS},
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
    }


def generation_config(ids):
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": False,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "repetition_penalty": 1.0,
        "transformers_version": transformers.__version__,
    }


def make_model(cfg, attn="sdpa"):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(**copy.deepcopy(cfg))
    config._attn_implementation = attn
    try:
        config.vision_config._attn_implementation = attn
        config.text_config._attn_implementation = attn
    except AttributeError:
        pass
    model = Qwen2VLForConditionalGeneration(config)
    return model.float()


def param_counts(model):
    vis = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    total = sum(p.numel() for p in model.parameters())    # tied lm_head counted once
    return {"total": total, "vision": vis, "text": total - vis}


def old_name(k):
    """transformers 5 state-dict names -> the released checkpoints' names."""
    if k.startswith("model.language_model."):
        return "model." + k[len("model.language_model."):]
    if k.startswith("model.visual."):
        return "visual." + k[len("model.visual."):]
    if k.startswith(("model.", "visual.", "lm_head.")):   # already old (older transformers)
        return k
    raise KeyError(k)


def new_name(k):
    """The released checkpoints' names -> transformers 5 state-dict names (old_name inverted)."""
    if k.startswith("model.language_model.") or k.startswith("model.visual.") or k.startswith("lm_head."):
        return k
    if k.startswith("visual."):
        return "model.visual." + k[len("visual."):]
    if k.startswith("model."):
        return "model.language_model." + k[len("model."):]
    raise KeyError(k)


def load_folder(folder):
    """An exported folder -> (config dict, tokenizer.json text, float32 model): the inverse of
    export_folder (the weights are the bf16 ones it wrote)."""
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        tok_json = f.read()
    model = make_model(cfg)
    tensors = safetensors.torch.load_file(os.path.join(folder, "model.safetensors"))
    sd = {new_name(k): v.float() for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, f"{folder}: unexpected tensors {unexpected[:5]}"
    assert set(missing) <= {"lm_head.weight"}, f"{folder}: missing tensors {missing[:5]}"
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight, "lm_head not tied"
    bad = [k for k, v in sd.items() if not torch.isfinite(v).all()]
    assert not bad, f"{folder}: non-finite weights in {bad[:5]} (a diverged export cannot be trained on)"
    return cfg, tok_json, model


def state_tensors(model):
    """bf16 tensors under the old names; the tied lm_head is left out."""
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k == "lm_head.weight":
            continue
        out[old_name(k)] = v.detach().to("cpu", torch.bfloat16).contiguous()
    return out


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def export_folder(model, cfg, tok_json, ids, out_dir, readme=None):
    """Write the HF folder; returns the safetensors size in bytes."""
    os.makedirs(out_dir, exist_ok=True)
    tensors = state_tensors(model)
    path = os.path.join(out_dir, "model.safetensors")
    safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)
    write_json(os.path.join(out_dir, "config.json"), cfg)
    write_json(os.path.join(out_dir, "generation_config.json"), generation_config(ids))
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok_json)
    write_json(os.path.join(out_dir, "tokenizer_config.json"), vocab.tokenizer_config(ids))
    write_json(os.path.join(out_dir, "chat_template.json"), {"chat_template": vocab.CHAT_TEMPLATE})
    write_json(os.path.join(out_dir, "preprocessor_config.json"), preprocessor_config())
    if readme is not None:
        with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(readme)
    return os.path.getsize(path)

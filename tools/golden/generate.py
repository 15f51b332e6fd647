#!/usr/bin/env python3
"""tools/golden/generate.py — reference data for vidi's parity tests.

Writes, under --out (normally tests/data):
  models/tiny-qwen2vl/    Qwen2-VL, flat config, BF16, tied embeddings, old weight names
  models/tiny-qwen25vl/   Qwen2.5-VL, nested config, F32, 2 shards, new weight names
  golden/tokenizer.json   encode / decode cases for the tiny byte-level BPE
  golden/cases/<name>/    manifest.json + .npy: processor outputs, vision embeddings,
                          M-RoPE positions (original Qwen rule), logits, greedy tokens

Everything is deterministic by seed. PyTorch runs on the CPU in float32, one thread.
Positions follow the original Qwen rule (see shared/reference/fidelity-notes.md),
computed here and passed to the model explicitly; transformers' own get_rope_index is
only used for comparison.

Usage: /opt/golden/bin/python tools/golden/generate.py --out tests/data
"""

import argparse
import copy
import json
import math
import os
import platform
import shutil

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers  # noqa: E402
from tokenizers import pre_tokenizers, processors, trainers  # noqa: E402

transformers.logging.set_verbosity_error()

# --------------------------------------------------------------------------------------
# constants

BPE_VOCAB = 800  # byte alphabet (256) + merges
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
NONSPECIAL_ADDED = ["<tool_call>", "</tool_call>"]

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
MIN_PIXELS = 3136
MAX_PIXELS = 12845056

SEED_Q2 = 1015  # picked from 1000..1024: non-degenerate greedy runs, widest top-2 gaps
SEED_Q25 = 2020  # picked from 2000..2024 likewise
MAX_NEW_TOKENS = 32

Q2_DIR = "models/tiny-qwen2vl"
Q25_DIR = "models/tiny-qwen25vl"


def versions():
    import PIL
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "torchvision": torchvision.__version__,
    }


def write_json(path, obj, indent=2):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def save_npy(path, arr, dtype):
    arr = np.ascontiguousarray(np.asarray(arr).astype(dtype))
    np.save(path, arr, allow_pickle=False)


# --------------------------------------------------------------------------------------
# 1. tokenizer

def build_corpus():
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray", "pink"]
    shapes = ["circle", "square", "triangle", "star", "line", "dot", "box", "ball", "cube", "ring"]
    verbs = ["moves", "jumps", "turns", "slides", "spins", "falls", "rises", "stops", "waits", "grows"]
    dirs = ["left", "right", "up", "down", "around", "away", "slowly", "quickly", "together", "again"]
    lines = []
    for i, c in enumerate(colors):
        for j, s in enumerate(shapes):
            v = verbs[(i + 2 * j) % len(verbs)]
            d = dirs[(3 * i + j) % len(dirs)]
            lines.append(f"The {c} {s} {v} {d}.")
            lines.append(f"A {c} {s} {verbs[(i + j) % 10]} {dirs[(i * j) % 10]} in the picture")
    lines += [
        "You are a helpful assistant.",
        "Describe the image. What is in this video? Describe what happens in the video.",
        "system user assistant Picture Video",
        "The image shows a red circle that moves left across a blue background.",
        "In the video, a small white ball bounces up and down while the camera pans right.",
        "Count the objects: there are 3 squares, 12 circles and 7 stars.",
        "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 12345 3.14 2.718 1,000,000",
        "Dates like 2024-06-01 and times like 12:30:45 are common.",
        "I'm sure it's fine. You'll see. We're here, they've gone, she'd know, he'll come.",
        "I'M SURE IT'S FINE. YOU'LL SEE. WE'RE HERE. THEY'VE GONE.",
        "Hello world! Hello, World? hello... HELLO!!!",
        "The quick brown fox jumps over the lazy dog.",
        "café naïve résumé façade Zürich über mañana crème brûlée São Paulo Ærøskøbing",
        "Ça va? Él está aquí. Übung macht den Meister. Où est la gare?",
        "你好，世界！图片中有一个红色的圆。视频里有一只猫。",
        "日本語のテキストです。こんにちは。カタカナ。",
        "한국어 문장입니다. 안녕하세요.",
        "Emoji: 😀 😂 👍 👍🏽 ❤️ 🎉 🚀 🐱 👨‍👩‍👧‍👦 🏳️‍🌈",
        "def f(x):\n    return x + 1\n\nprint(f(41))",
        "if (a && b) { return -1; } else { x += 2; }",
        "Line one.\nLine two.\r\nLine three.\n\n\tIndented with a tab.",
        "Bullet list:\n- first item\n- second item\n- third item",
        "<tool_call> {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}} </tool_call>",
        "What color is the square? The square is green. Where does the star go? It goes up.",
        "left right up down left right up down",
        "Please answer in one short sentence.",
    ]
    # a few rounds with varied casing so the capitalised forms get merges too
    out = []
    for k in range(3):
        for i, line in enumerate(lines):
            if k == 1 and i % 3 == 0:
                line = line.capitalize()
            if k == 2 and i % 5 == 0:
                line = line.upper()
            out.append(line)
    return out


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=1,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(build_corpus(), trainer=trainer)
    assert tok.get_vocab_size() == BPE_VOCAB, tok.get_vocab_size()
    tok.add_special_tokens([
        AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
        for t in SPECIAL_TOKENS
    ])
    tok.add_tokens([
        AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False, single_word=False)
        for t in NONSPECIAL_ADDED
    ])
    return tok


def tokenizer_json_variants(tok):
    """(old form with "a b" merges, new form with ["a","b"] merges) as JSON strings."""
    d = json.loads(tok.to_str(pretty=True))
    # the ByteLevel pieces and BPE affixes exactly as Qwen2's tokenizer.json spells them
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    d["pre_tokenizer"]["pretokenizers"][1] = dict(byte_level)
    d["post_processor"] = dict(byte_level)
    d["decoder"] = dict(byte_level)
    d["model"]["continuing_subword_prefix"] = ""
    d["model"]["end_of_word_suffix"] = ""
    merges = d["model"]["merges"]
    pairs = [m if isinstance(m, list) else m.split(" ") for m in merges]
    for a, b in pairs:
        assert " " not in a and " " not in b
    d_new = copy.deepcopy(d)
    d_new["model"]["merges"] = [[a, b] for a, b in pairs]
    d_old = copy.deepcopy(d)
    d_old["model"]["merges"] = [f"{a} {b}" for a, b in pairs]
    return (json.dumps(d_old, indent=2, ensure_ascii=False) + "\n",
            json.dumps(d_new, indent=2, ensure_ascii=False) + "\n")


def token_ids(tok):
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + NONSPECIAL_ADDED}
    for i, t in enumerate(SPECIAL_TOKENS + NONSPECIAL_ADDED):
        assert ids[t] == BPE_VOCAB + i, (t, ids[t])
    return ids


def tokenizer_config(ids):
    added = {}
    for t in SPECIAL_TOKENS + NONSPECIAL_ADDED:
        added[str(ids[t])] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": t in SPECIAL_TOKENS,
        }
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def render_chat(user_content):
    """Render the chat template for one user turn (default system turn, generation prompt)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    conv = [{"role": "user", "content": user_content}]
    out, _ = render_jinja_template(conversations=[conv], chat_template=CHAT_TEMPLATE,
                                   add_generation_prompt=True)
    return out[0]


def tokenizer_cases(tok):
    long_par = (
        "In the first clip, a red circle moves left across the frame at about 3.5 px/frame; "
        "then — après une pause — the blue square (côté droit) spins twice. 视频的最后，"
        "一颗星星出现了 ⭐! Total: 12 objects, 7 moving, 5 still.\n\n"
        "Q: Is the ball 🏀 bigger than the box 📦?\nA: No, it's smaller.   "
    )
    chat = render_chat([
        {"type": "image"},
        {"type": "text", "text": "Describe the image in one sentence."},
    ])
    texts = [
        "Hello world",
        "hello world",
        "Hello, world!",
        "café",
        "cafe\u0301",
        "e\u0301",
        "\u00e9",
        "naïve résumé Zürich",
        "A\u030angstro\u0308m",
        "Ærøskøbing São Paulo",
        "😀",
        "👍🏽",
        "👨‍👩‍👧‍👦 family",
        "🏳️‍🌈 flag",
        "❤️🎉🚀",
        "你好，世界！",
        "图片中有一个红色的圆。",
        "日本語のテキスト",
        "한국어",
        "12345",
        "3.14",
        "1,000,000 and 2024-06-01",
        "a  b",
        "a     b",
        "tab\tseparated\tvalues",
        "para one\n\npara two",
        "windows\r\nline",
        "trailing spaces   ",
        "   leading spaces",
        " ",
        "\n",
        "\t\n \n",
        "I'm here",
        "YOU'LL see",
        "it's fine",
        "IT'S FINE, We'Re sure",
        "they've she'd we're",
        "wow!!! really??? ...ok",
        "(a+b)*c = d; e->f",
        "hi<|im_end|>there",
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|im_start|>user\nhello<|im_end|>\n",
        "<tool_call>{\"name\": \"f\"}</tool_call>",
        "x<tool_call>y",
        "<|endoftext|><|endoftext|>",
        "<|im_start|",
        "",
        "The red circle moves left.",
        "The RED circle MOVES left",
        long_par,
        chat,
    ]
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]

    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + NONSPECIAL_ADDED}
    hw = tok.encode("Hello world", add_special_tokens=False).ids
    cjk = tok.encode("你好", add_special_tokens=False).ids
    emoji = tok.encode("😀", add_special_tokens=False).ids
    # single-byte tokens, to build id sequences that split a multi-byte character
    table = bytes_to_unicode()
    byte_ids = {b: tok.token_to_id(table[b]) for b in range(256)}
    assert all(v is not None for v in byte_ids.values())
    e4b8 = [byte_ids[b] for b in "世".encode("utf-8")]
    decode_cases = []

    def dec(idl, skip):
        decode_cases.append({"ids": idl, "skip_special": skip,
                             "text": tok.decode(idl, skip_special_tokens=skip)})

    dec(hw, True)
    dec(hw, False)
    dec([ids["<|im_start|>"]] + hw + [ids["<|im_end|>"]], True)
    dec([ids["<|im_start|>"]] + hw + [ids["<|im_end|>"]], False)
    dec([ids["<|vision_start|>"], ids["<|image_pad|>"], ids["<|image_pad|>"], ids["<|vision_end|>"]], True)
    dec([ids["<|vision_start|>"], ids["<|image_pad|>"], ids["<|image_pad|>"], ids["<|vision_end|>"]], False)
    dec([ids["<tool_call>"]] + hw + [ids["</tool_call>"]], True)
    dec([ids["<tool_call>"]] + hw + [ids["</tool_call>"]], False)
    dec(cjk, True)
    dec(emoji, False)
    dec(e4b8, False)            # complete 3-byte character from single-byte tokens
    dec(e4b8[:2], False)        # first two bytes only: invalid UTF-8 tail
    dec(e4b8[:1] + hw, False)   # lone lead byte followed by text
    dec(e4b8[1:] + hw, False)   # continuation bytes without a lead
    em = [byte_ids[b] for b in "😀".encode("utf-8")]
    dec(em[:3], False)          # 3 of 4 bytes of an emoji
    dec(hw + em[:1] + em[2:], True)
    dec([byte_ids[0xFF], byte_ids[0xC0]] + hw, False)  # bytes never valid in UTF-8
    dec([], True)
    dec([ids["<|endoftext|>"]], True)
    dec(tok.encode(long_par, add_special_tokens=False).ids, True)
    dec(tok.encode(chat, add_special_tokens=False).ids, False)
    dec(tok.encode(chat, add_special_tokens=False).ids, True)
    return cases, decode_cases


def bytes_to_unicode():
    """The GPT-2 byte -> printable unicode character table used by ByteLevel."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


# --------------------------------------------------------------------------------------
# 2. checkpoints

def padded_vocab(n):
    return (n + 63) // 64 * 64


def q2_flat_config(ids, vocab):
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
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 32768,
        "max_window_layers": 2,
        "model_type": "qwen2_vl",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 2,
            "embed_dim": 32,
            "mlp_ratio": 2,
            "num_heads": 2,
            "in_chans": 3,
            "hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "vocab_size": vocab,
    }


def q25_config_obj(ids, vocab):
    from transformers import Qwen2_5_VLConfig

    text = {
        "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "use_sliding_window": False,
        "sliding_window": 32768, "max_window_layers": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "attention_dropout": 0.0,
    }
    vision = {
        "depth": 4, "hidden_size": 32, "hidden_act": "silu", "intermediate_size": 48, "num_heads": 2,
        "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "tokens_per_second": 2, "window_size": 56, "out_hidden_size": 64,
        "fullatt_block_indexes": [1, 3],
    }
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        architectures=["Qwen2_5_VLForConditionalGeneration"],
    )


def randomise(model, seed, n_tok):
    """Overwrite every parameter deterministically. Norm weights ~ 1 + noise, biases
    non-zero, matrices normal with a std that keeps logits well separated; embedding and
    lm_head rows past the tokenizer (padding) get a small std, as padded rows of real
    checkpoints are never the argmax in practice."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        shape = p.shape
        if name.endswith("bias"):
            v = torch.randn(shape, generator=g) * 0.1
        elif p.ndim == 1:  # RMSNorm / LayerNorm weight
            v = 1.0 + torch.randn(shape, generator=g) * 0.1
        elif "patch_embed" in name:
            v = torch.randn(shape, generator=g) * 0.05
        elif "embed_tokens" in name:
            v = torch.randn(shape, generator=g) * 0.15
            v[n_tok:] *= 0.1
        elif name == "lm_head.weight":
            v = torch.randn(shape, generator=g) * 0.3
            v[n_tok:] *= 0.1
        elif name.endswith(("o_proj.weight", "down_proj.weight")) and "visual" not in name:
            v = torch.randn(shape, generator=g) * 0.2
        elif "visual" in name:
            v = torch.randn(shape, generator=g) * 0.15
        else:
            v = torch.randn(shape, generator=g) * 0.12
        with torch.no_grad():
            p.copy_(v)


def preprocessor_config(arch):
    return {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor" if arch == "qwen2_vl" else "Qwen2_5_VLProcessor",
    }


def generation_config(ids, arch):
    g = {
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "repetition_penalty": 1.0 if arch == "qwen2_vl" else 1.05,
        "temperature": 0.01 if arch == "qwen2_vl" else 0.1,
        "top_k": 1,
        "top_p": 0.001,
        "transformers_version": transformers.__version__,
    }
    return g


def write_tokenizer_files(d, tok_json, ids, arch):
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok_json)
    write_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config(ids))
    write_json(os.path.join(d, "chat_template.json"), {"chat_template": CHAT_TEMPLATE})
    write_json(os.path.join(d, "preprocessor_config.json"), preprocessor_config(arch))


def old_name(k):
    if k.startswith("model.language_model."):
        return "model." + k[len("model.language_model."):]
    if k.startswith("model.visual."):
        return "visual." + k[len("model.visual."):]
    raise KeyError(k)


def build_q2(out, tok_old, ids, vocab, n_tok, seed):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    d = os.path.join(out, Q2_DIR)
    os.makedirs(d, exist_ok=True)
    flat = q2_flat_config(ids, vocab)
    cfg = Qwen2VLConfig(**copy.deepcopy(flat))
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    randomise(model, seed, n_tok)
    # BF16 storage: round once, the float32 reference then sees exactly the stored values
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    sd = model.state_dict()
    tensors = {}
    for k, v in sd.items():
        if k == "lm_head.weight":
            assert torch.equal(v, sd["model.language_model.embed_tokens.weight"])
            continue
        tensors[old_name(k)] = v.to(torch.bfloat16).contiguous()
    safetensors.torch.save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(d, "config.json"), flat)
    write_json(os.path.join(d, "generation_config.json"), generation_config(ids, "qwen2_vl"))
    write_tokenizer_files(d, tok_old, ids, "qwen2_vl")
    return d, model


def build_q25(out, tok_new, ids, vocab, n_tok, seed):
    from transformers import Qwen2_5_VLForConditionalGeneration

    d = os.path.join(out, Q25_DIR)
    os.makedirs(d, exist_ok=True)
    cfg = q25_config_obj(ids, vocab)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    randomise(model, seed, n_tok)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"],
                                                      sd["model.language_model.embed_tokens.weight"])
    # config.json exactly as transformers writes it (nested text_config / vision_config);
    # model.save_pretrained would also record the dtype
    cfg.dtype = torch.float32
    cfg.save_pretrained(d)
    # two shards, split in name order at about half the bytes (as save_pretrained would)
    names = sorted(sd)
    total = sum(sd[k].numel() * sd[k].element_size() for k in names)
    shard1, acc = [], 0
    for k in names:
        if acc >= total // 2:
            break
        shard1.append(k)
        acc += sd[k].numel() * sd[k].element_size()
    shard2 = [k for k in names if k not in set(shard1)]
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for fname, keys in zip(files, [shard1, shard2]):
        safetensors.torch.save_file({k: sd[k].to(torch.float32) for k in keys}, os.path.join(d, fname),
                                    metadata={"format": "pt"})
        for k in keys:
            weight_map[k] = fname
    write_json(os.path.join(d, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    write_json(os.path.join(d, "generation_config.json"), generation_config(ids, "qwen2_5_vl"))
    write_tokenizer_files(d, tok_new, ids, "qwen2_5_vl")
    return d, model


def reload_and_check(cls, d, ref_model):
    m = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    a = m.state_dict()
    b = ref_model.state_dict()
    assert set(a) == set(b), (set(a) ^ set(b))
    for k in a:
        assert torch.equal(a[k].float(), b[k].float()), k
    return m


# --------------------------------------------------------------------------------------
# 3. media, positions, reference runs

def make_image(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    img = np.zeros((h, w, 3), np.float64)
    for c in range(3):
        a, b, ph = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 6.28)
        img[..., c] = 128 + 70 * np.sin(3 * (a * yy + b * xx) + ph) + 40 * (yy - xx) * (c - 1)
    cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, min(h, w) * 0.25
    mask = (np.arange(h)[:, None] - cy) ** 2 + (np.arange(w)[None, :] - cx) ** 2 < r * r
    img[mask] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 12, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_video(n, h, w, seed):
    rng = np.random.default_rng(seed)
    base = make_image(h, w, seed + 1000).astype(np.float64)
    frames = []
    col = rng.uniform(0, 255, 3)
    for k in range(n):
        f = base * (0.8 + 0.2 * math.cos(k))
        cy = h * (0.3 + 0.4 * k / max(1, n - 1))
        cx = w * (0.8 - 0.6 * k / max(1, n - 1))
        mask = (np.arange(h)[:, None] - cy) ** 2 + (np.arange(w)[None, :] - cx) ** 2 < (min(h, w) * 0.2) ** 2
        f[mask] = col
        f += rng.normal(0, 10, f.shape)
        frames.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    return np.stack(frames)


def image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
                                    image_mean=CLIP_MEAN, image_std=CLIP_STD)


def video_processor():
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
                                 image_mean=CLIP_MEAN, image_std=CLIP_STD, do_sample_frames=False,
                                 cap_pixels_per_frame=True)


def process_media(item):
    if item["kind"] == "image":
        r = image_processor()(images=[item["data"]], return_tensors="pt", input_data_format="channels_last")
        return r["pixel_values"].float(), [int(x) for x in r["image_grid_thw"][0]]
    frames = torch.from_numpy(item["data"]).permute(0, 3, 1, 2).contiguous()  # T,C,H,W uint8
    r = video_processor()(videos=[frames], return_tensors="pt")
    return r["pixel_values_videos"].float(), [int(x) for x in r["video_grid_thw"][0]]


def original_positions(input_ids, media, arch, image_id, video_id, tokens_per_second):
    """The original Qwen M-RoPE rule. Returns (3, L) int64 and rope_delta."""
    L = len(input_ids)
    pos = np.zeros((3, L), np.int64)
    nxt = 0  # next text position
    i = 0
    mi = 0
    while i < L:
        t = input_ids[i]
        if t in (image_id, video_id):
            item = media[mi]
            mi += 1
            gt, gh, gw = item["grid"]
            h2, w2 = gh // 2, gw // 2
            n = gt * h2 * w2
            assert all(x == t for x in input_ids[i:i + n]), "pad run shorter than grid"
            s = nxt
            j = i
            for k in range(gt):
                if arch == "qwen2_5_vl":
                    tk = int(k * item["second_per_grid_t"] * tokens_per_second) if item["kind"] == "video" else 0
                else:
                    tk = k
                for r in range(h2):
                    for c in range(w2):
                        pos[:, j] = (s + tk, s + r, s + c)
                        j += 1
            nxt = int(pos[:, i:i + n].max()) + 1
            i += n
        else:
            pos[:, i] = nxt
            nxt += 1
            i += 1
    assert mi == len(media)
    rope_delta = int(pos.max()) + 1 - L
    return pos, rope_delta


def transformers_positions(model, ids_t, media, arch, image_id, video_id):
    tt = torch.zeros_like(ids_t)
    tt[ids_t == image_id] = 1
    tt[ids_t == video_id] = 2
    igrid = [m["grid"] for m in media if m["kind"] == "image"]
    vgrid = [m["grid"] for m in media if m["kind"] == "video"]
    if not media:
        L = ids_t.shape[1]
        return torch.arange(L).view(1, 1, -1).expand(3, 1, -1), tt, 0
    kw = dict(image_grid_thw=torch.tensor(igrid) if igrid else None,
              video_grid_thw=torch.tensor(vgrid) if vgrid else None)
    if arch == "qwen2_5_vl" and vgrid:
        kw["second_per_grid_ts"] = torch.tensor([m["second_per_grid_t"] for m in media if m["kind"] == "video"])
    p, delta = model.model.get_rope_index(ids_t, mm_token_type_ids=tt, **kw)
    return p, tt, int(delta.reshape(-1)[0])


def model_inputs(media):
    kw = {}
    imgs = [m for m in media if m["kind"] == "image"]
    vids = [m for m in media if m["kind"] == "video"]
    if imgs:
        kw["pixel_values"] = torch.cat([m["pixels"] for m in imgs])
        kw["image_grid_thw"] = torch.tensor([m["grid"] for m in imgs])
    if vids:
        kw["pixel_values_videos"] = torch.cat([m["pixels"] for m in vids])
        kw["video_grid_thw"] = torch.tensor([m["grid"] for m in vids])
    return kw


def top2_gap(logits):
    v = torch.topk(logits, 2).values
    return float(v[0] - v[1])


def run_case(out, spec, model, tok, ids, arch, model_rel, vers, report):
    name = spec["name"]
    cdir = os.path.join(out, "golden", "cases", name)
    os.makedirs(cdir, exist_ok=True)
    image_id, video_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
    tps = model.config.vision_config.tokens_per_second if arch == "qwen2_5_vl" else None

    # media through the processors
    media = []
    content = []
    for k, m in enumerate(spec["media"]):
        if m["kind"] == "image":
            data = make_image(m["h"], m["w"], m["seed"])
        else:
            data = make_video(m["frames"], m["h"], m["w"], m["seed"])
        pixels, grid = process_media({"kind": m["kind"], "data": data})
        spgt = (2.0 / m["fps"]) if m["kind"] == "video" else 0.0
        media.append({"kind": m["kind"], "pixels": pixels, "grid": grid, "second_per_grid_t": spgt,
                      "fps": m.get("fps")})
        content.append({"type": m["kind"]})
    content.append({"type": "text", "text": spec["text"]})
    prompt = render_chat(content) if spec["media"] else render_chat(spec["text"])

    # expand the pads in the text, tokenize, and check it equals expansion after tokenizing
    parts = []
    rest = prompt
    for m in media:
        ph = "<|image_pad|>" if m["kind"] == "image" else "<|video_pad|>"
        a, b = rest.split(ph, 1)
        n = m["grid"][0] * m["grid"][1] * m["grid"][2] // 4
        parts.append(a + ph * n)
        rest = b
    expanded = "".join(parts) + rest
    input_ids = tok.encode(expanded, add_special_tokens=False).ids
    unexpanded = tok.encode(prompt, add_special_tokens=False).ids
    chk = []
    mi = 0
    for t in unexpanded:
        if t in (image_id, video_id):
            g = media[mi]["grid"]
            mi += 1
            chk += [t] * (g[0] * g[1] * g[2] // 4)
        else:
            chk.append(t)
    assert chk == input_ids
    L = len(input_ids)
    assert L < 200, (name, L)

    pos, rope_delta = original_positions(input_ids, media, arch, image_id, video_id, tps)
    ids_t = torch.tensor([input_ids])
    tf_pos, tt, tf_delta = transformers_positions(model, ids_t, media, arch, image_id, video_id)
    same = bool(torch.equal(tf_pos[:, 0].long(), torch.from_numpy(pos))) and tf_delta == rope_delta

    pos_t = torch.from_numpy(pos).view(3, 1, L)
    with torch.no_grad():
        # vision embeddings per item (merger output, before scattering)
        vis = []
        for m in media:
            o = model.model.visual(m["pixels"], grid_thw=torch.tensor([m["grid"]]))
            vis.append(o.pooler_output.float())
        model.model.rope_deltas = None
        o = model(input_ids=ids_t, position_ids=pos_t, use_cache=True, **model_inputs(media))
        logits = o.logits[0].float()
        # per-item embeddings against the batched ones the forward used
        vdiff = 0.0
        for kind, outs in (("image", o.image_outputs), ("video", o.video_outputs)):
            if outs is None:
                continue
            mine = [v for v, m in zip(vis, media) if m["kind"] == kind]
            for a, b in zip(mine, outs.pooler_output):
                vdiff = max(vdiff, float((a - b.float()).abs().max()))
        cache = o.cache
        greedy = []
        gaps = [top2_gap(logits[-1])]
        nxt = int(torch.argmax(logits[-1]))
        for step in range(MAX_NEW_TOKENS):
            greedy.append(nxt)
            if step == MAX_NEW_TOKENS - 1:
                break
            p = torch.full((3, 1, 1), L + step + rope_delta, dtype=torch.long)
            o2 = model(input_ids=torch.tensor([[nxt]]), position_ids=p, cache=cache, use_cache=True)
            cache = o2.cache
            lg = o2.logits[0, -1].float()
            gaps.append(top2_gap(lg))
            nxt = int(torch.argmax(lg))

        # transformers' default positions (mm_token_type_ids, no explicit positions)
        model.model.rope_deltas = None
        kw = model_inputs(media)
        if arch == "qwen2_5_vl" and any(m["kind"] == "video" for m in media):
            kw["second_per_grid_ts"] = torch.tensor([m["second_per_grid_t"] for m in media
                                                     if m["kind"] == "video"])
        o3 = model(input_ids=ids_t, mm_token_type_ids=tt, use_cache=False, **kw)
        tf_logit_diff = float((o3.logits[0, -1].float() - logits[-1]).abs().max())
        model.model.rope_deltas = None

    # positions at which full logits are stored
    vis_idx = [i for i, t in enumerate(input_ids) if t in (image_id, video_id)]
    if vis_idx:
        last_vis = vis_idx[-1]
        cand = [0, vis_idx[0], vis_idx[len(vis_idx) // 2], last_vis, last_vis + 1, L - 1]
    else:
        cand = [0, L // 4, L // 2, 3 * L // 4, L - 2, L - 1]
    lpos = sorted(set(min(max(0, c), L - 1) for c in cand))

    # write
    man_media = []
    for k, (m, v) in enumerate(zip(media, vis)):
        save_npy(os.path.join(cdir, f"pixels_{k}.npy"), m["pixels"].numpy(), "<f4")
        save_npy(os.path.join(cdir, f"vision_{k}.npy"), v.numpy(), "<f4")
        e = {"kind": m["kind"], "pixels": f"pixels_{k}.npy", "grid": m["grid"],
             "second_per_grid_t": m["second_per_grid_t"], "vision_embeds": f"vision_{k}.npy"}
        if m["kind"] == "video":
            e["fps"] = m["fps"]
        man_media.append(e)
    save_npy(os.path.join(cdir, "input_ids.npy"), np.array(input_ids), "<i4")
    save_npy(os.path.join(cdir, "position_ids.npy"), pos, "<i4")
    save_npy(os.path.join(cdir, "logits_last.npy"), logits[-1].numpy(), "<f4")
    save_npy(os.path.join(cdir, "logits.npy"), logits[lpos].numpy(), "<f4")
    save_npy(os.path.join(cdir, "greedy.npy"), np.array(greedy), "<i4")
    manifest = {
        "name": name,
        "model": model_rel,
        "arch": arch,
        "user_text": spec["text"],
        "prompt": prompt,
        "media": man_media,
        "input_ids": "input_ids.npy",
        "position_ids": "position_ids.npy",
        "rope_delta": rope_delta,
        "logits_last": "logits_last.npy",
        "logits": "logits.npy",
        "logits_positions": lpos,
        "greedy_tokens": "greedy.npy",
        "max_new_tokens": MAX_NEW_TOKENS,
        "greedy_text": tok.decode(greedy, skip_special_tokens=False),
        "greedy_top2_gaps": [round(g, 6) for g in gaps],
        "transformers_default_positions_agree": same,
        "versions": vers,
    }
    write_json(os.path.join(cdir, "manifest.json"), manifest)

    distinct = len(set(greedy))
    small_gaps = sum(1 for g in gaps if g <= 1e-3)
    line = (f"{name:24s} L={L:3d} delta={rope_delta:+d} media={[m['grid'] for m in media]} "
            f"tf_pos_same={same} tf_last_logit_maxdiff={tf_logit_diff:.3g} vis_item_vs_batched={vdiff:.2g} "
            f"greedy_distinct={distinct} min_top2_gap={min(gaps):.2g} gaps<=1e-3:{small_gaps}")
    print(line)
    report.append({"name": name, "tf_positions_same": same, "tf_logit_maxdiff": tf_logit_diff,
                   "distinct": distinct, "small_gaps": small_gaps})
    assert distinct >= 6, f"{name}: greedy continuation is degenerate: {greedy}"
    assert min(gaps) > 1e-3, f"{name}: near-tie on the greedy path: {min(gaps)}"
    assert vdiff < 1e-4, (name, vdiff)
    if same:
        assert tf_logit_diff < 1e-4, (name, tf_logit_diff)
    return manifest


def img(h, w, seed):
    return {"kind": "image", "h": h, "w": w, "seed": seed}


def vid(frames, h, w, fps, seed):
    return {"kind": "video", "frames": frames, "h": h, "w": w, "fps": fps, "seed": seed}


def case_specs():
    q2 = [
        {"name": "q2_text_only", "text": "Tell me a short story about a red circle that moves left.", "media": []},
        {"name": "q2_one_image", "text": "Describe the image.", "media": [img(56, 84, 11)]},
        {"name": "q2_two_images", "text": "What is different between the two pictures?",
         "media": [img(56, 84, 12), img(84, 56, 13)]},
        {"name": "q2_one_video", "text": "What moves in this video?", "media": [vid(4, 56, 56, 2.0, 14)]},
        {"name": "q2_image_video", "text": "Does the video show the object from the image?",
         "media": [img(56, 84, 15), vid(5, 56, 56, 2.0, 16)]},
        {"name": "q2_long_video", "text": "Describe what happens in the video.",
         "media": [vid(12, 56, 56, 2.0, 17)]},
    ]
    q25 = [
        {"name": "q25_text_only", "text": "I'm curious: what's 12 + 30? Answer in one short sentence.",
         "media": []},
        {"name": "q25_one_image", "text": "Describe the image.", "media": [img(56, 84, 21)]},
        {"name": "q25_two_images", "text": "Compare the two pictures.",
         "media": [img(84, 56, 22), img(56, 112, 23)]},
        {"name": "q25_one_video", "text": "What moves in this video?", "media": [vid(4, 56, 84, 2.0, 24)]},
        {"name": "q25_image_video", "text": "Is the ball in the image also in the video?",
         "media": [img(56, 56, 25), vid(4, 56, 56, 2.0, 26)]},
        {"name": "q25_video_frac_spgt", "text": "Describe what happens in the video.",
         "media": [vid(6, 56, 56, 4.0 / 3.0, 27)]},
        {"name": "q25_window_pad", "text": "Describe the image in detail.", "media": [img(84, 140, 28)]},
    ]
    return q2, q25


# --------------------------------------------------------------------------------------

def clean(out):
    for rel in (Q2_DIR, Q25_DIR, "golden"):
        p = os.path.join(out, rel)
        if os.path.isdir(p):
            shutil.rmtree(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root, normally tests/data")
    ap.add_argument("--seed-q2", type=int, default=SEED_Q2, help="weight seed of tiny-qwen2vl")
    ap.add_argument("--seed-q25", type=int, default=SEED_Q25, help="weight seed of tiny-qwen25vl")
    args = ap.parse_args()
    out = args.out
    clean(out)
    vers = versions()
    print("versions:", vers)

    # 1. tokenizer
    tok = build_tokenizer()
    tok_old, tok_new = tokenizer_json_variants(tok)
    t_old = Tokenizer.from_str(tok_old)
    t_new = Tokenizer.from_str(tok_new)
    ids = token_ids(tok)
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    vocab = padded_vocab(n_tok)
    cases, decode_cases = tokenizer_cases(t_old)
    for c in cases:
        assert t_new.encode(c["text"], add_special_tokens=False).ids == c["ids"]
        assert tok.encode(c["text"], add_special_tokens=False).ids == c["ids"]
    for c in decode_cases:
        assert t_new.decode(c["ids"], skip_special_tokens=c["skip_special"]) == c["text"]
    for line in build_corpus():
        assert t_old.encode(line).ids == t_new.encode(line).ids
    print(f"tokenizer: bpe={BPE_VOCAB} total={n_tok} model vocab={vocab} special ids={ids}")

    # 2. checkpoints
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    d2, m2_mem = build_q2(out, tok_old, ids, vocab, n_tok, args.seed_q2)
    d25, m25_mem = build_q25(out, tok_new, ids, vocab, n_tok, args.seed_q25)
    m2 = reload_and_check(Qwen2VLForConditionalGeneration, d2, m2_mem)
    m25 = reload_and_check(Qwen2_5_VLForConditionalGeneration, d25, m25_mem)
    del m2_mem, m25_mem
    assert m2.config.tie_word_embeddings and not m25.config.tie_word_embeddings
    for m in (m2, m25):
        assert m.config.image_token_id == ids["<|image_pad|>"]
        assert m.config.video_token_id == ids["<|video_pad|>"]
        assert m.config.vision_start_token_id == ids["<|vision_start|>"]
        assert m.config.vision_end_token_id == ids["<|vision_end|>"]

    # transformers' own tokenizer class on the written folders: report any disagreement
    for d in (d2, d25):
        at = AutoTokenizer.from_pretrained(d)
        bad = [c["text"] for c in cases if at.encode(c["text"], add_special_tokens=False) != c["ids"]]
        print(f"AutoTokenizer({os.path.basename(d)}) {type(at).__name__}: "
              f"{len(cases) - len(bad)}/{len(cases)} encode cases agree; differ: {bad!r}")

    write_json(os.path.join(out, "golden", "tokenizer.json"), {
        "tokenizer": f"{Q2_DIR}/tokenizer.json",
        "also_tokenizers": [f"{Q25_DIR}/tokenizer.json"],
        "note": "ids from tokenizers Tokenizer.encode(text, add_special_tokens=False); text from "
                "Tokenizer.decode(ids, skip_special_tokens=skip_special). Both tokenizer files "
                "(old 'a b' merges / new [a, b] merges) give the same results.",
        "versions": vers,
        "cases": cases,
        "decode_cases": decode_cases,
    }, indent=1)

    # 3. reference cases
    report = []
    q2_specs, q25_specs = case_specs()
    for s in q2_specs:
        run_case(out, s, m2, t_old, ids, "qwen2_vl", Q2_DIR, vers, report)
    for s in q25_specs:
        run_case(out, s, m25, t_new, ids, "qwen2_5_vl", Q25_DIR, vers, report)

    for must in ("q2_long_video", "q25_video_frac_spgt"):
        r = next(x for x in report if x["name"] == must)
        assert not r["tf_positions_same"] and r["tf_logit_maxdiff"] > 1e-3, r
        print(f"confirmed: {must}: transformers default positions differ; last-position logits "
              f"max abs diff {r['tf_logit_maxdiff']:.4g}")
    for r in report:
        if r["name"].endswith(("text_only", "one_image", "two_images", "window_pad")):
            assert r["tf_positions_same"], r
    print("done")


if __name__ == "__main__":
    main()

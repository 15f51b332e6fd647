"""tools/train/vocab.py — the vidi-shapes tokenizer and chat template.

A byte-level BPE trained with the `tokenizers` library on the scene generator's text
(every question phrasing, answer and caption of a few thousand scenes), the chat
template's text and a few general sentences, with the Qwen2 pre-tokenizer (NFC, the
Qwen2 regex split, ByteLevel) and the Qwen special tokens after the BPE ids, in the same
layout as tools/golden/generate.py writes for the test checkpoints:

    0 .. 255                 byte alphabet
    256 .. N-1               merges (N <= BPE_VOCAB = 1008; the corpus is small and its
                             pairs run out near N = 620)
    N .. N+13                <|endoftext|> <|im_start|> <|im_end|> ... <|video_pad|> (special)
    N+14, N+15               <tool_call> </tool_call> (not special)

The model's vocab_size is N + 16 rounded up to a multiple of 64. Training is deterministic for a given `tokenizers`
version; train.py builds it once per run, stores it in the checkpoint and exports it.

    build_tokenizer()          -> tokenizers.Tokenizer
    tokenizer_json(tok)        -> tokenizer.json text (Qwen2's ByteLevel pieces, "a b" merges)
    special_ids(tok)           -> {token: id}
    tokenizer_config(ids)      -> tokenizer_config.json dict
    render_prompt(kind, text)  -> the chat-template text of one user turn with one image /
                                  video and the generation prompt (what transformers'
                                  apply_chat_template renders; check.py compares them)
"""

import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shapes import questions as qs  # noqa: E402
from shapes import scene as scn  # noqa: E402

BPE_VOCAB = 1008
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
SYSTEM_PROMPT = "You are a helpful assistant."

# The Qwen2-VL chat template, as in the released checkpoints: read from the reference test
# checkpoint that tools/golden/generate.py writes (one copy of it in the repository).
_TEMPLATE_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "tests", "data", "models", "tiny-qwen2vl", "chat_template.json")
with open(_TEMPLATE_FILE, encoding="utf-8") as _f:
    CHAT_TEMPLATE = json.load(_f)["chat_template"]

GENERAL_TEXT = [
    "You are a helpful assistant.",
    "system user assistant Picture Video",
    "Describe the image. Describe the video. What is in this video? What happens in the video?",
    "Answer the question with one word. Please answer in one short sentence.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today? I'm fine, thank you.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 1000",
    "There is a shape in the picture. There are two shapes in the video.",
    "Is there a red circle? Yes. No. Where is the blue square? On the left, on the right, at the top, "
    "at the bottom, in the middle.",
    "What colour is it? What color is it? How many are there? Which one is bigger? Which one is smaller?",
    "The object moves from left to right, then from right to left, up and down.",
    "first second third last before after then again still moving",
    "system", "user", "assistant", "Picture", "Video",
]


def build_corpus():
    """Deterministic training text: scene text of held-out-range seeds 0..2999 (scene
    content is the same distribution as training; the seeds only shape the text mix)."""
    lines = []
    for seed in range(3000):
        for kind in ("image", "video"):
            s = scn.make_scene(seed, kind)
            for q in qs.all_questions(s):
                lines.extend(q["variants"])
                lines.append(q["answer"])
            lines.append(qs.caption(s))
    for kind in ("image", "video"):
        lines.extend(qs.caption_prompts(kind))
    for answers in qs.answer_sets().values():
        lines.extend(answers)
    lines.extend(GENERAL_TEXT * 20)
    return lines


def build_tokenizer(vocab=BPE_VOCAB):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=1, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(build_corpus(), trainer=trainer)
    n = tok.get_vocab_size()
    assert n <= vocab, n
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False,
                                       single_word=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False,
                               single_word=False) for t in NONSPECIAL_ADDED])
    # reload from the exported JSON so training uses exactly what is shipped
    return Tokenizer.from_str(tokenizer_json(tok))


def tokenizer_json(tok):
    """tokenizer.json text with Qwen2's ByteLevel pieces and old-style "a b" merges."""
    d = json.loads(tok.to_str())
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    d["pre_tokenizer"]["pretokenizers"][1] = dict(byte_level)
    d["post_processor"] = dict(byte_level)
    d["decoder"] = dict(byte_level)
    d["model"]["continuing_subword_prefix"] = ""
    d["model"]["end_of_word_suffix"] = ""
    merges = [m if isinstance(m, list) else m.split(" ") for m in d["model"]["merges"]]
    for a, b in merges:
        assert " " not in a and " " not in b
    d["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def special_ids(tok):
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + NONSPECIAL_ADDED}
    base = ids[SPECIAL_TOKENS[0]]
    for i, t in enumerate(SPECIAL_TOKENS + NONSPECIAL_ADDED):
        assert ids[t] == base + i, (t, ids[t])
    return ids


def tokenizer_config(ids):
    added = {}
    for t in SPECIAL_TOKENS + NONSPECIAL_ADDED:
        added[str(ids[t])] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                              "single_word": False, "special": t in SPECIAL_TOKENS}
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


def render_prompt(kind, text):
    """Chat text for one user turn: the default system turn, one image or video, then the
    text, then the assistant generation prompt."""
    pad = "<|image_pad|>" if kind == "image" else "<|video_pad|>"
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n<|vision_start|>{pad}<|vision_end|>{text}<|im_end|>\n"
            f"<|im_start|>assistant\n")

"""tools/train/examples.py — training and held-out examples, batches.

Seeds. Held-out scenes (tests, examples, evaluation) use seeds below 1,000,000;
training scene j (the j-th example of the run's stream) is make_scene(TRAIN_SEED_BASE +
j, kind), so no training scene is ever a held-out one. Batch b holds examples
b*B .. b*B+B-1, all of one kind (video with probability p_video, drawn from
rng(data_seed, b)); every random choice of example j (task, phrasing, augmentation)
comes from rng(data_seed, j). A batch is therefore a pure function of (b, B, options):
resuming at batch b reproduces the stream exactly, whatever the number of workers.

An example is one user turn (one image or video, then a question) and the answer:

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|video_pad|>*N<|vision_end|>QUESTION<|im_end|>\\n<|im_start|>assistant\\n
    ANSWER<|im_end|>

with the loss on ANSWER<|im_end|> only. Tasks: a caption ("Describe the video." ->
questions.caption) with probability p_caption, else a question whose type is drawn
uniformly from the types the scene allows, then uniformly within the type (the
total count gets a third of the count draws when it can be asked); the canonical
phrasing 70 % of the time, another phrasing otherwise.
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shapes import questions as qs  # noqa: E402
from shapes import scene as scn  # noqa: E402

import media  # noqa: E402
import mrope  # noqa: E402
import vocab  # noqa: E402

TRAIN_SEED_BASE = 1_000_000_000
HELDOUT_SEED_LIMIT = 1_000_000
EVAL_SEED_BASE = 900_000          # the held-out scenes train.py evaluates on


class Text:
    """Tokenizer wrapper with caches (the question / answer texts repeat a lot)."""

    def __init__(self, tok):
        self.tok = tok
        self.ids = vocab.special_ids(tok)
        self.pad_id = self.ids["<|endoftext|>"]
        self.eos_ids = [self.ids["<|im_end|>"], self.ids["<|endoftext|>"]]
        self.image_id = self.ids["<|image_pad|>"]
        self.video_id = self.ids["<|video_pad|>"]
        self._prompt = {}
        self._answer = {}

    def prompt_ids(self, kind, question):
        key = (kind, question)
        if key not in self._prompt:
            self._prompt[key] = self.tok.encode(vocab.render_prompt(kind, question), add_special_tokens=False).ids
        return self._prompt[key]

    def answer_ids(self, answer):
        if answer not in self._answer:
            self._answer[answer] = self.tok.encode(answer + "<|im_end|>", add_special_tokens=False).ids
        return self._answer[answer]

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True)


def expand_prompt(text, kind, question, grid):
    """Prompt ids with the single pad expanded to the grid's merged-token count, and the
    original-rule M-RoPE positions."""
    pad = text.image_id if kind == "image" else text.video_id
    base = text.prompt_ids(kind, question)
    k = base.index(pad)
    n = grid[0] * (grid[1] // 2) * (grid[2] // 2)
    ids = base[:k] + [pad] * n + base[k + 1:]
    pos, delta = mrope.positions(ids, [grid], text.image_id, text.video_id)
    return ids, pos, delta


def train_task(scene, rng, p_caption):
    """(question, answer, type) for one training example."""
    if rng.random() < p_caption:
        prompts = qs.caption_prompts(scene["kind"])
        prompt = prompts[0] if rng.random() < 0.7 else prompts[int(rng.integers(1, len(prompts)))]
        return prompt, qs.caption(scene), "caption"
    groups = qs.by_type(qs.all_questions(scene))
    types = [t for t in qs.Q_TYPES if t in groups]
    t = types[int(rng.integers(len(types)))]
    pool = groups[t]
    if t == "count" and pool[0]["variants"][0] == "How many shapes are there?" and rng.random() < 1 / 3:
        q = pool[0]
    else:
        q = pool[int(rng.integers(len(pool)))]
    v = q["variants"]
    phrase = v[0] if rng.random() < 0.7 else v[int(rng.integers(len(v)))]
    return phrase, q["answer"], t


def make_example(text, scene, question, answer, qtype, grid):
    """Token ids, M-RoPE positions and the answer span of one example (no pixels)."""
    ids, pos, _ = expand_prompt(text, scene["kind"], question, grid)
    ans = text.answer_ids(answer)
    n_prompt = len(ids)
    ids = ids + ans
    top = pos.max() + 1
    full_pos = np.concatenate([pos, np.arange(top, top + len(ans))[None].repeat(3, 0)], 1)
    return {"ids": np.asarray(ids, np.int64), "pos": full_pos, "n_prompt": n_prompt, "grid": grid,
            "kind": scene["kind"], "type": qtype}


class TrainBatches(torch.utils.data.Dataset):
    """Map-style dataset over batch numbers: item b is the whole batch b (collated)."""

    def __init__(self, tok_json, batch_size, data_seed=0, p_video=0.7, p_caption=0.15, augment=True,
                 length=10 ** 9):
        self.tok_json = tok_json
        self.batch_size = batch_size
        self.data_seed = data_seed
        self.p_video = p_video
        self.p_caption = p_caption
        self.augment = augment
        self.length = length
        self._text = None

    def __len__(self):
        return self.length

    def text(self):
        if self._text is None:                  # built lazily, once per worker process
            from tokenizers import Tokenizer
            self._text = Text(Tokenizer.from_str(self.tok_json))
        return self._text

    def kind_of(self, b):
        return "video" if np.random.default_rng([self.data_seed, 1, b]).random() < self.p_video else "image"

    def example(self, j, kind):
        """Example j: text, positions and the raw frames at file size; the codec
        degradation and resize are left to the consumer (media.model_frames, on the GPU)."""
        rng = np.random.default_rng([self.data_seed, 2, j])
        s = scn.make_scene(TRAIN_SEED_BASE + j, kind)
        q, a, t = train_task(s, rng, self.p_caption)
        raw, size = media.video_raw(s) if kind == "video" else media.image_raw(s)
        aug = media.augment_params(rng, kind) if self.augment else None
        ex = make_example(self.text(), s, q, a, t, media.grid_for(raw.shape[0], size))
        ex.update(raw=raw, size=size, aug=aug)
        return ex

    def __getitem__(self, b):
        kind = self.kind_of(b)
        exs = [self.example(b * self.batch_size + i, kind) for i in range(self.batch_size)]
        return collate(exs, self.text().pad_id)


def collate(exs, pad_id):
    """Right-padded batch. labels[i] = ids[i] on answer tokens, -100 elsewhere (the model
    predicts token i from position i-1). Raw frames travel as one flat uint8 buffer with
    their shapes, target sizes and degradation parameters."""
    n = len(exs)
    L = max(len(e["ids"]) for e in exs)
    ids = torch.full((n, L), pad_id, dtype=torch.long)
    attn = torch.zeros((n, L), dtype=torch.long)
    labels = torch.full((n, L), -100, dtype=torch.long)
    pos = torch.zeros((3, n, L), dtype=torch.long)
    for i, e in enumerate(exs):
        k = len(e["ids"])
        ids[i, :k] = torch.from_numpy(e["ids"])
        attn[i, :k] = 1
        labels[i, e["n_prompt"]:k] = ids[i, e["n_prompt"]:k]
        pos[:, i, :k] = torch.from_numpy(e["pos"])
    flat = torch.cat([e["raw"].reshape(-1) for e in exs])
    return {"ids": ids, "attn": attn, "labels": labels, "pos": pos, "frames": flat,
            "shapes": [tuple(e["raw"].shape) for e in exs], "sizes": [e["size"] for e in exs],
            "augs": [e["aug"] for e in exs], "kind": exs[0]["kind"], "types": [e["type"] for e in exs]}


def heldout_items(n_scenes, seed0=EVAL_SEED_BASE, captions=True):
    """Held-out evaluation items: scenes seed0.. (alternating video / image), each with its
    picked questions (questions.pick_questions) and, if captions, its caption. No
    augmentation: the clean rendering is what train.py's evaluation sees (evaluate.py
    measures the real files)."""
    items = []
    for i in range(n_scenes):
        kind = "video" if i % 2 == 0 else "image"
        s = scn.make_scene(seed0 + i, kind)
        frames = media.video_frames(s) if kind == "video" else media.image_frames(s)
        qlist = qs.pick_questions(s)
        if captions:
            qlist = qlist + [{"type": "caption", "question": qs.caption_prompt(kind), "answer": qs.caption(s)}]
        for q in qlist:
            items.append({"scene": s, "frames": frames, "question": q["question"], "answer": q["answer"],
                          "type": q["type"], "kind": kind})
    return items

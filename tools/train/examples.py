"""tools/train/examples.py — training and held-out examples, batches.

Seeds. Held-out scenes (tests, examples, evaluation) use seeds below 1,000,000;
training scenes use seeds from TRAIN_SEED_BASE up, so no training scene is ever a held-out
one. Batch b is made of scenes j = b * MAX_BATCH + i, i < its scene count; its bucket
(images, or videos of one sampled-frame count n) is drawn from rng(data_seed, 1, b), and
scene j is make_scene(TRAIN_SEED_BASE + j, kind, n) with every random choice of its
examples (tasks, phrasings, augmentation) from rng(data_seed, 2, j). A batch is therefore
a pure function of (b, options): resuming at batch b reproduces the stream exactly,
whatever the number of workers.

Buckets and batch sizes. Examples of one bucket have nearly equal token counts (a video's
length is set by its frame count: 128-144 merged tokens per pair of frames), so a batch
carries almost no padding. A bucket's batch size is batch_tokens / its mean example length
(or a fixed batch_size), so every step costs about the same; the batch probabilities are
set so that the share of examples per bucket is: images 1 - p_video, videos p_video split
by nframes_p over scene.VIDEO_NFRAMES.

Scenes shared by questions. With per_scene = k (train.py --questions-per-scene), a batch
holds k examples per scene: k tasks of different types where the scene allows, on the same
degraded frames, which travel once; collate() says which vision-tower rows each sequence
takes (vis_src), so the tower runs once per scene.

An example is one user turn (one image or video, then a question) and the answer:

    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n
    <|vision_start|><|video_pad|>*N<|vision_end|>QUESTION<|im_end|>\n<|im_start|>assistant\n
    ANSWER<|im_end|>

with the loss on ANSWER<|im_end|> only. Tasks: a caption ("Describe the video." ->
questions.caption) with probability p_caption, else a question whose type is drawn from
the types the scene allows with weights type_weights (TYPE_WEIGHTS: the types that need
the shape, direction and counting more often, colour less), then uniformly within the type (the total count gets
a third of the count draws when it can be asked); the canonical phrasing 70 % of the time,
another phrasing otherwise.

collate() also prepares what the training step would otherwise compute per forward with
host syncs and per-example loops: vision rotary positions, chunk boundaries and the
fast_vision plan, where the vision tokens go, and which hidden states predict which answer
tokens (see train.py).
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shapes import questions as qs  # noqa: E402
from shapes import scene as scn  # noqa: E402

import aux  # noqa: E402
import fast_vision  # noqa: E402
import media  # noqa: E402
import mrope  # noqa: E402
import vocab  # noqa: E402

TRAIN_SEED_BASE = 1_000_000_000
HELDOUT_SEED_LIMIT = 1_000_000
EVAL_SEED_BASE = 900_000          # the held-out scenes train.py evaluates on
MAX_BATCH = 4096                  # examples per batch at most (example j = b * MAX_BATCH + i)

# training video lengths: share of the video examples per sampled-frame count
# (scene.VIDEO_NFRAMES = 4, 6, 8, 10, 12, 16; the held-out scenes use scene.VIDEO_NFRAMES_P =
# 0.30 0.27 0.23 0.08 0.07 0.05). Shorter videos cost fewer tokens and teach the same question
# types; the long ones stay frequent enough for their positions.
TRAIN_NFRAMES_P = [0.38, 0.27, 0.19, 0.07, 0.05, 0.04]
# question type weights among the types a scene allows (uniform was 1 each)
# every task an example can be (type_idx in a batch indexes this)
TASK_TYPES = list(qs.Q_TYPES) + ["caption"]
TYPE_WEIGHTS = {"colour": 0.75, "shape": 2.0, "count": 1.25, "direction": 1.5, "moves": 1.5,
                "appears": 2.0, "disappears": 2.0}


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


def train_task(scene, rng, p_caption, type_weights=None):
    """(question, answer, type) for one training example."""
    if rng.random() < p_caption:
        prompts = qs.caption_prompts(scene["kind"])
        prompt = prompts[0] if rng.random() < 0.7 else prompts[int(rng.integers(1, len(prompts)))]
        return prompt, qs.caption(scene), "caption"
    groups = qs.by_type(qs.all_questions(scene))
    types = [t for t in qs.Q_TYPES if t in groups]
    if type_weights is None:
        t = types[int(rng.integers(len(types)))]
    else:
        w = np.array([type_weights.get(t, 1.0) for t in types], float)
        t = types[int(np.searchsorted(np.cumsum(w / w.sum()), rng.random(), side="right").clip(0, len(types) - 1))]
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
    pad = text.image_id if scene["kind"] == "image" else text.video_id
    vis_start, vis_len = ids.index(pad), grid[0] * (grid[1] // 2) * (grid[2] // 2)
    ans = text.answer_ids(answer)
    n_prompt = len(ids)
    ids = ids + ans
    top = pos.max() + 1
    full_pos = np.concatenate([pos, np.arange(top, top + len(ans))[None].repeat(3, 0)], 1)
    return {"ids": np.asarray(ids, np.int64), "pos": full_pos, "n_prompt": n_prompt, "grid": grid,
            "kind": scene["kind"], "type": qtype, "vis_start": vis_start, "vis_len": vis_len}


def parse_weights(text, default):
    """"shape=2,moves=1.5" -> default updated with those weights."""
    w = dict(default)
    for part in filter(None, (text or "").split(",")):
        k, v = part.split("=")
        assert k in w, f"unknown question type {k!r}"
        w[k] = float(v)
    return w


class TrainBatches(torch.utils.data.Dataset):
    """Map-style dataset over batch numbers: item b is the whole batch b (collated)."""

    def __init__(self, tok_json, batch_size=0, data_seed=0, p_video=0.6, p_caption=0.15, augment=True,
                 length=10 ** 9, batch_tokens=32768, nframes_p=None, type_weights=None, per_scene=1):
        self.tok_json = tok_json
        self.per_scene = max(1, int(per_scene))
        self.data_seed = data_seed
        self.p_video = p_video
        self.p_caption = p_caption
        self.augment = augment
        self.length = length
        self.type_weights = type_weights
        self._text = None
        nframes_p = np.asarray(TRAIN_NFRAMES_P if nframes_p is None else nframes_p, float)
        assert len(nframes_p) == len(scn.VIDEO_NFRAMES)
        nframes_p = nframes_p / nframes_p.sum()
        # buckets: (kind, sampled frames or None), share of the examples, batch size
        self.buckets = [("image", None)] + [("video", n) for n in scn.VIDEO_NFRAMES]
        share = np.concatenate([[1.0 - p_video], p_video * nframes_p])
        self.mean_len = [self._mean_len(k, n) for k, n in self.buckets]
        if batch_size:
            sizes = [int(batch_size)] * len(self.buckets)
        else:
            sizes = [int(max(1, min(MAX_BATCH, round(batch_tokens / m)))) for m in self.mean_len]
        q = self.per_scene                      # whole scenes per batch
        self.sizes = [max(q, (s + q // 2) // q * q) for s in sizes]
        pb = np.array([s / b for s, b in zip(share, self.sizes)])
        self.batch_p = pb / pb.sum()
        self._cdf = np.cumsum(self.batch_p)
        self.share = share
        self._text = None                       # workers build their own

    def __len__(self):
        return self.length

    def text(self):
        if self._text is None:                  # built lazily, once per worker process
            from tokenizers import Tokenizer
            self._text = Text(Tokenizer.from_str(self.tok_json))
        return self._text

    def _mean_len(self, kind, n, k=48):
        """Mean token count of a bucket's examples (a fixed sample of scenes: deterministic)."""
        text = self.text()
        tot = 0
        for i in range(k):
            s = scn.make_scene(3 * 10 ** 8 + i, kind, n)
            rng = np.random.default_rng([12345, i])
            q, a, _ = train_task(s, rng, self.p_caption)
            if kind == "video":
                size = media.qr.video_resized_size(s["height"], s["width"], n)
            else:
                size = media.qr.smart_resize(s["height"], s["width"], media.model_config.IMAGE_MIN_PIXELS,
                                             media.model_config.IMAGE_MAX_PIXELS)
            grid = media.grid_for(n or 1, size)
            tot += len(text.prompt_ids(kind, q)) - 1 + grid[0] * (grid[1] // 2) * (grid[2] // 2)
            tot += len(text.answer_ids(a))
        return tot / k

    def bucket_of(self, b):
        u = np.random.default_rng([self.data_seed, 1, b]).random()
        return int(min(np.searchsorted(self._cdf, u, side="right"), len(self.buckets) - 1))

    def kind_of(self, b):
        return self.buckets[self.bucket_of(b)][0]

    def describe(self):
        rows = []
        for (kind, n), m, size, pb, sh in zip(self.buckets, self.mean_len, self.sizes, self.batch_p, self.share):
            rows.append(f"{kind if n is None else f'video {n:2d} frames'}: {sh:.3f} of the examples, "
                        f"mean {m:.0f} tokens, {size} per batch ({size // self.per_scene} scenes), "
                        f"{pb:.3f} of the batches")
        return rows

    def scene_examples(self, j, kind, n_frames=None, k=1):
        """Scene j and k examples on it (k different tasks, of different types where the scene
        allows): text, positions and the scene's raw frames at file size, degraded as a lossy
        codec would (media.codec_augment, on the CPU) and shared by the k examples; the resize
        is left to the consumer."""
        rng = np.random.default_rng([self.data_seed, 2, j])
        s = scn.make_scene(TRAIN_SEED_BASE + j, kind, n_frames)
        tasks = []
        for _ in range(k):
            for attempt in range(8):
                q, a, t = train_task(s, rng, self.p_caption, self.type_weights)
                if t not in {x[2] for x in tasks} or (attempt >= 5 and q not in {x[0] for x in tasks}):
                    break
            tasks.append((q, a, t))
        raw, size = media.video_raw(s) if kind == "video" else media.image_raw(s)
        aug = media.augment_params(rng, kind) if self.augment else None
        grid = media.grid_for(raw.shape[0], size)
        exs = [make_example(self.text(), s, q, a, t, grid) for q, a, t in tasks]
        if aug is not None:
            raw = media.codec_augment(raw, aug)
        labels = torch.from_numpy(aux.token_labels(s, size, s["sample_idx"]))
        for ex in exs:
            ex.update(raw=raw, size=size, aug=aug, aux=labels)
        return exs

    def example(self, j, kind, n_frames=None):
        """Example j alone (one task on scene j)."""
        return self.scene_examples(j, kind, n_frames, 1)[0]

    def __getitem__(self, b):
        k = self.bucket_of(b)
        kind, n = self.buckets[k]
        q = self.per_scene
        exs, scene_of = [], []
        for i in range(-(-self.sizes[k] // q)):
            exs += self.scene_examples(b * MAX_BATCH + i, kind, n, q)
            scene_of += [i] * q
        return collate(exs, self.text().pad_id, scene_of)


def collate(exs, pad_id, scene_of=None):
    """Right-padded batch of examples (sequences); scene_of[i]: the scene (0, 1, ... in order)
    whose media sequence i shows (default: each its own). labels[i] = ids[i] on answer
    tokens, -100 elsewhere (the model predicts token i from position i-1). Raw frames travel
    once per scene as one flat uint8 buffer with their shapes and target sizes. Also, for
    train.py's forward without host syncs:
      grid (scenes, 3); vpos (patches, 2) vision rotary positions; cu (chunks + 1) int32
      chunk boundaries; plan: fast_vision's plan for those chunks; vis_idx: the flat
      positions (in batch x length) of the vision pad tokens, in order; vis_src: for each of
      them, its row of the vision tower's output (None when every sequence has its own
      scene); tgt_idx / tgt / tgt_row: for every answer token, the flat position of the
      hidden state that predicts it, the token and its example; tgt_n (n,) float answer
      tokens per example; aux (vision rows, 3): aux.token_labels of the scenes, in the rows
      of the vision tower's output (aux.IGNORE for examples without labels); type_idx (n,):
      each example's task as an index into TASK_TYPES."""
    n = len(exs)
    scene_of = list(range(n)) if scene_of is None else list(scene_of)
    first = {}
    for i, sc in enumerate(scene_of):
        first.setdefault(sc, i)
    assert sorted(first) == list(range(len(first))), "scenes must be numbered 0, 1, ..."
    reps = [exs[first[sc]] for sc in range(len(first))]
    L = max(len(e["ids"]) for e in exs)
    ids = torch.full((n, L), pad_id, dtype=torch.long)
    attn = torch.zeros((n, L), dtype=torch.long)
    labels = torch.full((n, L), -100, dtype=torch.long)
    pos = torch.zeros((3, n, L), dtype=torch.long)
    vis_idx, tgt_idx, tgt, tgt_row, tgt_n = [], [], [], [], []
    for i, e in enumerate(exs):
        k = len(e["ids"])
        ids[i, :k] = torch.from_numpy(e["ids"])
        attn[i, :k] = 1
        labels[i, e["n_prompt"]:k] = ids[i, e["n_prompt"]:k]
        pos[:, i, :k] = torch.from_numpy(e["pos"])
        vis_idx.append(i * L + np.arange(e["vis_start"], e["vis_start"] + e["vis_len"]))
        a = np.arange(e["n_prompt"], k)
        tgt_idx.append(i * L + a - 1)
        tgt.append(e["ids"][a])
        tgt_row.append(np.full(len(a), i))
        tgt_n.append(len(a))
    flat = torch.cat([e["raw"].reshape(-1) for e in reps])
    grids = [tuple(int(x) for x in e["grid"]) for e in reps]
    cat = (lambda xs: torch.from_numpy(np.concatenate(xs).astype(np.int64)))
    aux_rows = [e["aux"] if "aux" in e else torch.full((e["vis_len"], 3), aux.IGNORE, dtype=torch.long)
                for e in reps]
    vis_src = None
    if scene_of != list(range(n)):
        off = np.concatenate([[0], np.cumsum([e["vis_len"] for e in reps])])
        vis_src = cat([off[sc] + np.arange(exs[i]["vis_len"]) for i, sc in enumerate(scene_of)])
    return {"ids": ids, "attn": attn, "labels": labels, "pos": pos, "frames": flat,
            "shapes": [tuple(e["raw"].shape) for e in reps], "sizes": [e["size"] for e in reps],
            "augs": [e["aug"] for e in reps], "kind": exs[0]["kind"], "types": [e["type"] for e in exs],
            "scene_of": scene_of, "vis_src": vis_src, "grid": torch.tensor(grids, dtype=torch.long),
            "vpos": fast_vision.vision_position_ids(grids), "cu": fast_vision.cu_seqlens(grids),
            "plan": fast_vision.make_plan(fast_vision.chunk_lengths(grids)),
            "vis_idx": cat(vis_idx), "tgt_idx": cat(tgt_idx), "tgt": cat(tgt), "tgt_row": cat(tgt_row),
            "tgt_n": torch.tensor(tgt_n, dtype=torch.float32), "n_tokens": int(attn.sum()),
            "aux": torch.cat(aux_rows),
            "type_idx": torch.tensor([TASK_TYPES.index(e["type"]) for e in exs], dtype=torch.long)}


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

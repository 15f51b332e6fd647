#!/usr/bin/env python3
"""tools/train/check.py — CPU checks of the generator and the training pipeline against
the references (qwen-vl-utils, torchvision, transformers' processors and chat template,
tests/data/golden), and optionally of an exported folder against the C engine.

    /opt/golden/bin/python tools/train/check.py
    /opt/golden/bin/python tools/train/check.py --model /tmp/shapes-smoke/models/vidi-shapes \\
        --files /tmp/shapes-files --vidi build/vidi

Checks (each prints one line; the script stops at the first failure):
  generator   same seed -> same scene, questions, caption and pixels; answers within the
              fixed answer sets; sampled frames never show an event half-way in a pair
  rules       qwen_rules vs qwen_vl_utils (smart_nframes, smart_resize, video bounds) and
              torch.linspace(...).round() for every (total, n) the generator can make
  resize      media.resize_uint8 vs torchvision resize(BICUBIC, antialias=True) on uint8: equal
  patchify    media.patchify vs Qwen2VLVideoProcessor / Qwen2VLImageProcessorPil (no resize)
  positions   mrope.positions vs tests/data/golden/cases/q2_* position_ids.npy
  template    vocab.render_prompt vs the chat template rendered by transformers
  tokenizer   prompt + answer tokenizes as prompt ids + answer ids; AutoTokenizer agrees
  greedy      batched left-padded greedy == one-at-a-time greedy (random weights)
  fastvision  fast_vision's batched vision attention == transformers' loop (outputs, grads)
  trainstep   train.py's forward (precomputed vision inputs, no attention mask) == transformers'
              forward with the padding mask: loss and gradients, incl. a heavily padded batch
  aux         aux.token_labels against the rendered, resized frames: background tokens are
              all background pixels, a labelled token's most frequent non-background pixel
              colour is its object's colour, and the rows line up with the tower's output
  nanguard    padded batches and masked vision groups stay finite; a non-finite loss skips
              the AdamW step (weights and moments unchanged) and training goes on
  initfolder  export_folder (bf16) -> load_folder round trip
  grow        grow.py: a random draft (random norms and biases too) grown to the vidi-shapes
              config computes the draft's logits (float32), and the grown config is SPECS'
  resume      (--resume-test) 6 steps == 3 steps + --resume 3 steps, bit for bit (CPU);
              then --init-from the exported models.tgz trains on from the next batch
  files       (--files) training pixels vs what qwen-vl-utils reads from the written files
  engine      (--model, --files, --vidi) first-token logits of `vidi generate` vs transformers
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shapes import qwen_rules as qr  # noqa: E402
from shapes import questions as qs  # noqa: E402
from shapes import render  # noqa: E402
from shapes import scene as scn  # noqa: E402

import aux  # noqa: E402
import examples  # noqa: E402
import fast_vision  # noqa: E402
import heldout  # noqa: E402
import greedy  # noqa: E402
import media  # noqa: E402
import model_config  # noqa: E402
import mrope  # noqa: E402
import vocab  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(max(1, os.cpu_count() or 1))


def ok(name, msg):
    print(f"ok  {name:10s} {msg}", flush=True)


def _config(tok, name="vidi-shapes-draft"):
    """(special ids, flat config) of model `name` with this tokenizer."""
    ids = vocab.special_ids(tok)
    return ids, model_config.flat_config(name, ids, model_config.padded_vocab(tok.get_vocab_size()))


def check_generator(n=300):
    answers = qs.answer_sets()
    n_q = 0
    for seed, kind in itertools.product(range(n), ("image", "video")):
        a, b = scn.make_scene(seed, kind), scn.make_scene(seed, kind)
        assert json.dumps(a) == json.dumps(b), (seed, kind)
        assert qs.all_questions(a) == qs.all_questions(b) and qs.caption(a) == qs.caption(b)
        for q in qs.all_questions(a):
            assert q["answer"] in answers[q["type"]], q
            n_q += 1
        if kind == "video":
            idx = a["sample_idx"]
            assert 8 <= a["n_frames"] <= 64 and 4 <= len(idx) <= 16, (seed, a["n_frames"], idx)
            assert a["width"] % 2 == 0 and a["height"] % 2 == 0
            for o in a["objects"]:
                vis = scn.visible(o, np.array(idx))
                pairs = vis.reshape(-1, 2)
                assert (pairs[:, 0] == pairs[:, 1]).all(), ("event inside a frame pair", seed, o)
                assert vis.any()
        if seed < 40:
            assert np.array_equal(render.render(a), render.render(b))
    n_forced = 0
    for seed in range(n // 3):                      # training's videos of a given length
        for nf in scn.VIDEO_NFRAMES:
            a = scn.make_scene(10 ** 9 + seed, "video", nf)
            assert json.dumps(a) == json.dumps(scn.make_scene(10 ** 9 + seed, "video", nf))
            idx = a["sample_idx"]
            assert len(idx) == nf and 8 <= a["n_frames"] <= 64 and qr.smart_nframes(a["n_frames"], a["fps"]) == nf
            assert a["width"] % 2 == 0 and a["height"] % 2 == 0
            for o in a["objects"]:
                vis = scn.visible(o, np.array(idx))
                assert (vis.reshape(-1, 2)[:, 0] == vis.reshape(-1, 2)[:, 1]).all() and vis.any()
            for q in qs.all_questions(a):
                assert q["answer"] in answers[q["type"]], q
            n_forced += 1
    ok("generator", f"{2 * n} scenes deterministic, {n_q} answers within the answer sets; "
       f"{n_forced} videos of a forced frame count keep the rules")


def check_rules():
    import logging

    import qwen_vl_utils.vision_process as qvu

    logging.getLogger(qvu.__name__).setLevel(logging.ERROR)   # "nframes > total_frames" notes

    combos = 0
    for fps in (1, 2, 3, 4, 5, 6, 8, 10, 12, 24, 25, 30):
        for total in range(2, 200):
            try:
                mine = qr.smart_nframes(total, fps)
            except ValueError:
                mine = None
            try:
                ref = qvu.smart_nframes({}, total_frames=total, video_fps=fps)
            except ValueError:
                ref = None
            assert mine == ref, (total, fps, mine, ref)
            if mine:
                ref_idx = torch.linspace(0, total - 1, mine).round().long().tolist()
                assert qr.frame_indices(total, mine) == ref_idx, (total, mine)
                combos += 1
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(8, 1200, (3000, 2))] + [(64, 448), (448, 64), (336, 336)]
    for h, w in sizes:
        if max(h, w) / min(h, w) > 200:
            continue
        for lo, hi in ((model_config.IMAGE_MIN_PIXELS, model_config.IMAGE_MAX_PIXELS),
                       qr.video_pixel_bounds(4), qr.video_pixel_bounds(16)):
            assert qr.smart_resize(h, w, lo, hi) == qvu.smart_resize(h, w, 28, lo, hi), (h, w, lo, hi)
    for n in (2, 4, 16, 200, 768):
        ref = max(min(qvu.VIDEO_MAX_TOKEN_NUM * 784, qvu.MODEL_SEQ_LEN * 784 * 0.9 / n * 2),
                  int(qvu.VIDEO_MIN_TOKEN_NUM * 784 * 1.05))
        assert qr.video_pixel_bounds(n) == (qvu.VIDEO_MIN_TOKEN_NUM * 784, ref)
    ok("rules", f"smart_nframes + indices on {combos} (total, fps) cases, smart_resize on {len(sizes)} sizes")


def check_resize():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(1)
    cases = 0
    for seed in range(12):
        s = scn.make_scene(seed, "video")
        frames = torch.from_numpy(render.render_frames(s, s["sample_idx"][:2])).permute(0, 3, 1, 2).contiguous()
        noisy = torch.from_numpy(rng.integers(0, 256, (2, 3, 37, 53), dtype=np.uint8))
        for x in (frames, noisy):
            rh, rw = qr.video_resized_size(x.shape[2], x.shape[3], 4)
            a = media.resize_uint8(x, rh, rw)
            b = TF.resize(x, [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True)
            assert torch.equal(a, b), (seed, (a.int() - b.int()).abs().max())
            cases += 1
    ok("resize", f"equal to torchvision on {cases} frame stacks")


def check_patchify():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    size = {"shortest_edge": 3136, "longest_edge": 12845056}
    mean, std = model_config.CLIP_MEAN, model_config.CLIP_STD
    vp = Qwen2VLVideoProcessor(size=size, image_mean=mean, image_std=std, do_resize=False,
                               do_sample_frames=False, cap_pixels_per_frame=True)
    ip = Qwen2VLImageProcessorPil(size=size, image_mean=mean, image_std=std, do_resize=False)
    worst = 0.0
    for seed in range(6):
        v = media.video_frames(scn.make_scene(seed, "video"))
        for x in (v, v[:-1]):                                  # even and odd frame counts
            mine, grid = media.patchify(x)
            r = vp(videos=[x], return_tensors="pt")
            assert list(r["video_grid_thw"][0]) == list(grid)
            worst = max(worst, float((mine - r["pixel_values_videos"]).abs().max()))
        im = media.image_frames(scn.make_scene(seed, "image"))
        mine, grid = media.patchify(im)
        r = ip(images=[im[0].permute(1, 2, 0).numpy()], return_tensors="pt", input_data_format="channels_last")
        assert list(r["image_grid_thw"][0]) == list(grid)
        worst = max(worst, float((mine - torch.as_tensor(r["pixel_values"])).abs().max()))
    assert worst < 1e-5, worst
    ok("patchify", f"max abs diff {worst:.2g} vs the transformers video / image processors")


def check_positions():
    root = os.path.join(REPO, "tests", "data", "golden", "cases")
    n = 0
    for name in sorted(os.listdir(root)):
        if not name.startswith("q2_"):
            continue
        with open(os.path.join(root, name, "manifest.json")) as f:
            m = json.load(f)
        ids = np.load(os.path.join(root, name, "input_ids.npy"))
        ref = np.load(os.path.join(root, name, "position_ids.npy"))
        with open(os.path.join(REPO, "tests", "data", m["model"], "config.json")) as f:
            cfg = json.load(f)
        pos, delta = mrope.positions(ids, [tuple(x["grid"]) for x in m["media"]], cfg["image_token_id"],
                                     cfg["video_token_id"])
        assert np.array_equal(pos, ref) and delta == m["rope_delta"], name
        n += 1
    ok("positions", f"equal to the engine's references on {n} Qwen2-VL cases")


def check_template(tok):
    from transformers.utils.chat_template_utils import render_jinja_template

    for kind in ("image", "video"):
        for q in ("What colour is the circle?", "Describe the video."):
            conv = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": q}]}]
            out, _ = render_jinja_template(conversations=[conv], chat_template=vocab.CHAT_TEMPLATE,
                                           add_generation_prompt=True)
            assert out[0] == vocab.render_prompt(kind, q), (out[0], vocab.render_prompt(kind, q))
    ok("template", "render_prompt equals the chat template rendered by transformers")


def check_tokenizer(tok, folder=None):
    text = examples.Text(tok)
    n = 0
    for kind in ("image", "video"):
        for t, answers in qs.answer_sets().items():
            for a in answers:
                q = "What appears?"
                full = tok.encode(vocab.render_prompt(kind, q) + a + "<|im_end|>", add_special_tokens=False).ids
                assert full == text.prompt_ids(kind, q) + text.answer_ids(a), (kind, a)
                n += 1
        for seed in range(50):
            s = scn.make_scene(seed, kind)
            for q in qs.all_questions(s)[:3] + [{"question": qs.caption_prompt(kind), "answer": qs.caption(s)}]:
                full = tok.encode(vocab.render_prompt(kind, q["question"]) + q["answer"] + "<|im_end|>",
                                  add_special_tokens=False).ids
                assert full == text.prompt_ids(kind, q["question"]) + text.answer_ids(q["answer"])
                assert text.decode(text.answer_ids(q["answer"])) == q["answer"]
                n += 1
    msg = f"prompt + answer splits cleanly in {n} cases"
    if folder:
        from transformers import AutoTokenizer

        at = AutoTokenizer.from_pretrained(folder)
        lines = vocab.build_corpus()[::97] + [vocab.render_prompt("video", "Which shape moves?")]
        bad = [s for s in lines if at.encode(s, add_special_tokens=False) != tok.encode(s).ids]
        assert not bad, bad[:3]
        msg += f"; AutoTokenizer({type(at).__name__}) agrees on {len(lines)} lines"
    ok("tokenizer", msg)


def check_greedy(tok):
    text = examples.Text(tok)
    ids, cfg = _config(tok)
    torch.manual_seed(0)
    m = model_config.make_model(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():          # larger random weights: varied, non-degenerate tokens
            if p.ndim >= 2:
                p.normal_(0, 0.15)
    items = examples.heldout_items(3)
    prompts = []
    for it in items[:6]:
        pv, grid = media.patchify(it["frames"])
        t, pos, _ = examples.expand_prompt(text, it["kind"], it["question"], grid)
        prompts.append({"ids": t, "pos": pos, "pixel_values": pv, "grid": grid, "kind": it["kind"]})
    batched = greedy.greedy(m, prompts, [-1], text.pad_id, max_new_tokens=8)
    single = [greedy.greedy(m, [p], [-1], text.pad_id, max_new_tokens=8)[0] for p in prompts]
    assert batched == single, (batched, single)
    assert len({tuple(b) for b in batched}) > 1
    ok("greedy", f"batched == one at a time on {len(prompts)} prompts of mixed kinds and lengths")


def check_fast_vision(tok):
    ids, cfg = _config(tok)
    torch.manual_seed(0)
    ref = model_config.make_model(cfg)
    fast = fast_vision.install(model_config.make_model(cfg))
    fast.load_state_dict(ref.state_dict())
    frames = [media.video_frames(scn.make_scene(s, "video")) for s in range(4)]
    frames += [media.image_frames(scn.make_scene(s, "image")) for s in range(3)]
    pvs, grids = zip(*[media.patchify(f) for f in frames])
    pv, grid = torch.cat(pvs), torch.tensor(grids)
    outs = []
    for m in (ref, fast):
        y = m.model.visual(pv, grid_thw=grid).pooler_output
        y.pow(2).mean().backward()
        outs.append((y.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    d_out = float((outs[0][0] - outs[1][0]).abs().max())
    d_grad = max(float((outs[0][1][n] - outs[1][1][n]).abs().max() / (outs[0][1][n].abs().max() + 1e-12))
                 for n in outs[0][1])
    assert d_out < 1e-5 and d_grad < 1e-4, (d_out, d_grad)
    copy = heldout.bf16_copy(fast)
    va = next(m for m in copy.modules() if type(m).__name__ == "VisionAttention")
    assert va.forward.__self__ is va, "deepcopy kept the patched forward bound to the original"
    ok("fastvision", f"{len(frames)} items, {int(grid[:, 0].sum())} chunks: max |out diff| {d_out:.2g}, "
       f"max relative grad diff {d_grad:.2g}")


def _train_batches(tok):
    """Batches for the step checks: a video bucket, an image batch with chunk lengths from 128
    to 576 patches (masked fast_vision groups), and extreme padding: one 16-frame video with
    three 4-frame ones (about 1150 against 300 tokens)."""
    ds = examples.TrainBatches(vocab.tokenizer_json(tok), 3)
    pad = ds.text().pad_id
    vid = [ds.example(10 + i, "video", 6) for i in range(3)]
    imgs = [ds.example(40 + i, "image") for i in range(40)]
    imgs = sorted(imgs, key=lambda e: e["vis_len"])
    imgs = [imgs[0], imgs[len(imgs) // 2], imgs[-1]]
    mixed = [ds.example(70, "video", 16)] + [ds.example(71 + i, "video", 4) for i in range(3)]
    shared = ds.scene_examples(80, "video", 4, 3) + ds.scene_examples(81, "video", 4, 3)
    return {"video": examples.collate(vid, pad), "image": examples.collate(imgs, pad),
            "padded": examples.collate(mixed, pad), "shared": examples.collate(shared, pad, [0, 0, 0, 1, 1, 1])}


def _grads(m):
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def check_train_step(tok):
    """train.py's forward (precomputed vision inputs, fast_vision plan, no attention mask,
    answer_loss) == transformers' forward with the padding mask (compute_loss): loss and
    gradients, on a video batch, an image batch, a heavily padded one and one whose scenes
    are shared by three sequences each (vision output computed once, gathered)."""
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

    import train

    dev = torch.device("cpu")
    worst_l = worst_g = 0.0
    info = []
    for name in ("vidi-shapes-draft", "vidi-shapes"):
        _, cfg = _config(tok, name)
        torch.manual_seed(0)
        ref = model_config.make_model(cfg)
        fast = fast_vision.install(model_config.make_model(cfg))
        fast.load_state_dict(ref.state_dict())
        for tag, batch in _train_batches(tok).items():
            g = batch["grid"]
            assert torch.equal(batch["vpos"], get_vision_position_ids(g, 2)), "vision position ids"
            assert torch.equal(batch["cu"], get_vision_cu_seqlens(g)), "cu_seqlens"
            b = train.to_device(batch, dev)
            b["labels"] = batch["labels"]
            ref_pv = torch.cat([media.patchify(media.resize_uint8(batch["frames"][o:o + int(np.prod(sh))].view(sh),
                                                                  *sz))[0]
                                for o, sh, sz in zip(np.cumsum([0] + [int(np.prod(x)) for x in batch["shapes"]]),
                                                     batch["shapes"], batch["sizes"])])
            assert torch.equal(ref_pv, b["pixel_values"]), "batch_patches != patchify(resize_uint8)"
            vis = train.vision_inputs(batch, dev)     # one copy of the patches per sequence
            ref.zero_grad(set_to_none=True)
            fast.zero_grad(set_to_none=True)
            l_ref, tf_ref = train.compute_loss(ref, b, vis)
            l_ref.backward()
            made = fast_vision._plan_cache["made"]
            l_new, tf_new, _, _ = train.step_loss(fast, b)
            l_new.backward()
            assert fast_vision._plan_cache["made"] == made, "the seeded plan was not used"
            assert torch.isfinite(l_new) and all(torch.isfinite(v).all() for v in _grads(fast).values()), tag
            dl = abs(float((l_ref - l_new).detach()))
            gr, gn = _grads(ref), _grads(fast)
            assert gr.keys() == gn.keys()
            dg = max(float((gr[k] - gn[k]).abs().max() / (gr[k].abs().max() + 1e-12)) for k in gr)
            worst_l, worst_g = max(worst_l, dl), max(worst_g, dg)
            assert dl < 1e-5 and dg < 2e-4 and float(tf_ref) == float(tf_new), (name, tag, dl, dg)
            info.append(f"{tag} {tuple(batch['ids'].shape)}")
            # the auxiliary loss: one label row per vision-tower output row, added with its weight
            torch.manual_seed(1)
            head = aux.Head(cfg["hidden_size"])
            fast.zero_grad(set_to_none=True)
            l_aux, _, al, _ = train.step_loss(fast, b, head, 0.5)
            assert b["aux"].shape[0] == int((g[:, 0] * g[:, 1] * g[:, 2]).sum()) // 4, (tag, b["aux"].shape)
            d_aux = float((l_aux - l_new - 0.5 * al).detach())
            assert abs(d_aux) < 1e-5 and float(al.detach()) > 0, (tag, d_aux)
            l_aux.backward()
            assert head.proj.weight.grad is not None and torch.isfinite(head.proj.weight.grad).all(), tag
    ok("trainstep", f"train.py's forward == transformers' with the padding mask ({', '.join(info[:4])}; both "
       f"models): max |loss diff| {worst_l:.2g}, max relative grad diff {worst_g:.2g}")


def check_nan_guard(tok):
    """NaN robustness. (1) The heavily padded batch and masked vision groups give finite
    outputs, loss and gradients in both forwards (no attention row is fully masked: padded
    text rows see the real tokens before them, padded vision rows their chunk's keys); left
    padding through transformers' mask (fully masked pad rows) stays finite too. (2) A
    non-finite loss skips that model's AdamW step: weights, moments and step count stay as
    they were, the guard counts it, and the next finite step trains again."""
    import train

    ids, cfg = _config(tok)
    dev = torch.device("cpu")
    batches = _train_batches(tok)
    for tag, batch in batches.items():
        plan = batch["plan"]
        for idx, sel, mask in plan["groups"]:
            assert mask is None or bool(mask.any(-1).all()), "a fully masked vision attention row"
        n_real = batch["attn"].sum(1)
        assert int(n_real.min()) >= 1
    torch.manual_seed(0)
    m = fast_vision.install(model_config.make_model(cfg))
    b = train.to_device(batches["padded"], dev)
    h, _ = train.forward_hidden(m, b)
    assert torch.isfinite(h).all(), "non-finite hidden states (padded rows included)"
    # transformers' masked path with left padding (the evaluation's layout): the pad rows'
    # attention is fully masked; outputs and gradients stay finite
    x = torch.randn(2, 12, cfg["hidden_size"], requires_grad=True)
    am = torch.ones(2, 12, dtype=torch.long)
    am[0, :7] = 0
    hl = m.model.language_model(inputs_embeds=x, attention_mask=am, position_ids=torch.arange(12).expand(3, 2, 12),
                                use_cache=False).last_hidden_state
    hl[0, 7:].sum().backward()
    assert torch.isfinite(hl).all() and torch.isfinite(x.grad).all(), "left padding: non-finite"
    m.zero_grad(set_to_none=True)
    opt = train.make_optimizer(m, 1e-3, 0.05, dev)
    guard = train.Guard(opt, dev)
    params = list(m.parameters())
    amp = __import__("contextlib").nullcontext
    lrs = {"vidi-shapes-draft": 1e-3}
    train.train_step({"vidi-shapes-draft": m}, {"vidi-shapes-draft": opt}, {"vidi-shapes-draft": guard},
                     {"vidi-shapes-draft": params}, b, lrs, 1.0, 1.0, amp)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    st_before = {k: (v["exp_avg"].clone(), v["step"].clone()) for k, v in
                 ((id(p), opt.state[p]) for p in params)}
    bad = dict(b)
    bad["pixel_values"] = b["pixel_values"].clone()
    bad["pixel_values"][0, 0] = float("nan")                 # a NaN pixel: NaN loss and gradients
    out = train.train_step({"vidi-shapes-draft": m}, {"vidi-shapes-draft": opt}, {"vidi-shapes-draft": guard},
                           {"vidi-shapes-draft": params}, bad, lrs, 1.0, 1.0, amp)
    assert not torch.isfinite(out["vidi-shapes-draft"][0])
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step changed the weights"
    for p in params:
        ea, stp = st_before[id(p)]
        assert torch.equal(opt.state[p]["exp_avg"], ea) and torch.equal(opt.state[p]["step"], stp)
    assert int(guard.total) == 1 and int(guard.run) == 1
    train.train_step({"vidi-shapes-draft": m}, {"vidi-shapes-draft": opt}, {"vidi-shapes-draft": guard},
                     {"vidi-shapes-draft": params}, b, lrs, 1.0, 1.0, amp)
    assert int(guard.run) == 0 and int(guard.total) == 1
    assert not all(torch.equal(before[k], v) for k, v in m.state_dict().items()), "no step after a skipped one"
    assert all(torch.isfinite(v).all() for v in m.state_dict().values())
    groups = sum(len(x["plan"]["groups"]) for x in batches.values())
    ok("nanguard", f"padded batch {tuple(batches['padded']['ids'].shape)} and {groups} "
       f"vision groups finite; a NaN step is skipped ({'fused AdamW found_inf' if guard.fused else 'host check'}) "
       f"and training goes on")


def check_aux(n=40):
    """aux.token_labels on clean renders (images and videos): labels agree with the pixels."""
    checked = 0
    for seed in range(n):
        kind = "video" if seed % 2 else "image"
        s = scn.make_scene(700_000 + seed, kind)
        frames = media.video_frames(s) if kind == "video" else media.image_frames(s)
        t, _, rh, rw = frames.shape
        lab = aux.token_labels(s, (rh, rw), s["sample_idx"])
        gt, gh, gw = media.grid_of(frames)
        assert lab.shape == (gt * (gh // 2) * (gw // 2), 3), (lab.shape, (gt, gh, gw))
        bg = np.asarray(s["background"], np.int64)
        blocks = frames[0::2].permute(0, 2, 3, 1).numpy().astype(np.int64)     # (pairs, rh, rw, 3)
        blocks = blocks.reshape(len(blocks), rh // 28, 28, rw // 28, 28, 3).transpose(0, 1, 3, 2, 4, 5)
        blocks = blocks.reshape(-1, 28 * 28, 3)
        for row, px in zip(lab, blocks):
            shape_l, colour_l, motion_l = (int(v) for v in row)
            if shape_l == 0:
                # bicubic resize rings reach a pixel or two past an outline: allow small deviations
                far = np.abs(px - bg).max(1) > 40
                assert far.mean() < 0.05, (s["seed"], "background token with object pixels")
                assert motion_l == aux.IGNORE
            elif shape_l > 0:
                want = np.asarray(scn.COLOURS[scn.COLOUR_NAMES[colour_l - 1]], np.int64)
                d_want = np.abs(px - want).max(1)
                assert (d_want <= 40).mean() >= 0.5 * aux.MIN_COVER, (s["seed"], "object colour missing")
                assert (motion_l == aux.IGNORE) == (kind == "image")
                checked += 1
    ok("aux", f"{checked} labelled object tokens in {n} scenes agree with the rendered pixels")


def check_init_folder(tok):
    """export_folder (bf16) -> load_folder: the bf16-rounded weights, tied lm_head, same logits."""
    ids, cfg = _config(tok)
    torch.manual_seed(0)
    m = model_config.make_model(cfg)
    with tempfile.TemporaryDirectory() as td:
        model_config.export_folder(m, cfg, vocab.tokenizer_json(tok), ids, td)
        cfg2, tj, m2 = model_config.load_folder(td)
    assert cfg2 == json.loads(json.dumps(cfg)) and tj == vocab.tokenizer_json(tok)
    ref = heldout.bf16_copy(m)
    sd, sd2 = ref.state_dict(), m2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    ok("initfolder", f"export (bf16) -> load_folder gives the bf16-rounded weights ({len(sd)} tensors, lm_head tied)")


@torch.no_grad()
def check_grow(tok):
    """grow.py keeps the draft's outputs and lands on vidi-shapes' configuration."""
    import grow

    ids, cfg = _config(tok)
    torch.manual_seed(1)
    src = model_config.make_model(cfg)
    for k, v in src.state_dict().items():        # nothing left at its trivial init (norms 1, biases 0)
        if v.dim() == 1:
            v.add_(0.1 * torch.randn_like(v))
    t = model_config.SPECS["vidi-shapes"]["text"]
    dcfg = grow.grown_config(cfg, t["num_hidden_layers"], t["hidden_size"], t["num_attention_heads"],
                             t["num_key_value_heads"], t["intermediate_size"],
                             model_config.SPECS["vidi-shapes"]["vision"]["depth"])
    assert dcfg == _config(tok, "vidi-shapes")[1], "the grown config is not SPECS['vidi-shapes']"
    dst = grow.grow(src, cfg, dcfg, 7)
    diff, scale, same = grow.check(src, dst, dcfg, ids)
    assert diff < 5e-3 * max(1.0, scale) and same == 1.0, (diff, scale, same)   # RMSNorm eps: not exact
    ok("grow", f"draft -> vidi-shapes config: logits differ by {diff:.1e} (largest {scale:.1f}), same argmax")


def check_resume(repo):
    """Train 6 steps in one run and 3 + 3 steps in two runs (--resume): same weights."""
    import shutil

    common = ["--device", "cpu", "--batch-size", "2", "--workers", "1", "--eval-scenes", "0",
              "--total-steps", "40", "--warmup", "2", "--log-every", "100"]
    py = sys.executable
    script = os.path.join(repo, "tools", "train", "train.py")
    with tempfile.TemporaryDirectory() as td:
        a, b = os.path.join(td, "a"), os.path.join(td, "b")
        for args in ([a, "--steps", "6"], [b, "--steps", "3"], [b, "--steps", "3", "--resume"]):
            subprocess.run([py, script, "--out", args[0]] + args[1:] + common, check=True, capture_output=True)
        ca = torch.load(os.path.join(a, "ckpt", "last.pt"), weights_only=False)
        cb = torch.load(os.path.join(b, "ckpt", "last.pt"), weights_only=False)
        assert ca["step"] == cb["step"] == 6 and ca["next_batch"] == cb["next_batch"]
        for n in ca["models"]:
            for k in ca["models"][n]:
                assert torch.equal(ca["models"][n][k], cb["models"][n][k]), (n, k)
        # export (needs an evaluation), then a fresh run from the exported models.tgz
        c, d = os.path.join(td, "c"), os.path.join(td, "d")
        ev = ["--eval-scenes", "2"]
        subprocess.run([py, script, "--out", c, "--steps", "2"] + common + ev, check=True, capture_output=True)
        tgz = os.path.join(c, "models.tgz")
        assert os.path.exists(tgz), "no models.tgz"
        r = subprocess.run([py, script, "--out", d, "--steps", "2", "--init-from", tgz] + common + ev, check=True,
                           capture_output=True, text=True)
        cc = torch.load(os.path.join(c, "ckpt", "last.pt"), weights_only=False)
        cd = torch.load(os.path.join(d, "ckpt", "last.pt"), weights_only=False)
        assert cd["next_batch"] == cc["next_batch"] + 2 and cd["step"] == cc["step"] + 2, (cc["step"], cd["step"])
        assert cd["tok_json"] == cc["tok_json"] and cd["init_from"]["step"] == cc["step"]
        assert cd["sched_start"] == cc["step"]
        assert all(torch.isfinite(v).all() for m in cd["models"].values() for v in m.values())
        assert "[init]" in r.stdout
        shutil.rmtree(td, ignore_errors=True)
    ok("resume", "6 steps == 3 steps + resume + 3 steps, every weight bit for bit; --init-from models.tgz "
       "continues the data stream with the exported tokenizer")


def check_files(files):
    """How far the training pixels are from what qwen-vl-utils reads back from the files."""
    import evaluate

    evaluate.install_reader()
    from qwen_vl_utils import process_vision_info

    with open(os.path.join(files, "manifest.json")) as f:
        man = json.load(f)
    for s in man["scenes"][:8]:
        sc = s["scene"]
        path = os.path.join(files, s["file"])
        if s["kind"] == "image":
            ele = {"type": "image", "image": path, "min_pixels": model_config.IMAGE_MIN_PIXELS,
                   "max_pixels": model_config.IMAGE_MAX_PIXELS}
            imgs, _ = process_vision_info([{"role": "user", "content": [ele]}])
            ref = torch.from_numpy(np.array(imgs[0])).permute(2, 0, 1)[None]
            mine = media.image_frames(sc)
        else:
            _, vids = process_vision_info([{"role": "user", "content": [{"type": "video", "video": path}]}])
            ref = vids[0].to(torch.uint8)
            mine = media.video_frames(sc)
        assert ref.shape == mine.shape, (s["file"], ref.shape, mine.shape)
        d = (ref.int() - mine.int()).abs().float()
        print(f"    {s['file']:16s} {tuple(ref.shape)} training pixels vs file: mean |d| {d.mean():.2f}, "
              f"max {d.max():.0f}, >16: {100 * (d > 16).float().mean():.2f}%")
    ok("files", "frame counts and sizes of the training path equal what is read from the files")


def check_engine(model_dir, files, vidi):
    import evaluate
    from tokenizers import Tokenizer
    from transformers import Qwen2VLForConditionalGeneration

    evaluate.install_reader()
    m = Qwen2VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    ids = vocab.special_ids(tok)
    pp, ip, vp = evaluate.processors(model_dir)
    with open(os.path.join(files, "manifest.json")) as f:
        man = json.load(f)
    worst = 0.0
    for s in man["scenes"][:4]:
        path = os.path.join(files, s["file"])
        q = s["questions"][0]["question"]
        pv, grid = evaluate.media_inputs(path, s["kind"], pp, ip, vp)
        p = evaluate.prompt_for(tok, ids, s["kind"], q, pv, grid)
        kw = {"pixel_values": pv, "image_grid_thw": torch.tensor([grid])} if s["kind"] == "image" else \
             {"pixel_values_videos": pv, "video_grid_thw": torch.tensor([grid])}
        with torch.no_grad():
            ref = m(input_ids=torch.tensor([p["ids"]]), position_ids=torch.from_numpy(p["pos"])[:, None],
                    **kw).logits[0, -1]
        with tempfile.TemporaryDirectory() as td:
            out = os.path.join(td, "logits.npy")
            subprocess.run([vidi, "generate", "--model", model_dir, f"--{s['kind']}", path, "--prompt", q,
                            "--max-tokens", "1", "--logits-out", out], check=True, capture_output=True)
            got = torch.from_numpy(np.load(out))
        d = float((got - ref[:got.shape[0]]).abs().max())
        worst = max(worst, d)
        print(f"    {s['file']:16s} grid {grid}: max |logit diff| {d:.3g} (logit range {float(ref.abs().max()):.2f})")
    assert worst < 1e-2, worst
    ok("engine", f"vidi generate's first-token logits match transformers (max {worst:.2g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an exported folder (tokenizer and engine checks)")
    ap.add_argument("--files", help="a folder written by tools/shapes/write_files.py")
    ap.add_argument("--vidi", help="path to the vidi binary (with --model and --files)")
    ap.add_argument("--resume-test", action="store_true", help="also the (slower) resume check")
    args = ap.parse_args()
    check_generator()
    check_rules()
    check_resize()
    check_patchify()
    check_positions()
    tok = vocab.build_tokenizer()
    check_template(tok)
    check_tokenizer(tok, args.model)
    check_greedy(tok)
    check_fast_vision(tok)
    check_train_step(tok)
    check_nan_guard(tok)
    check_aux()
    check_init_folder(tok)
    check_grow(tok)
    if args.resume_test:
        check_resume(REPO)
    if args.files:
        check_files(args.files)
    if args.model and args.files and args.vidi:
        check_engine(args.model, args.files, args.vidi)
    print("all checks passed")


if __name__ == "__main__":
    main()

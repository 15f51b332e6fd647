"""tools/train/heldout.py — exact-match accuracy on held-out scenes with greedy decoding.

    evaluate(model, items, text, device, autocast_dtype=None) -> results dict
        items: examples.heldout_items(...); the model answers every item's question with
        greedy decoding (greedy.py); an answer is right when it equals the ground truth
        string exactly (after stripping surrounding whitespace).
    results: {"overall": acc over question types (captions excluded), "n": questions,
              "per_type": {type: {"acc", "n"}}, "caption_exact": acc, "n_caption",
              "examples": a few (question, truth, answer) triples}
"""

import collections
import time

import torch

import examples
import greedy
import media


def _prompt(item, text, device):
    pv, grid = media.patchify(item["frames"].to(device))
    ids, pos, _ = examples.expand_prompt(text, item["kind"], item["question"], grid)
    return {"ids": ids, "pos": pos, "pixel_values": pv, "grid": grid, "kind": item["kind"]}


def answer_items(model, items, text, device, autocast_dtype=None, batch_size=48):
    """Greedy answers (strings) for items, in order."""
    order = sorted(range(len(items)), key=lambda i: (items[i]["type"] == "caption", items[i]["kind"],
                                                     tuple(items[i]["frames"].shape)))
    answers = [None] * len(items)
    k = 0
    while k < len(order):
        cap = items[order[k]]["type"] == "caption"
        chunk = [i for i in order[k:k + batch_size] if (items[i]["type"] == "caption") == cap]
        k += len(chunk)
        prompts = [_prompt(items[i], text, device) for i in chunk]
        outs = greedy.greedy(model, prompts, text.eos_ids, text.pad_id, max_new_tokens=96 if cap else 12,
                             autocast_dtype=autocast_dtype)
        for i, o in zip(chunk, outs):
            answers[i] = text.decode(o).strip()
    return answers


def evaluate(model, items, text, device, autocast_dtype=None, batch_size=48):
    was_training = model.training
    model.eval()
    t0 = time.time()
    answers = answer_items(model, items, text, device, autocast_dtype, batch_size)
    if was_training:
        model.train()
    per = collections.defaultdict(lambda: [0, 0])
    shown = []
    for it, a in zip(items, answers):
        ok = a == it["answer"]
        per[it["type"]][0] += ok
        per[it["type"]][1] += 1
        if not ok and len(shown) < 8:
            shown.append({"type": it["type"], "question": it["question"], "truth": it["answer"], "answer": a})
    qa = [t for t in per if t != "caption"]
    n = sum(per[t][1] for t in qa)
    right = sum(per[t][0] for t in qa)
    cap = per.get("caption", [0, 0])
    return {
        "overall": right / n if n else 0.0, "n": n,
        "per_type": {t: {"acc": per[t][0] / per[t][1], "n": per[t][1]} for t in sorted(qa)},
        "caption_exact": cap[0] / cap[1] if cap[1] else None, "n_caption": cap[1],
        "wrong_examples": shown, "seconds": round(time.time() - t0, 2),
    }


def summary(r):
    per = " ".join(f"{t}={v['acc']:.3f}" for t, v in r["per_type"].items())
    cap = f" caption={r['caption_exact']:.3f}" if r["caption_exact"] is not None else ""
    return f"held-out accuracy {r['overall']:.4f} (N={r['n']}) {per}{cap} [{r['seconds']}s]"


@torch.no_grad()
def bf16_copy(model):
    """A float32 copy whose weights are rounded to bf16: what the exported checkpoint holds."""
    import copy

    m = copy.deepcopy(model)
    for p in m.parameters():
        p.copy_(p.to(torch.bfloat16).float())
    return m.eval()

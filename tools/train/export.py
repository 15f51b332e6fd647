#!/usr/bin/env python3
"""tools/train/export.py — write models/vidi-shapes and models/vidi-shapes-draft from a
training checkpoint (train.py does this itself at the end of every run).

    python tools/train/export.py --ckpt /tmp/shapes-run/ckpt/last.pt --out /tmp/shapes-run/models \\
        [--eval-scenes 200] [--device cuda]

Each folder gets config.json, generation_config.json, tokenizer.json,
tokenizer_config.json, chat_template.json, preprocessor_config.json, model.safetensors
(bf16) and a README.md with the recipe, the seeds and the held-out accuracy of the
exported (bf16-rounded) weights, measured with float32 arithmetic.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import model_config  # noqa: E402


def readme_text(name, cfg, counts, nbytes, info, result):
    # the architecture as the folder's config.json has it (a grown model differs from SPECS)
    t = {"vision": cfg["vision_config"],
         "text": dict({k: cfg[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                            "num_key_value_heads", "intermediate_size")},
                      mrope_section=cfg["rope_scaling"]["mrope_section"])}
    other = "vidi-shapes-draft" if name == "vidi-shapes" else "vidi-shapes"
    role = ("the target model" if name == "vidi-shapes" else
            "the draft model for speculative decoding (same tokenizer as vidi-shapes)")
    per = "\n".join(f"| {k} | {v['acc']:.3f} | {v['n']} |" for k, v in result["per_type"].items())
    cap = ("" if result.get("caption_exact") is None else
           f"\nCaptions, exact match with the reference caption: {result['caption_exact']:.3f} "
           f"(N={result['n_caption']}).\n")
    a = info["args"]
    examples = info.get("examples") or info["step"] * (a.get("batch_size") or 0)
    batches = (f"batches of {a['batch_size']} examples of one kind" if a.get("batch_size") else
               f"batches of about {a.get('batch_tokens')} tokens of one kind (images, or videos of one length; "
               f"videos {a['p_video']} of the examples, frame counts 4-16 in the shares {a.get('nframes_p')})")
    types = a.get("type_weights") or "tools/train/examples.py TYPE_WEIGHTS"
    init = ""
    aux_line = ""
    if a.get("aux_weight"):
        aux_line = (f"; plus {a['aux_weight']} x the vision tower's dense auxiliary loss (per-token shape, "
                    f"colour and motion labels, tools/train/aux.py; its head is not exported)")
    if info.get("init_from"):
        init = (f" (the last run started from exported bf16 weights after step {info['init_from'].get('step')}, "
                f"fresh optimizer, warmup {a['warmup']} steps, new cosine)")
    s0 = info.get("sched_start") or 0
    sched = (f"{info['total_steps']} steps" if not s0 else
             f"{(info['total_steps'] or s0) - s0} steps from step {s0}")
    note = info.get("eval_note") or ("held-out scenes, alternating video / image, rendered without codec "
                                     "artefacts), exported bf16 weights in float32 arithmetic")
    return f"""# {name}

A tiny Qwen2-VL-architecture vision-language model trained on synthetic scenes of coloured
shapes (tools/shapes) to answer short questions and to caption; {role}. Its answers can be
checked against the scenes' ground truth. See {other} for the other model of the pair.

## Model

- Qwen2VLForConditionalGeneration, tied embeddings, bf16 safetensors ({nbytes / 1e6:.2f} MB)
- parameters: {counts['total']:,} (vision {counts['vision']:,}, text {counts['text']:,})
- vision: depth {t['vision']['depth']}, embed {t['vision']['embed_dim']}, {t['vision']['num_heads']} heads,
  mlp ratio {t['vision']['mlp_ratio']}, patch 14, merge 2, temporal patch 2
- text: {t['text']['num_hidden_layers']} layers, hidden {t['text']['hidden_size']},
  {t['text']['num_attention_heads']} heads, {t['text']['num_key_value_heads']} kv heads,
  intermediate {t['text']['intermediate_size']}, M-RoPE {t['text']['mrope_section']}, rope_theta {cfg['rope_theta']}
- tokenizer: byte-level BPE, {cfg['vocab_size']} embedding rows, Qwen special tokens (tools/train/vocab.py)
- images: min_pixels {model_config.IMAGE_MIN_PIXELS}, max_pixels {model_config.IMAGE_MAX_PIXELS}
  (32-144 merged tokens); videos: qwen-vl-utils defaults (2 fps, at least 128 merged tokens per
  pair of frames)

## Recipe

`python tools/train/train.py` (tools/train/train.py documents the command).
- data: scenes from tools/shapes, training seeds from {info['train_seed_base']:,} up (the
  held-out range, below {info['heldout_seed_limit']:,}, is never trained on); data seed {a['data_seed']};
  {batches}; captions with probability {a['p_caption']}, question types weighted by {types};
  codec-like augmentation {'on' if not a['no_augment'] else 'off'}
- loss on the answer tokens and `<|im_end|>`, averaged per example; M-RoPE positions by the
  original Qwen2-VL rule (tools/train/mrope.py){aux_line}
- AdamW (betas 0.9/0.95, weight decay {a['weight_decay']}), lr {info['lr'][name]}, warmup {a['warmup']} steps,
  cosine to {a['min_lr_ratio']} x lr over {sched}; grad clip {a['clip']};
  {'bf16 autocast' if info['device'] == 'cuda' else 'float32'} on {info['device_name']}; init seed {a['seed']}
- trained {info['step']} steps ({examples:,} examples) in
  {info['train_seconds'] / 60:.1f} min over {info['runs']} run(s){init}; transformers {info['transformers']},
  torch {info['torch']}

## Held-out accuracy

Greedy decoding, exact match, {result['n']} questions on {info['eval_scenes']} held-out scenes
(seeds {info['eval_seed_base']}..{info['eval_seed_base'] + info['eval_scenes'] - 1}; {note}:
**{result['overall']:.3f}**

| type | accuracy | N |
|---|---|---|
{per}
{cap}
Real files (mp4/webm/png/jpg written by tools/shapes/write_files.py) are measured by
tools/train/evaluate.py.
"""


def export_all(models, cfgs, tok_json, ids, out_root, info, results):
    sizes = {}
    for name, m in models.items():
        d = os.path.join(out_root, name)
        counts = model_config.param_counts(m)
        # README written after the size is known: write the weights first
        nbytes = model_config.export_folder(m, cfgs[name], tok_json, ids, d)
        with open(os.path.join(d, "README.md"), "w", encoding="utf-8") as f:
            f.write(readme_text(name, cfgs[name], counts, nbytes, info, results[name]))
        with open(os.path.join(out_root, f"heldout_{name}.json"), "w", encoding="utf-8") as f:
            json.dump(results[name], f, indent=1)
            f.write("\n")
        sizes[name] = nbytes
    return sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True, help="folder that receives vidi-shapes/ and vidi-shapes-draft/")
    ap.add_argument("--eval-scenes", type=int, default=None, help="default: the training run's")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    import train  # noqa: E402  (shares the setup code)

    train.export_from_checkpoint(args.ckpt, args.out, args.device, args.eval_scenes)


if __name__ == "__main__":
    main()

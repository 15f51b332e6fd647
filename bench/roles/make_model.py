"""bench/roles/make_model.py — a random-weight model with Qwen2-VL-2B-Instruct's shapes (vision
tower and language model: bench/gpu/make_models.py's qwen2vl-2b-shape) and vidi-shapes' tokenizer,
vocabulary, special tokens, chat template and image processor, for the role-switching benchmark on
the GPU host (bench/roles/switch.sh MODEL=...): its stages cost what a 2B model's cost on the GPU,
and it runs with the bundled examples. Random weights answer until max_tokens (EOS is one token of
640), so the benchmark's loadgen sets each phase's answer length. Never committed (4.3 GB).

    python3 bench/roles/make_model.py --out /tmp/vidi-bench-models   # -> <out>/shapes-2b
"""
import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "gpu"))
import make_models  # noqa: E402

SOURCE = os.path.join(ROOT, "models", "vidi-shapes")
KEEP = ("tokenizer.json", "tokenizer_config.json", "chat_template.json", "preprocessor_config.json",
        "generation_config.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/vidi-bench-models")
    a = ap.parse_args()
    src = json.load(open(os.path.join(SOURCE, "config.json")))
    cfg = dict(make_models.MODELS["qwen2vl-2b-shape"])
    for k in ("bos_token_id", "eos_token_id", "vision_start_token_id", "vision_end_token_id", "vision_token_id",
              "image_token_id", "video_token_id", "vocab_size"):
        cfg[k] = src[k]
    make_models.MODELS["shapes-2b"] = cfg
    _, d, _, _ = make_models.build("shapes-2b", a.out)
    for f in KEEP:
        shutil.copy(os.path.join(SOURCE, f), os.path.join(d, f))
    print(d)


if __name__ == "__main__":
    main()

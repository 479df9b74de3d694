"""The `llm` router's int8 variants: val accuracy and agreement with float32, one question at a time.

    .venv/bin/python -m benchmarks.router_int8 [--train 200]

Each variant quantizes a fresh copy of the installed router (models/router-llm) with
router.quantize.quantize_int8 and routes the val split question by question, as
`python -m eval routing --split val --backends llm` does. Agreement is the share of questions whose
label matches the float32 router's, on val and on the first `--train` train questions (a steadier
signal than val accuracy alone, which moves by a point per 2 questions). Timing: benchmarks/router.py.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=200, help="train questions for the agreement column")
    args = parser.parse_args()

    import torch

    from core.categories import load_categories
    from core.settings import from_env
    from router.llm import LabelScorer, load_adapted_model
    from router.meta import read_meta
    from router.quantize import quantize_int8

    torch.set_num_threads(1)
    settings = from_env()
    labels = load_categories(settings.categories_file)
    meta = read_meta(settings.router_model_dir)
    if meta.get("mode") == "classify":
        raise SystemExit(
            f"{settings.router_model_dir} is a classification-head router: these variants are the label scorer's "
            "— point HOUSECHAT_ROUTER_MODEL_DIR at a label-scoring (`mode: score`) adapter"
        )
    model, tokenizer = load_adapted_model(settings.router_model_dir, meta["base_model"], settings.var_dir)

    def read(split: str, n: int | None = None) -> list[dict[str, str]]:
        lines = (settings.routing_data_dir / f"{split}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines[:n]]

    val, train = read("val"), read("train", args.train)
    gold = [labels.ids.index(e["category"]) for e in val]

    def predict(scorer: LabelScorer, examples: list[dict[str, str]]) -> list[int]:
        return [int(scorer.log_scores([e["question"]]).argmax()) for e in examples]

    n_channels = model.config.intermediate_size
    variants = [
        ("float32 (label rows)", None),
        ("int8 every linear layer, int8 prefix", {"outliers": 0, "float_prefix": False}),
        ("int8 every linear layer, float32 prefix", {"outliers": 0}),
        ("int8, down projections float32, float32 prefix", {"outliers": n_channels}),
        ("int8, down projections split (64 outlier channels float32)", {"outliers": 64}),
        ("int8, down projections split (16 outlier channels float32) — default", {}),
    ]
    reference: tuple[list[int], list[int]] | None = None
    print(f"{len(val)} val questions, {len(train)} train questions for agreement, 1 torch thread")
    print(f"{'variant':<70}{'val acc':>9}{'agree val':>11}{'agree train':>13}")
    for name, options in variants:
        scorer = LabelScorer(copy.deepcopy(model), tokenizer, labels, meta["label_format"])
        if options is not None:
            quantize_int8(scorer, **options)
        on_val, on_train = predict(scorer, val), predict(scorer, train)
        reference = reference or (on_val, on_train)
        acc = sum(p == g for p, g in zip(on_val, gold, strict=True)) / len(gold)
        agree_val = sum(a == b for a, b in zip(on_val, reference[0], strict=True)) / len(val)
        agree_train = sum(a == b for a, b in zip(on_train, reference[1], strict=True)) / max(len(train), 1)
        print(f"{name:<70}{acc:>9.1%}{agree_val:>11.1%}{agree_train:>13.1%}", flush=True)


if __name__ == "__main__":
    main()

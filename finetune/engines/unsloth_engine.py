"""Unsloth QLoRA on CUDA: loads the base in 4 bit, adds LoRA, then trains like the trl engine.

Only importable with the `gpu` extra on a CUDA machine (unsloth pins older transformers/trl).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.engines import trl_engine
from finetune.recipe import Recipe


def train(
    recipe: Recipe, rows: list[dict[str, str]], validate: trl_engine.ValFn, save_best: trl_engine.SaveFn, out_dir: Path
) -> tuple[dict[str, Any], Any, Any]:
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        recipe.base_model, max_seq_length=256, load_in_4bit=recipe.load_in_4bit
    )
    targets = recipe.target_modules
    if targets == "all-linear":
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = FastLanguageModel.get_peft_model(
        model, r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout, target_modules=targets
    )
    history = trl_engine.train(recipe, model, tokenizer, rows, validate, save_best, out_dir, use_peft=False)
    return history, model, tokenizer

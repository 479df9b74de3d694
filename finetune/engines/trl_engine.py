"""TRL SFTTrainer + PEFT LoRA: the engine that runs on this CPU (and on a GPU).

Prompt–completion examples, so the loss is on the label tokens only. A callback scores the
validation split with the shared `LabelScorer`, saves the best adapter, and stops early.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune.recipe import Recipe

ValFn = Callable[[Any], tuple[float, Any]]  # model -> (val accuracy, val probabilities)
SaveFn = Callable[[Any, dict[str, Any]], None]  # (model, history) -> None: persist a new best


def lora_config(
    recipe: Recipe,
    trainable_rows: dict[str, list[int]] | None = None,
    task_type: str = "CAUSAL_LM",
    model: Any = None,
) -> Any:
    """LoRA on the recipe's targets; `trainable_rows` ({embedding module: token ids}) train with it.

    With `task_type="SEQ_CLS"`, PEFT keeps the classification head (`score`) out of the LoRA
    targets and trains and saves it whole (`modules_to_save`). With `recipe.lora_layers`, only the
    top ones of `model`'s decoder layers get LoRA (PEFT then needs the module names, not all-linear).
    """
    from peft import LoraConfig

    targets, layers = recipe.target_modules, None
    if recipe.lora_layers and model is not None:
        n_layers = model.config.num_hidden_layers
        layers = list(range(max(n_layers - recipe.lora_layers, 0), n_layers))
        if targets == "all-linear":
            import torch

            decoder_layer = model.get_decoder().layers[0]
            targets = sorted(
                {n.rsplit(".", 1)[-1] for n, m in decoder_layer.named_modules() if isinstance(m, torch.nn.Linear)}
            )

    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=targets,
        trainable_token_indices=trainable_rows or None,
        layers_to_transform=layers,
        task_type=task_type,
    )


def train(
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    validate: ValFn,
    save_best: SaveFn,
    out_dir: Path,
    use_peft: bool = True,
    trainable_rows: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Train; each new best model by val accuracy goes to `save_best`. Returns the history."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    steps_per_epoch = math.ceil(len(rows) / (recipe.batch_size * recipe.grad_accum))
    total_steps = recipe.max_steps if recipe.max_steps > 0 else math.ceil(steps_per_epoch * recipe.epochs)
    eval_every = max(1, min(total_steps, steps_per_epoch // max(recipe.evals_per_epoch, 1)))
    history: dict[str, Any] = {"evals": [], "best_val_accuracy": -1.0, "best_step": 0, "best_probs": None}
    start = time.perf_counter()

    callback = keep_best_callback(recipe, validate, save_best, history, eval_every, start)

    config = SFTConfig(
        **_training_args(recipe, out_dir, total_steps, cuda),
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),  # SFTConfig's bf16 default is wrong on CPU
        fp16=False,
        completion_only_loss=True,
        max_length=recipe.max_length,
        dataloader_num_workers=0,
        gradient_checkpointing=False,  # TRL turns it on by default: recomputation only costs time at this size
    )
    trainer_class = SFTTrainer
    if trainable_rows:
        # TRL's fused LM-head loss multiplies by `lm_head.weight` directly, which skips PEFT's trained
        # token rows (and fails on their wrapper). The model's own forward applies them.
        from transformers import Trainer

        class PlainLossSFTTrainer(SFTTrainer):  # type: ignore[misc]
            def compute_loss(
                self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
            ) -> Any:
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

        trainer_class = PlainLossSFTTrainer
    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(recipe, trainable_rows, model=model) if use_peft else None,
        callbacks=[callback],
    )
    return _train(trainer, history, start, total_steps)


def keep_best_callback(
    recipe: Recipe, validate: ValFn, save_best: SaveFn, history: dict[str, Any], eval_every: int, start: float
) -> Any:
    """A Trainer callback: validate every `eval_every` steps, save each new best, stop early."""
    from transformers import TrainerCallback

    class ValidateAndKeepBest(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.bad_evals = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step % eval_every and state.global_step < state.max_steps:
                return control
            trained = kwargs["model"]
            trained.eval()
            accuracy, probs = validate(trained)
            trained.train()
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
            history["evals"].append({"step": state.global_step, "val_accuracy": accuracy, "loss": loss})
            print(f"step {state.global_step}/{state.max_steps}: val accuracy {accuracy:.3f}", flush=True)
            if accuracy > history["best_val_accuracy"]:
                history.update(best_val_accuracy=accuracy, best_step=state.global_step, best_probs=probs)
                history.update(steps=state.global_step, train_seconds=round(time.perf_counter() - start, 1))
                # A complete, loadable artifact after every new best: a killed run still leaves one.
                save_best(trained, history)
                self.bad_evals = 0
            else:
                self.bad_evals += 1
                if recipe.early_stopping_patience and self.bad_evals >= recipe.early_stopping_patience:
                    print("early stopping: val accuracy stopped improving", flush=True)
                    control.should_training_stop = True
            return control

    return ValidateAndKeepBest()


def train_classifier(
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    examples: list[tuple[str, int]],
    validate: ValFn,
    save_best: SaveFn,
    out_dir: Path,
) -> dict[str, Any]:
    """LoRA on the body + the linear head, cross-entropy over the labels (`mode: classify`).

    `model` is a sequence-classification model; `examples` are (text, label index). Batches are
    grouped by length, so the notes' long paragraphs do not pad the short questions.
    """
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    cuda = torch.cuda.is_available()
    steps_per_epoch = math.ceil(len(examples) / (recipe.batch_size * recipe.grad_accum))
    total_steps = recipe.max_steps if recipe.max_steps > 0 else math.ceil(steps_per_epoch * recipe.epochs)
    eval_every = max(1, min(total_steps, steps_per_epoch // max(recipe.evals_per_epoch, 1)))
    history: dict[str, Any] = {"evals": [], "best_val_accuracy": -1.0, "best_step": 0, "best_probs": None}
    encoded = tokenizer([text for text, _ in examples], truncation=True, max_length=recipe.max_length)
    dataset = Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": [label for _, label in examples],
        }
    )
    peft_model = get_peft_model(model, lora_config(recipe, task_type="SEQ_CLS", model=model))
    start = time.perf_counter()
    callback = keep_best_callback(recipe, validate, save_best, history, eval_every, start)
    config = TrainingArguments(
        **_training_args(recipe, out_dir, total_steps, cuda),
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        fp16=False,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length",
    )
    trainer = Trainer(
        model=peft_model,
        args=config,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[callback],
    )
    return _train(trainer, history, start, total_steps)


def _training_args(recipe: Recipe, out_dir: Path, total_steps: int, cuda: bool) -> dict[str, Any]:
    """The arguments both trainers share: steps, schedule, logging, seed, device (no checkpoints, no eval)."""
    return dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(recipe.warmup_ratio * total_steps)),
        weight_decay=recipe.weight_decay,
        logging_steps=max(1, min(10, total_steps // 20)),
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=recipe.seed,
        use_cpu=not cuda,
    )


def _train(trainer: Any, history: dict[str, Any], start: float, total_steps: int) -> dict[str, Any]:
    """Run `trainer` and add its time, log and step counts to `history`."""
    trainer.train()
    history["train_seconds"] = round(time.perf_counter() - start, 1)
    history["log"] = trainer.state.log_history
    history["steps"] = trainer.state.global_step
    history["total_steps_planned"] = total_steps
    return history

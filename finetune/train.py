"""`train(recipe)`: data → prompt–completion rows → engine → best adapter + meta.json + curve.

The test split is never read here: validation picks the best checkpoint and tunes the filter
policy's thresholds; the test split is only for `python -m eval routing`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core import prompt
from core.categories import LabelSet, load_categories
from core.errors import HousechatError
from core.models import GEMMA3, SMOLLM2, TINY_QWEN3, file_hash, load_causal_lm, resolve_base
from core.schemas import RoutingExample
from core.settings import Settings
from finetune.data import training_data_hash
from finetune.hints import FOLDS
from finetune.recipe import Recipe
from router.base import route_from_scores
from router.meta import label_meta, read_meta, write_meta
from router.policy import tune


@dataclass
class TrainingData:
    labels: LabelSet
    train: list[RoutingExample]
    val: list[RoutingExample]
    data_hash: str
    source: str
    # Examples a store-reading head trains on without store context: a note's paragraph would find
    # its own note at the top of the search, and the head would learn to copy the top chunk's category.
    bare: frozenset[str] = frozenset()


def load_training_data(recipe: Recipe, settings: Settings) -> TrainingData:
    """Train and val examples (never test), the label set, and a hash of the files used.

    The household's splits, or `train_file`/`val_file` (any labelled files) under the categories
    file's labels or, with `labels_from_data`, their own (codes assigned among the base
    tokenizer's single tokens). Household questions labelled with a category the file no longer
    holds are left out and counted on stderr.
    """
    from finetune.data import labelled_files

    routing = settings.routing_data_dir
    train_path = Path(recipe.train_file) if recipe.train_file else routing / "train.jsonl"
    val_path = Path(recipe.val_file) if recipe.val_file else routing / "val.jsonl"
    bare: frozenset[str] = frozenset()
    if recipe.train_file:
        if not recipe.val_file:
            raise HousechatError("--train-file needs --val-file (the best step is picked on it) — add one")
        categories = None if recipe.labels_from_data else load_categories(settings.categories_file)
        codes = recipe.label_format == "codes" and recipe.mode == "score"  # a head needs no tokens for its labels
        usable = single_token_for(recipe.base_model, settings.var_dir) if codes else None
        labels, train, val = labelled_files(train_path, val_path, categories, usable)
        digest, source = training_data_hash(train_path, val_path), f"{train_path} + {val_path}"
    else:
        if recipe.val_file or recipe.labels_from_data:
            raise HousechatError("--val-file and --labels-from-data go with --train-file — give the training file")
        labels, train, val, digest, source, bare = household_training_data(recipe, settings)
    rng = random.Random(recipe.seed)
    if recipe.max_train_examples:
        train = rng.sample(train, min(recipe.max_train_examples, len(train)))
    if recipe.max_val_examples:
        val = rng.sample(val, min(recipe.max_val_examples, len(val)))
    return TrainingData(labels, train, val, digest, source, bare)


def household_training_data(
    recipe: Recipe, settings: Settings
) -> tuple[LabelSet, list[RoutingExample], list[RoutingExample], str, str, frozenset[str]]:
    """The household's train and val questions, plus (as the recipe asks) the extra questions and the
    notes' paragraphs, gathered as `python -m finetune embedding` gathers them; labels, hash, source,
    and the paragraphs' texts (`TrainingData.bare`)."""
    from finetune.data import Dropped, household_data, note_examples

    dropped = Dropped()
    data = household_data(settings, dropped, extra=recipe.extra_questions)
    train, digest, bare = data.train + data.extra, data.data_hash, frozenset[str]()
    routing = settings.routing_data_dir
    source = f"{routing / 'train.jsonl'} + {routing / 'val.jsonl'}"
    if data.extra:
        source += f" + {len(data.extra)} from {routing / 'extra'}"
    if recipe.notes:
        notes, notes_hash = note_examples(settings.notes_dir, data.labels, dropped)
        train += notes
        bare = frozenset(e.question for e in notes)
        digest = f"{digest}+notes:{notes_hash}"
        source += f" + {len(notes)} note paragraphs from {settings.notes_dir}"
    if dropped.counts:
        print(dropped.message(data.labels), file=sys.stderr)
    return data.labels, train, data.val, digest, source, bare


def single_token_for(base: str, var_dir: Path) -> Callable[[str], bool]:
    """Is a code one token for this base model's tokenizer (so the router reads it from one logit)?"""
    from transformers import AutoTokenizer

    from core.models import offline_env

    if base.startswith(("embedded:", "tiny:")) or Path(base).exists():
        offline_env()
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(base, var_dir))
    return lambda code: len(tokenizer.encode(code, add_special_tokens=False)) == 1


def rows_for(
    examples: list[RoutingExample], tokenizer: Any, labels: LabelSet, label_format: str
) -> list[dict[str, str]]:
    """Prompt–completion rows, formatted by the same prompt builder inference uses."""
    label_of = dict(zip(labels.ids, labels.labels(label_format), strict=True))
    return [
        {
            "prompt": prompt.prompt_text(tokenizer, e.question, labels, label_format),
            "completion": prompt.completion_text(label_of[e.category], tokenizer),
        }
        for e in examples
    ]


def code_rows(recipe: Recipe, model: Any, tokenizer: Any, labels: LabelSet) -> dict[str, list[int]] | None:
    """The code tokens' output-embedding rows to train, as PEFT's `trainable_token_indices`.

    With `from_names`, each code's row first becomes the mean row of its category name's tokens
    (rescaled to the codes' mean norm), so training starts from the names' prior instead of 20
    meaningless tokens. The adapter stores the trained rows; the base on disk is never changed.
    """
    if recipe.code_rows == "frozen":
        return None
    import torch

    ids = []
    for code in labels.labels("codes"):
        tokens = tokenizer.encode(code, add_special_tokens=False)
        if len(tokens) != 1:
            raise HousechatError(f"code {code!r} is {len(tokens)} tokens for this base — pick single-token codes")
        ids.append(tokens[0])
    output = model.get_output_embeddings()
    tied = output.weight is model.get_input_embeddings().weight
    module = model.get_input_embeddings() if tied else output  # PEFT follows a tied lm_head by itself
    name = next(n for n, m in model.named_modules() if m is module).rsplit(".", 1)[-1]
    if recipe.code_rows == "from_names":
        weight = output.weight
        with torch.no_grad():
            norm = weight[ids].norm(dim=1).mean()
            for token, label in zip(ids, labels.labels("names"), strict=True):
                name_ids = tokenizer.encode(" ".join(label.split("_")), add_special_tokens=False)
                row = weight[name_ids].mean(dim=0)
                weight[token] = row / row.norm() * norm
    return {name: ids}


def plan(recipe: Recipe, data: TrainingData) -> dict[str, Any]:
    steps_per_epoch = math.ceil(len(data.train) / (recipe.batch_size * recipe.grad_accum))
    steps = recipe.max_steps if recipe.max_steps > 0 else math.ceil(steps_per_epoch * recipe.epochs)
    return {
        "train_examples": len(data.train),
        "val_examples": len(data.val),
        "labels": len(data.labels),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps,
        "data_hash": data.data_hash,
        "data": data.source,
    }


def base_hash(base: str, var_dir: Path) -> str:
    """A hash of the base weights, so an adapter is never applied to other weights unnoticed."""
    if base == SMOLLM2:
        from core.models import smollm2_gguf_path

        return file_hash(smollm2_gguf_path())
    if base == GEMMA3:
        from core.models import gemma3_sha256

        return gemma3_sha256()[:16]  # the package pins its GGUF's sha256; same prefix as file_hash
    folder = Path(resolve_base(base, var_dir)) if base == TINY_QWEN3 else Path(base)
    weights = folder / "model.safetensors"
    return file_hash(weights) if weights.exists() else f"hub:{base}"


def train(recipe: Recipe, settings: Settings) -> dict[str, Any]:
    """Run a recipe end to end and return the meta.json it wrote."""
    from finetune.engines import pick

    data = load_training_data(recipe, settings)
    out_dir = recipe.out_dir(settings.runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = pick(recipe.engine)
    if recipe.mode == "classify" and engine != "trl":
        raise HousechatError("mode classify needs the trl engine — set `engine: trl` in the recipe")
    val_questions = [e.question for e in data.val]
    val_gold = [data.labels.ids.index(e.category) for e in data.val]

    def validate(model: Any) -> tuple[float, Any]:
        scorer = make_scorer(model)
        probs = []
        for i in range(0, len(val_questions), 32):
            probs.extend(scorer.probabilities(val_questions[i : i + 32]))
        hits = sum(int(p.argmax() == g) for p, g in zip(probs, val_gold, strict=True))
        return hits / max(len(val_gold), 1), probs

    context = hint = None
    hints: dict[str, str] = {}
    if recipe.store_context or recipe.router_hint:
        from core.store import open_store

        store = open_store(settings, create=False)
    if recipe.store_context:
        from router.llm import StoreContext

        context = StoreContext(lambda: store, recipe.store_context, titles=recipe.store_context_titles)
        print(f"the head reads the top {recipe.store_context} chunks of {store.location}", file=sys.stderr)
    if recipe.router_hint:
        from finetune.hints import out_of_fold_hints
        from router.registry import router_hint

        # Val (and routing later) reads the household's embedding router; training, out-of-fold guesses.
        hint = router_hint(settings, data.labels)
        hints = out_of_fold_hints([e for e in data.train if e.question not in data.bare], data.labels, settings, store)
        print(f"the head reads the guesses of {settings.embedding_router_dir}", file=sys.stderr)

    def make_scorer(model: Any) -> Any:
        from router.llm import ClassifierScorer, LabelScorer

        if recipe.mode == "classify":
            return ClassifierScorer(model, tokenizer, data.labels, context=context, hint=hint)
        # The whole-vocabulary projection: while training, the code rows live in the adapter's wrapper.
        return LabelScorer(model, tokenizer, data.labels, recipe.label_format, label_rows=False)

    print(f"training {recipe.name} with the {engine} engine: {json.dumps(plan(recipe, data))}", file=sys.stderr)
    if recipe.threads:
        import torch

        torch.set_num_threads(recipe.threads)
    if engine == "unsloth" and recipe.code_rows != "frozen":
        raise HousechatError(f"code_rows {recipe.code_rows!r} needs the trl engine — set `engine: trl` in the recipe")
    if engine == "unsloth":
        from transformers import AutoTokenizer

        from finetune.engines import unsloth_engine

        tokenizer = AutoTokenizer.from_pretrained(recipe.base_model)
    elif recipe.mode == "classify":
        from transformers import set_seed

        from core.models import load_sequence_classifier
        from finetune.engines import trl_engine

        set_seed(recipe.seed)  # the head's initial weights
        model, tokenizer = load_sequence_classifier(recipe.base_model, settings.var_dir, len(data.labels))
    else:
        from finetune.engines import trl_engine

        model, tokenizer = load_causal_lm(recipe.base_model, settings.var_dir, cache=False)
    base = base_hash(recipe.base_model, settings.var_dir)

    def save_best(trained: Any, history: dict[str, Any]) -> None:
        write_artifact(recipe, data, history, engine, out_dir / "adapter", trained, tokenizer, base)

    if engine == "unsloth":
        rows = rows_for(data.train, tokenizer, data.labels, recipe.label_format)
        history, _, _ = unsloth_engine.train(recipe, rows, validate, save_best, out_dir)
    elif recipe.mode == "classify":
        examples = classify_rows(data.train, data.labels, context, data.bare, hints)
        history = trl_engine.train_classifier(recipe, model, tokenizer, examples, validate, save_best, out_dir)
    else:
        rows = rows_for(data.train, tokenizer, data.labels, recipe.label_format)
        trainable_rows = code_rows(recipe, model, tokenizer, data.labels)
        history = trl_engine.train(
            recipe,
            model,
            tokenizer,
            rows,
            validate,
            save_best,
            out_dir,
            use_peft=not recipe.full_finetune,
            trainable_rows=trainable_rows,
        )
    log_path = out_dir / "train_log.jsonl"
    log_path.write_text("".join(json.dumps(h) + "\n" for h in history["log"] + history["evals"]))
    plot_curve(history, out_dir / "curve.png", recipe.name)
    return read_meta(out_dir / "adapter")


def classify_rows(
    examples: list[RoutingExample],
    labels: LabelSet,
    context: Callable[[list[str]], list[str]] | None = None,
    bare: frozenset[str] = frozenset(),
    hints: dict[str, str] | None = None,
) -> list[tuple[str, int]]:
    """(the head's input text, the label's index) per example: the text inference reads too.

    With a `context`, each example reads its store context, except the texts in `bare` (the notes'
    paragraphs), which read none. `hints`: the embedding router's guesses per question (out of fold)."""
    from router.llm import classify_text

    questions = [e.question for e in examples]
    contexts = [""] * len(questions)
    if context is not None:
        asked = [q for q in questions if q not in bare]
        found = dict(
            zip(asked, (c for i in range(0, len(asked), 256) for c in context(asked[i : i + 256])), strict=True)
        )
        contexts = [found.get(q, "") for q in questions]
    hints = hints or {}
    return [
        (classify_text(q, c, hints.get(q, "")), labels.ids.index(e.category))
        for q, c, e in zip(questions, contexts, examples, strict=True)
    ]


def write_artifact(
    recipe: Recipe,
    data: TrainingData,
    history: dict[str, Any],
    engine: str,
    adapter_dir: Path,
    model: Any,
    tokenizer: Any,
    base: str,
) -> dict[str, Any]:
    """Save the model, its tokenizer and meta.json (thresholds tuned on val, metrics, provenance)."""
    codes = {c.id: c.code for c in data.labels.categories}
    routes = [
        route_from_scores(dict(zip(data.labels.ids, map(float, p), strict=True)), codes, "llm", 0.0)
        for p in history["best_probs"]
    ]
    policy, utility = tune(routes, [e.category for e in data.val])
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    meta = {
        "kind": "llm",
        "base_model": recipe.base_model,
        "base_hash": base,
        "label_format": recipe.label_format,
        "mode": recipe.mode,
        "store_context": recipe.store_context,  # > 0: routing reads the top chunks of the store (router.llm)
        "store_context_titles": recipe.store_context_titles,
        # routing reads the guesses of the household's embedding router (router.llm.RouterHint)
        "router_hint": {"folds": FOLDS} if recipe.router_hint else None,
        "adapter": "full" if recipe.full_finetune else "lora",
        **label_meta(data.labels),
        "data_hash": data.data_hash,
        "thresholds": policy.to_json(),
        "metrics": {
            "val_accuracy": round(history["best_val_accuracy"], 4),
            "val_policy_utility": round(utility, 4),
            "best_step": history["best_step"],
            "train_seconds_to_best": history["train_seconds"],
            "n_train": len(data.train),
            "n_val": len(data.val),
        },
        "engine": engine,
        "recipe": dataclasses.asdict(recipe),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_meta(adapter_dir, meta)
    return meta


def plot_curve(history: dict[str, Any], path: Path, title: str) -> None:
    """Training loss and validation accuracy against the step, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [(h["step"], h["loss"]) for h in history["log"] if "loss" in h]
    evals = [(e["step"], e["val_accuracy"]) for e in history["evals"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if losses:
        ax.plot(*zip(*losses, strict=True), color="tab:blue", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    ax2 = ax.twinx()
    if evals:
        ax2.plot(*zip(*evals, strict=True), "o-", color="tab:orange", label="val accuracy")
    ax2.set_ylabel("val accuracy", color="tab:orange")
    ax2.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def home_relative(settings: Settings, path: Path) -> str:
    """`path` relative to the checkout when it lies inside it (a committed meta names no one's machine)."""
    try:
        return str(Path(path).resolve().relative_to(Path(settings.home).resolve()))
    except ValueError:
        return str(path)


def served_logits_and_hits(router: Any, questions: list[str], store: Any) -> tuple[Any, list[list[Any]]]:
    """An llm router's log-probabilities, one question at a time as the app routes (an int8 batch would
    differ slightly), and each question's top chunks of an unfiltered search, deep enough for any vote shape."""
    import numpy as np

    from core.models import embed
    from router.embedding import VOTE_SHAPES, store_hits

    ids = router.scorer.labels.ids
    probs = np.array([[router.route(q).scores[c] for c in ids] for q in questions])
    hits = store_hits(store, embed(questions), max(k for k, _ in VOTE_SHAPES))
    return np.log(np.clip(probs, 1e-12, None)), hits


def fit_store_vote(model_dir: Path, settings: Settings) -> dict[str, Any]:
    """Pick on val the store vote a store-reading classification head mixes in; write it to its meta.

    The head routes each val question as the app does (one at a time, int8 unless turned off), its
    logits are mixed with the vote of the same unfiltered search in log space (`pick_vote`: shape and
    weight on val, weight 0 when no mix beats the head), and the thresholds are tuned again on the mix.
    """
    import numpy as np
    from scipy.special import softmax

    from core.schemas import read_routing_examples
    from router.embedding import pick_vote, vote_from_hits
    from router.llm import StoreVote
    from router.registry import load_router

    meta = read_meta(model_dir)
    if not meta.get("store_context"):
        raise HousechatError(
            f"{model_dir}: this router does not read the store — train a recipe with `store_context` "
            "(e.g. gemma3-270m-classify-context.yaml) first"
        )
    loaded = load_router("llm", replace(settings, router_model_dir=Path(model_dir)), fallback=False)
    scorer = loaded.router.scorer
    context = scorer.context
    if context.hits(["store check"]) is None:
        raise HousechatError(f"no ingested store at {settings.store} — ingest the notes or give --store")
    context.vote = None  # the head alone (a vote fit before is replaced)
    labels = scorer.labels
    val_file = Path(meta.get("recipe", {}).get("val_file") or settings.routing_data_dir / "val.jsonl")
    val, errors = read_routing_examples(val_file, set(labels.ids))
    if errors or not val:
        raise HousechatError(f"{val_file}: {len(errors)} bad lines, {len(val)} questions — fix the file")
    questions = [e.question for e in val]
    gold = np.array([labels.ids.index(e.category) for e in val])
    head, hits = served_logits_and_hits(loaded.router, questions, context.store)
    accuracy, weight, k, power = pick_vote(head, hits, labels, gold)
    context.vote = StoreVote(weight, k, power)
    mixed = head + weight * np.log(vote_from_hits(hits, labels, k, power))
    codes = {c.id: c.code for c in labels.categories}
    routes = [
        route_from_scores(dict(zip(labels.ids, map(float, p), strict=True)), codes, "llm", 0.0)
        for p in softmax(mixed, axis=1)
    ]
    policy, utility = tune(routes, [e.category for e in val])
    meta["store_vote"] = dataclasses.asdict(context.vote)
    meta["thresholds"] = policy.to_json()
    meta["metrics"].update(
        val_accuracy_head_as_served=round(float((head.argmax(1) == gold).mean()), 4),
        val_accuracy_with_vote=round(accuracy, 4),
        val_policy_utility=round(utility, 4),
    )
    meta["store_vote_fit_on"] = {
        "store": home_relative(settings, Path(context.store.location)),
        "val_file": home_relative(settings, val_file),
    }
    write_meta(model_dir, meta)
    return meta


def install(adapter_dir: Path, target: Path) -> Path:
    """Copy a run's adapter to the router model dir, weights as fp16 (a few MB, committed as the default)."""
    import shutil

    from safetensors.torch import load_file, save_file

    read_meta(adapter_dir)  # refuse a folder that is not a finished artifact
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # The tokenizer comes from the base model at load time; only our own trained weights are kept.
    shutil.copytree(adapter_dir, tmp, ignore=shutil.ignore_patterns("README.md", "tokenizer*", "chat_template.jinja"))
    weights = tmp / "adapter_model.safetensors"
    if weights.exists():
        save_file({k: v.half().contiguous() for k, v in load_file(weights).items()}, weights)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target

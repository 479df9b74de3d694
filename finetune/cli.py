"""`python -m finetune`: build/check the routing data, train a recipe, export a run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.categories import load_categories
from core.cli import positive_int, run
from core.errors import HousechatError
from core.settings import Settings, from_env
from finetune.encoder import DEFAULT_LR, LOSSES, PAIR_ITERATIONS

if TYPE_CHECKING:
    from core.categories import LabelSet
    from core.schemas import RoutingExample
    from finetune.data import Dropped


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m finetune",
        description="Fine-tune the router. `python -m finetune RECIPE.yaml` is short for `train RECIPE.yaml`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="check the routing splits (counts per category and split, data hash)")
    data.add_argument("--build", action="store_true", help="first rebuild the splits from data/routing/pool/")
    data.add_argument("--json", action="store_true", help="print the counts as JSON on stdout")
    data.add_argument("--data-dir", type=Path, default=None, help="routing data folder (default data/routing)")

    train = sub.add_parser("train", help="train a recipe (YAML): LoRA fine-tune of the router")
    train.add_argument("recipe", help="recipe file, or a name from finetune/recipes/ (e.g. smollm2-135m-codes)")
    train.add_argument(
        "--dry-run", action="store_true", help="print the resolved config, data stats, steps; write nothing"
    )
    train.add_argument(
        "--train-file",
        help="train on this labelled file instead of data/routing (JSONL question,category or CSV text,category)",
    )
    train.add_argument("--val-file", help="the validation file that goes with --train-file (same formats)")
    train.add_argument(
        "--labels-from-data",
        action="store_true",
        help="with --train-file: the label set is the files' own category names (codes assigned, single tokens "
        "for the base), not the categories file",
    )
    train.add_argument(
        "--output-dir", help="where the run goes (default runs/<recipe name>); the adapter lands in DIR/adapter"
    )
    train.add_argument(
        "--install",
        action="store_true",
        help="copy the best adapter to the router model dir (the household's llm router; not with --labels-from-data)",
    )
    train.add_argument(
        "--store",
        type=Path,
        default=None,
        help="with `store_context` in the recipe: the store it reads (default var/store)",
    )
    train.add_argument("--chroma-url", default=None, help="read a Chroma server's store instead")
    train.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a loaded 2-core machine)")

    emb = sub.add_parser(
        "embedding",
        description="Fit the embedding router on the routing questions (train + extra, tuned on val) and the "
        "notes' paragraphs, or on --train-file/--val-file. Household questions and notes filed under a category "
        "the categories file no longer holds are left out and counted per label.",
        help="fit the embedding router (MiniLM + char n-grams, logistic regression) on train + the notes, tune on val",
    )
    emb.add_argument(
        "--output-dir", type=Path, default=None, help="default: the embedding router dir (required with --train-file)"
    )
    emb.add_argument(
        "--train-file",
        type=Path,
        help="train on this labelled file instead of data/routing (JSONL question,category or CSV text,category)",
    )
    emb.add_argument("--val-file", type=Path, help="the validation file that goes with --train-file (same formats)")
    emb.add_argument(
        "--labels-from-data",
        action="store_true",
        help="with --train-file: the label set is the files' own category names (codes assigned), "
        "not the categories file",
    )
    emb.add_argument(
        "--no-notes",
        action="store_true",
        help="train on the routing questions only (default: the house notes' paragraphs join train)",
    )
    emb.add_argument(
        "--no-vote",
        action="store_true",
        help="head only (default: mix in the store vote, its weight picked on val; needs an ingested store)",
    )
    emb.add_argument(
        "--word-ngrams",
        action="store_true",
        help="also try word uni/bi-gram TF-IDF features beside the char n-grams (weight picked on val, 0 allowed)",
    )
    emb.add_argument(
        "--label-names",
        action="store_true",
        help="each category's name (and scope, when the categories file gives one) joins train as one example",
    )
    emb.add_argument(
        "--refit-on-val",
        action="store_true",
        help="after every choice is picked on val, refit the head on train + val (more data for the saved head; "
        "the reported val accuracy stays the pre-refit one)",
    )
    emb.add_argument(
        "--fine-tune-epochs",
        type=float,
        default=0.0,
        help="first fine-tune MiniLM itself on train for this many epochs (objective: --fine-tune-loss; saved in "
        "OUTPUT_DIR/encoder), then fit the head on its vectors; needs --no-vote. Default 0: frozen MiniLM",
    )
    emb.add_argument(
        "--fine-tune-loss",
        choices=LOSSES,
        default="softmax",
        help="the encoder's objective with --fine-tune-epochs: softmax (a softmax head over the labels, "
        "cross-entropy; default), pairs (SetFit: R positive + R negative pairs per question, cosine -> 1/0, an "
        "epoch is one pass over the pairs) or supcon (supervised contrastive, 4 questions per label in a batch)",
    )
    emb.add_argument(
        "--fine-tune-pair-iterations",
        type=positive_int,
        default=PAIR_ITERATIONS,
        metavar="R",
        help="with --fine-tune-loss pairs: R, the positive and negative pairs drawn per question (SetFit's 20)",
    )
    emb.add_argument(
        "--fine-tune-lr",
        type=float,
        default=None,
        help="the encoder's learning rate with --fine-tune-epochs (default per loss: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        + ")",
    )
    emb.add_argument("--store", type=Path, default=None, help="the store to vote with (default var/store)")
    emb.add_argument("--chroma-url", default=None, help="vote with a Chroma server's store instead")

    cats = sub.add_parser(
        "categories",
        description="Give every category without a code one (opaque, unique, a single token for the SmolLM2 and "
        "Qwen3 tokenizers, and Gemma 3's when installed; existing codes never change), rewrite the file keeping its comments, print the diff, "
        "then list the routers on disk trained on other categories with the command that refits each.",
        help="assign codes to new categories in the categories file (opaque, unique, single tokens), show the diff "
        "and list the routers trained on other categories with their refit commands",
    )
    cats.add_argument(
        "--file", type=Path, help="categories file (default data/categories.yaml, env HOUSECHAT_CATEGORIES_FILE)"
    )
    cats.add_argument("--dry-run", action="store_true", help="show the diff; write nothing")

    vote = sub.add_parser(
        "store-vote",
        description="For a classification head trained with `store_context`: pick on val (the recipe's val file) "
        "how much of the store vote (the categories of the top chunks of an unfiltered search, as the embedding "
        "router's) to mix into its logits, re-tune its thresholds, and write both into its meta.json. "
        "Weight 0 when no mix beats the head alone.",
        help="fit the store vote a store-reading llm router mixes in (weight on val)",
    )
    vote.add_argument("model", type=Path, help="the router folder: RUN/adapter, or the installed models/router-llm")
    vote.add_argument("--store", type=Path, default=None, help="the household's ingested store (default var/store)")
    vote.add_argument("--chroma-url", default=None, help="a Chroma server's store instead")
    vote.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a loaded 2-core machine)")

    inst = sub.add_parser("install", help="make a run's best adapter the router model (fp16 weights)")
    inst.add_argument("run", type=Path, help="a run folder (runs/<recipe>)")

    ens = sub.add_parser("ensemble", help="tune the llm+embedding mix weight and thresholds on val")
    ens.add_argument("--output-dir", type=Path, default=None, help="default: models/router-ensemble")

    exp = sub.add_parser("export", help="merge a run's adapter; write GGUF and an Ollama Modelfile")
    exp.add_argument("run", type=Path, help="a run folder (runs/<recipe>) or a model dir with meta.json")
    exp.add_argument("--gguf", action="store_true", help="write router.gguf (F32)")
    exp.add_argument("--ollama", action="store_true", help="write router.gguf and a Modelfile for `ollama create`")
    exp.add_argument("--output-dir", type=Path, help="default: RUN/export")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv.insert(0, "train")  # `python -m finetune RECIPE.yaml` is `train RECIPE.yaml`
    return run(make_parser(), lambda args: COMMANDS[args.command](args), argv)


def run_data(args: argparse.Namespace) -> int:
    from finetune.data import build_splits, check_splits, format_report

    settings = from_env()
    labels = load_categories(settings.categories_file)
    data_dir = args.data_dir or settings.routing_data_dir
    if args.build:
        built = build_splits(data_dir / "pool", data_dir, labels)
        for error in built.errors:
            print(error, file=sys.stderr)
    report = check_splits(data_dir, labels, [settings.qa_file])
    for error in report.errors:
        print(error, file=sys.stderr)
    if args.json:
        counts = {s: dict(c) for s, c in report.counts.items()}
        print(json.dumps({"counts": counts, "boundary": report.boundary, "data_hash": report.data_hash}))
    else:
        print(format_report(report, labels))
    if report.errors:
        print(f"{len(report.errors)} problem(s) — fix them and run again", file=sys.stderr)
        return 1
    return 0


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from finetune.recipe import load_recipe
    from finetune.train import load_training_data, plan

    settings = from_env(store=args.store, chroma_url=args.chroma_url)
    if args.install and args.labels_from_data:
        raise HousechatError(
            "--install makes the adapter the household's llm router, which must use the categories file — "
            "drop --install and score the run with `python -m eval routing --test-file F --backends llm "
            "--model OUTPUT_DIR/adapter`"
        )
    recipe = load_recipe(
        Path(args.recipe),
        train_file=args.train_file,
        val_file=args.val_file,
        labels_from_data=args.labels_from_data or None,
        output_dir=args.output_dir,
        threads=args.threads,
    )
    if args.dry_run:
        data = load_training_data(recipe, settings)
        print(json.dumps({"recipe": dataclasses.asdict(recipe), "plan": plan(recipe, data)}, indent=2))
        return 0
    from finetune.train import train

    meta = train(recipe, settings)
    out = recipe.out_dir(settings.runs_dir) / "adapter"
    print(
        f"best val accuracy {meta['metrics']['val_accuracy']:.3f} at step {meta['metrics']['best_step']}; adapter in {out}"
    )
    if args.install:
        from finetune.train import install

        print(f"installed as the router model in {install(out, settings.router_model_dir)}")
    return 0


def run_embedding(args: argparse.Namespace) -> int:
    from finetune.data import Dropped, label_examples, note_examples
    from router.embedding import WORD_WEIGHTS, fit

    settings = from_env()
    dropped = Dropped()
    if args.train_file:
        labels, train, val, data_hash, embedder, provenance = _external_data(args, settings)
        extra: list[RoutingExample] = []
        out = args.output_dir
    else:
        if args.val_file or args.labels_from_data:
            raise HousechatError("--val-file and --labels-from-data go with --train-file — give the training file")
        labels, train, val, extra, data_hash = _household_data(settings, dropped)
        embedder, provenance = None, {}
        out = args.output_dir or settings.embedding_router_dir
    notes: list[RoutingExample] = []
    if not args.no_notes:
        notes, notes_hash = note_examples(settings.notes_dir, labels, dropped)
        data_hash = f"{data_hash}+notes:{notes_hash}"
        print(f"{len(notes)} note paragraphs from {settings.notes_dir} join the {len(train)} training questions")
    if args.label_names:
        named = label_examples(labels)
        extra = extra + named  # with the questions: an adapted head keeps them when it refits on a store
        data_hash = f"{data_hash}+label-names"
        provenance = {**provenance, "label_names": len(named)}
        print(f"{len(named)} category names join train (--label-names)")
    if dropped.counts:
        print(dropped.message(labels), file=sys.stderr)
    if args.fine_tune_epochs and not args.no_vote:
        raise HousechatError(
            "--fine-tune-epochs needs --no-vote: the store vote searches with the stock MiniLM's vectors"
        )
    store = None
    if not args.no_vote:
        from core.store import open_store

        store = open_store(from_env(store=args.store, chroma_url=args.chroma_url), create=False)
        print(f"store vote tuned on val with the store at {store.location}")
    encoder = None
    if args.fine_tune_epochs:
        embedder, encoder = _fine_tuned_embedder(args, settings, train + extra + notes, labels, Path(out))
    more = {"embedder": embedder} if embedder else {}
    meta = fit(
        train + extra,
        val,
        labels,
        out,
        data_hash,
        extra=notes,
        store=store,
        provenance=provenance,
        word_weights=WORD_WEIGHTS if args.word_ngrams else (0.0,),
        refit_on_val=args.refit_on_val,
        encoder=encoder,
        **more,
    )
    print(
        f"embedding router: {len(labels)} categories, val accuracy {meta['metrics']['val_accuracy']:.3f}, "
        f"thresholds {meta['thresholds']}; saved to {out}"
    )
    return 0


def _fine_tuned_embedder(
    args: argparse.Namespace, settings: Settings, train: list[RoutingExample], labels: LabelSet, out: Path
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune MiniLM on `train` into OUT/encoder; a cached embedder for it and its meta entry.

    The vectors are cached per encoder (keyed by its weights' hash), never mixed with MiniLM's.
    """
    from functools import partial

    from core.models import embed_cached, file_hash
    from finetune.encoder import ENCODER_DIR, fine_tune_encoder

    folder = out / ENCODER_DIR
    print(
        f"fine-tuning MiniLM ({args.fine_tune_loss} loss) on {len(train)} examples for "
        f"{args.fine_tune_epochs:g} epochs into {folder}"
    )
    info = fine_tune_encoder(
        train,
        labels,
        folder,
        epochs=args.fine_tune_epochs,
        lr=args.fine_tune_lr,
        loss=args.fine_tune_loss,
        pair_iterations=args.fine_tune_pair_iterations,
    )
    digest = file_hash(folder / "model.safetensors")[:16]
    cache = settings.var_dir / "embed-cache" / f"encoder-{digest}.npz"
    return partial(embed_cached, cache_file=cache, encoder=folder), {"dir": ENCODER_DIR, "sha256": digest, **info}


def _household_data(
    settings: Settings, dropped: Dropped
) -> tuple[LabelSet, list[RoutingExample], list[RoutingExample], list, str]:
    """The household's routing splits (train + val + extra) and their hash (`finetune.data.household_data`)."""
    from finetune.data import household_data

    data = household_data(settings, dropped)
    if data.extra:
        print(f"{len(data.extra)} extra training questions from {settings.routing_data_dir / 'extra'} join train")
    return data.labels, data.train, data.val, data.extra, data.data_hash


def _external_data(args: argparse.Namespace, settings: Settings) -> tuple[Any, ...]:
    """Labels, train, val, hash, a cached embedder and provenance for `--train-file/--val-file`.

    The label set is the categories file's, or with `--labels-from-data` the files' own names
    (codes assigned by `label_set_from_ids`), so any intent data set trains a router.
    """
    from functools import partial

    from core.models import embed_cached
    from finetune.data import labelled_files, training_data_hash

    if not args.val_file:
        raise HousechatError("--train-file needs --val-file (thresholds and weights are picked on it) — add one")
    if not args.output_dir:
        raise HousechatError(
            "--train-file needs --output-dir, so the household's own router is not overwritten — add one"
        )
    categories = None if args.labels_from_data else load_categories(settings.categories_file)
    labels, train, val = labelled_files(args.train_file, args.val_file, categories)
    embedder = partial(embed_cached, cache_file=settings.var_dir / "embed-cache" / "minilm.npz")
    provenance = {
        "train_file": str(args.train_file),
        "val_file": str(args.val_file),
        "labels_from": "data" if args.labels_from_data else str(settings.categories_file),
    }
    return labels, train, val, training_data_hash(args.train_file, args.val_file), embedder, provenance


def run_categories(args: argparse.Namespace) -> int:
    import difflib

    from core.categories import assign_codes
    from core.models import single_token_check

    settings = from_env()
    path = args.file or settings.categories_file
    text, assigned = assign_codes(path, single_token_check(settings.var_dir))
    if not assigned:
        labels = load_categories(path)
        print(f"{path}: every category has a code ({len(labels)} categories); nothing to do")
        _print_stale_routers(settings, labels)
        return 0
    old = Path(path).read_text(encoding="utf-8")
    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(path), str(path)))
    if args.dry_run:
        print(f"(dry run) would assign {assigned}", file=sys.stderr)
        return 0
    tmp = Path(path).with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    load_categories(tmp)  # the rewritten file must validate before it replaces the old one
    tmp.replace(path)
    print(f"assigned {', '.join(f'{i}={c}' for i, c in assigned.items())} in {path}", file=sys.stderr)
    _print_stale_routers(settings, load_categories(path))
    return 0


def _print_stale_routers(settings: Settings, labels: LabelSet) -> None:
    """Say which router artifacts were trained on other categories than `labels`, and how to refit each."""
    from router.meta import MAKE_OLLAMA, stale_routers

    if Path(settings.categories_file).resolve() != Path(labels.source).resolve():
        return  # another file than the one the routers are checked against
    stale = stale_routers(settings, labels)
    if not stale:
        return
    lines = [f"  {name} ({folder}): {make}" for name, (folder, make) in stale.items()]
    print(
        "routers trained on other categories refuse to load until refit, in this order:\n"
        + "\n".join(lines)
        + f"\n  ollama (if you serve one): {MAKE_OLLAMA}, then `ollama create`",
        file=sys.stderr,
    )


def run_store_vote(args: argparse.Namespace) -> int:
    from finetune.train import fit_store_vote

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    meta = fit_store_vote(args.model, from_env(store=args.store, chroma_url=args.chroma_url))
    m = meta["metrics"]
    print(
        f"store vote {meta['store_vote']}: val {m['val_accuracy_with_vote']:.3f} "
        f"(head alone {m['val_accuracy_head_as_served']:.3f}); thresholds {meta['thresholds']}; written to "
        f"{Path(args.model) / 'meta.json'}"
    )
    return 0


def run_install(args: argparse.Namespace) -> int:
    from finetune.train import install

    settings = from_env()
    target = install(args.run / "adapter", settings.router_model_dir)
    print(f"installed {args.run / 'adapter'} as the router model in {target}")
    return 0


def run_ensemble(args: argparse.Namespace) -> int:
    from finetune.data import Dropped, read_split
    from finetune.train import home_relative
    from router.ensemble import fit_weight
    from router.registry import load_router

    settings = from_env()
    labels = load_categories(settings.categories_file)
    dropped = Dropped()
    val = read_split(settings.routing_data_dir / "val.jsonl", labels, dropped, "val")
    if dropped.counts:
        print(dropped.message(labels), file=sys.stderr)
    questions = [e.question for e in val]
    llm = load_router("llm", settings, labels, fallback=False).router.route_batch(questions)
    embedding = load_router("embedding", settings, labels, fallback=False).router.route_batch(questions)
    out = args.output_dir or settings.ensemble_router_dir
    sources = {name: home_relative(settings, path) for name, path in
               (("llm", settings.router_model_dir), ("embedding", settings.embedding_router_dir))}  # fmt: skip
    meta = fit_weight(llm, embedding, [e.category for e in val], labels, out, sources)
    print(
        f"ensemble: weight_llm {meta['weight_llm']}, val accuracy {meta['metrics']['val_accuracy']:.3f}; saved to {out}"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from finetune.export import export

    settings = from_env()
    written = export(args.run, settings, args.output_dir, want_gguf=args.gguf, want_ollama=args.ollama)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    if "modelfile" in written:
        folder = written["modelfile"].parent
        print(f"then: cd {folder} && ollama create {settings.ollama_router_model} -f Modelfile")
        print("and route through it with HOUSECHAT_ROUTER_BACKEND=ollama")
    return 0


COMMANDS = {
    "data": run_data,
    "train": run_train,
    "embedding": run_embedding,
    "ensemble": run_ensemble,
    "categories": run_categories,
    "install": run_install,
    "store-vote": run_store_vote,
    "export": run_export,
}

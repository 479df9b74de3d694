"""`python -m eval routing|answers`: measure the router, and answer quality with the router off vs on."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from core.cli import count, positive_int, run
from core.errors import HousechatError
from core.settings import FILTER_MODES, from_env
from router.registry import BACKENDS, parse_backends


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description="Evaluate routing and answers.")
    sub = parser.add_subparsers(dest="command", required=True)

    routing = sub.add_parser("routing", help="routing accuracy, macro-F1, calibration, latency per backend")
    routing.add_argument(
        "--backends",
        type=parse_backends,
        default="llm,embedding,zero-shot",
        help=f"comma-separated, from: {', '.join(BACKENDS)} (default llm,embedding,zero-shot)",
    )
    routing.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="data/routing split to score"
    )
    routing.add_argument(
        "--test-file", type=Path, help="any labelled file: JSONL question,category or CSV text,category"
    )
    routing.add_argument(
        "--model", type=Path, help="llm router folder (adapter + meta.json); default the installed one"
    )
    routing.add_argument(
        "--embedding-dir",
        type=Path,
        help="embedding router folder (head + meta.json); default the household's (models/router-embedding)",
    )
    routing.add_argument("--limit", type=count, default=0, help="score only the first N questions (quick runs)")
    routing.add_argument("--report", type=Path, default=None, help="report root folder (default reports/)")
    routing.add_argument("--json", action="store_true", help="print the summary JSON on stdout (not the table)")
    routing.add_argument(
        "--store", type=Path, help="the store the embedding router votes with and adapts to (env HOUSECHAT_STORE)"
    )
    routing.add_argument("--chroma-url", help="a Chroma server's store instead (env HOUSECHAT_CHROMA_URL)")
    routing.add_argument("--summary", type=Path, metavar="PATH", help="also write the summary JSON to this file")
    routing.add_argument("--min-accuracy", type=float, help="exit 1 when any backend scores below this (0..1)")

    answers = sub.add_parser("answers", help="retrieval and answer quality with the router off vs on")
    answers.add_argument("--arms", default="off,on", help="comma-separated: off, on")
    answers.add_argument(
        "--answerer",
        default="auto",
        choices=["auto", "extractive", "smollm2", "ollama", "none"],
        help="auto (default) = what the app uses: Ollama when it has the model, else extractive; "
        "extractive = the notes' own sentences; smollm2 = the small generative model; ollama = the answer "
        "model; none = retrieval only (fast)",
    )
    answers.add_argument(
        "--backend",
        choices=list(BACKENDS),
        metavar="NAME",
        help=f"router backend for the `on` arm: {', '.join(BACKENDS)} (default: settings, embedding)",
    )
    _add_retrieval_flags(answers)
    answers.add_argument("--k", type=positive_int, default=5, help="chunks retrieved per question")
    answers.add_argument("--qa-file", type=Path, help="QA JSONL (default data/eval/qa.jsonl)")
    answers.add_argument(
        "--split",
        default="test",
        choices=["test", "dev", "all"],
        help="which half of the QA set (default test; tune on dev; a file without splits is used whole)",
    )
    answers.add_argument("--limit", type=count, default=0, help="only the first N questions (quick runs)")
    answers.add_argument("--store", type=Path, help="embedded Chroma folder (env HOUSECHAT_STORE)")
    answers.add_argument("--chroma-url", help="a Chroma server instead (env HOUSECHAT_CHROMA_URL)")
    answers.add_argument("--report", type=Path, default=None, help="report root folder (default reports/)")
    answers.add_argument("--json", action="store_true", help="print the summary JSON on stdout (not the table)")
    answers.add_argument("--summary", type=Path, metavar="PATH", help="also write the summary JSON to this file")
    answers.add_argument(
        "--records",
        type=Path,
        metavar="PATH",
        help="also write one JSON line per question and arm (route, sources, answer, grounding) to this file",
    )

    filtering = sub.add_parser(
        "filtering", help="choose the filter mode per confidence band and the hybrid switch on the QA dev split"
    )
    filtering.add_argument(
        "--backend", choices=list(BACKENDS), metavar="NAME", help="router backend (default: settings, embedding)"
    )
    filtering.add_argument("--k", type=positive_int, default=5, help="chunks retrieved per question")
    filtering.add_argument("--qa-file", type=Path, help="QA JSONL (default data/eval/qa.jsonl)")
    filtering.add_argument("--store", type=Path, help="embedded Chroma folder (env HOUSECHAT_STORE)")
    filtering.add_argument("--chroma-url", help="a Chroma server instead (env HOUSECHAT_CHROMA_URL)")
    filtering.add_argument(
        "--boost", type=float, help="the soft filter's bonus for a category at probability 1 (default router.policy)"
    )
    filtering.add_argument(
        "--lift-open",
        type=int,
        help="the lift filter's first unfiltered notes that keep their places (default router.policy.LIFT_OPEN_NOTES)",
    )
    filtering.add_argument(
        "--household",
        nargs=2,
        action="append",
        default=[],
        type=Path,
        metavar=("STORE", "QA_FILE"),
        help="also pool another household's dev half: its embedded store and its QA file with a dev split "
        "(the router adapts to that store); repeat for several",
    )
    filtering.add_argument("--out", type=Path, metavar="PATH", help="also write the Markdown table here")

    tune = sub.add_parser(
        "tune-extractive", help="pick the extractive answerer's weights and refusal threshold on the QA dev half"
    )
    tune.add_argument("--qa-file", type=Path, help="QA JSONL with a dev split (default data/eval/qa.jsonl)")
    tune.add_argument("--store", type=Path, help="embedded Chroma folder (env HOUSECHAT_STORE)")
    tune.add_argument(
        "--extra-file",
        type=Path,
        action="append",
        help="dev-only supplement of questions, used for fitting only; repeat for several (default every "
        "qa-dev-extra*.jsonl beside the QA file; each is checked against the test half for near-duplicates)",
    )
    tune.add_argument(
        "--min-coverage",
        type=float,
        default=0.80,
        help="the refusal threshold refuses the most unanswerable dev questions while dev keyword coverage "
        "stays at or above this (default 0.80)",
    )

    split = sub.add_parser("split-qa", help="recompute the QA set's dev/test split (stratified, seed 13)")
    split.add_argument("--qa-file", type=Path, help="QA JSONL (default data/eval/qa.jsonl)")
    split.add_argument("--write", action="store_true", help="store the split as each line's `split` field")
    return parser


def _add_retrieval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--filter-mode",
        choices=list(FILTER_MODES),
        help="how the `on` arm uses the route: auto (per band, chosen on dev), hard, soft, lift, none "
        "(default: settings, env HOUSECHAT_FILTER_MODE)",
    )
    parser.add_argument(
        "--hybrid",
        choices=["on", "off"],
        help="BM25 hybrid retrieval in every arm (default: settings, HOUSECHAT_HYBRID)",
    )


def _hybrid(args: argparse.Namespace) -> bool | None:
    return None if args.hybrid is None else args.hybrid == "on"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m eval " + " ".join(shlex.quote(a) for a in argv)
    return run(make_parser(), lambda args: COMMANDS[args.command](args, command), argv)


def run_routing(args: argparse.Namespace, command: str) -> int:
    from core.categories import load_categories
    from core.schemas import read_routing_examples
    from eval import report
    from eval.metrics import confusion, reliability
    from eval.routing import markdown, run_backend, split_known
    from router.meta import labels_from_meta, read_meta

    settings = from_env(
        router_model_dir=args.model,
        embedding_router_dir=args.embedding_dir,
        store=args.store,
        chroma_url=args.chroma_url,
    )
    backends = args.backends
    trained = args.model or args.embedding_dir  # a router folder given with a file: its own label set
    if args.test_file and trained:
        labels = labels_from_meta(read_meta(trained), str(trained))
    else:
        labels = load_categories(settings.categories_file)
    path = args.test_file or settings.routing_data_dir / f"{args.split}.jsonl"
    examples, errors = read_routing_examples(path)
    for error in errors:
        print(error, file=sys.stderr)
    if errors and not examples:
        return 1
    examples, unknown = split_known(examples, labels)
    if not examples:
        source = f"{trained}/meta.json" if args.test_file and trained else str(settings.categories_file)
        raise HousechatError(
            f"{path}: 0 usable questions ({len(errors)} invalid lines, {sum(unknown.values())} with a label "
            f"outside the {len(labels.ids)} categories) — label them with the category ids in {source}"
        )
    if args.limit:
        examples = examples[: args.limit]
    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    misrouted: dict[str, list[dict[str, Any]]] = {}
    curves = {}
    folder = report.new_report_dir(args.report or settings.reports_dir, "routing")
    for name in backends:
        try:
            result = run_backend(name, settings, labels, examples)
        except HousechatError as exc:
            skipped[name] = str(exc)
            print(f"{name}: skipped — {exc}", file=sys.stderr)
            continue
        results[name] = result.summary(labels)
        misrouted[name] = result.misrouted()
        correct = [p == g for p, g in zip(result.predicted, result.gold, strict=True)]
        curves[name] = reliability([r.confidence for r in result.routes], correct)
        report.plot_confusion(
            confusion(result.gold, result.predicted, labels.ids),
            labels.ids,
            f"{name} on {path.name}",
            folder / f"confusion-{name}.png",
        )
        print(f"{name}: accuracy {results[name]['accuracy']:.3f} on {len(examples)}", file=sys.stderr)
    report.plot_reliability(curves, folder / "reliability.png")
    summary = {"dataset": str(path), "n": len(examples), "backends": results}
    full = {
        **summary,
        "skipped": skipped,
        "unknown_labels": unknown,
        "misrouted": misrouted,
        "reliability": curves,
        "command": command,
        "invalid_lines": [str(e) for e in errors],
    }
    report.write_json(folder / "report.json", full)
    (folder / "report.md").write_text(markdown(str(path), len(examples), results, skipped, unknown, misrouted, command))
    _print_summary(args, folder, summary, (folder / "report.md").read_text().split("\n## ")[0])
    if args.min_accuracy is not None:
        low = {n: r["accuracy"] for n, r in results.items() if r["accuracy"] < args.min_accuracy}
        if low or not results:
            print(f"below --min-accuracy {args.min_accuracy}: {low or 'no backend ran'}", file=sys.stderr)
            return 1
    return 0


def run_answers(args: argparse.Namespace, command: str) -> int:
    from core.categories import load_categories
    from core.schemas import read_qa
    from eval import report
    from eval.answers import compare, markdown, run_arms

    settings = from_env(
        store=args.store, chroma_url=args.chroma_url, filter_mode=args.filter_mode, hybrid=_hybrid(args)
    )
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ("off", "on") for a in arms):
        raise HousechatError(f"--arms takes off and/or on, not {args.arms!r}")
    labels = load_categories(settings.categories_file)
    path = args.qa_file or settings.qa_file
    items, errors = read_qa(path, known=set(labels.ids))
    for error in errors:
        print(error, file=sys.stderr)
    if not items:
        raise HousechatError(f"{path}: no usable QA items — fix the lines above")
    if args.split != "all" and any(item.split for item in items):
        items = [item for item in items if item.split == args.split]
    if args.limit:
        items = items[: args.limit]
    backend = args.backend or settings.router_backend
    results = run_arms(settings, items, arms, args.answerer, args.k, backend)
    summaries = {arm: r.summary() for arm, r in results.items()}
    difference = compare(results["off"], results["on"]) if {"off", "on"} <= set(results) else {}
    summary = {
        "n": len(items),
        "split": args.split,
        "arms": {arm: {k: v for k, v in s.items() if k != "latency_ms"} for arm, s in summaries.items()},
        "difference": {k: v for k, v in difference.items() if k in ("hit_at_3", "keyword_coverage")},
    }
    folder = report.new_report_dir(args.report or settings.reports_dir, "answers")
    report.write_json(
        folder / "report.json",
        {
            **summary,
            "latency_ms": {a: s["latency_ms"] for a, s in summaries.items()},
            "comparison": difference,
            "command": command,
            "split": args.split,
            "records": "records.jsonl",
        },
    )
    records = [r.record(arm) for arm, result in results.items() for r in result.items]
    report.write_jsonl(folder / "records.jsonl", records)
    if args.records:
        report.write_jsonl(args.records, records)
    answered_by = sorted({r["answerer"] for r in records if "answerer" in r}) or ["none"]
    text = markdown(len(items), summaries, difference, command, backend, ", ".join(answered_by))
    (folder / "report.md").write_text(text)
    bars = {f"hit@{k}": {a: s["hit_at_k"][str(k)] for a, s in summaries.items()} for k in (1, 3, 5)}
    bars["MRR"] = {a: s["mrr"] for a, s in summaries.items()}
    bars["category precision"] = {a: s["category_precision"] for a, s in summaries.items()}
    report.plot_bars(bars, "Retrieval, router off vs on", "score", folder / "retrieval.png")
    _print_summary(args, folder, summary, text.split("\n| category |")[0])
    return 1 if errors else 0


def _print_summary(args: argparse.Namespace, folder: Path, summary: dict[str, Any], table: str) -> None:
    """The summary on stdout (JSON with --json, else the report's head) and in --summary's file."""
    from eval import report

    if args.summary:
        report.write_json(args.summary, summary)
    print(f"report: {folder}/report.md", file=sys.stderr)
    print(json.dumps(summary, ensure_ascii=False) if args.json else table)


def run_split_qa(args: argparse.Namespace, command: str) -> int:
    from eval.qa_split import split_file

    path = args.qa_file or from_env().qa_file
    for name, n in split_file(path, write=args.write).items():
        print(f"{name:<20} {n}")
    if args.write:
        print(f"wrote the split into {path}", file=sys.stderr)
    return 0


def run_filtering(args: argparse.Namespace, command: str) -> int:
    from core.categories import load_categories
    from core.schemas import read_qa
    from eval.filtering import choose, markdown, run_trials

    settings = from_env(store=args.store, chroma_url=args.chroma_url)
    labels = load_categories(settings.categories_file)
    backend = args.backend or settings.router_backend
    households = [(settings, args.qa_file or settings.qa_file)]
    households += [(from_env(store=store), qa_file) for store, qa_file in args.household]
    trials, failed = [], False
    for household, path in households:
        items, errors = read_qa(path, known=set(labels.ids))
        for error in errors:
            print(error, file=sys.stderr)
        failed |= bool(errors)
        items = [item for item in items if item.split == "dev"]
        if not items:
            raise HousechatError(f"{path}: no dev questions — split it with `python -m eval split-qa --write`")
        trials += run_trials(household, items, backend, args.k, args.boost, args.lift_open)
    text = markdown(trials, choose(trials), command, backend)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 1 if failed else 0


def run_tune_extractive(args: argparse.Namespace, command: str) -> int:
    from eval.tune_extractive import main as tune_main

    settings = from_env(store=args.store)
    qa_file = args.qa_file or settings.qa_file
    extra = args.extra_file or sorted(qa_file.parent.glob("qa-dev-extra*.jsonl"))
    return tune_main(settings, qa_file, extra, args.min_coverage)


COMMANDS = {
    "routing": run_routing,
    "answers": run_answers,
    "split-qa": run_split_qa,
    "tune-extractive": run_tune_extractive,
    "filtering": run_filtering,
}

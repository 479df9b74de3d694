"""BANKING77 through the same commands a household uses: `finetune embedding --train-file` and `eval routing`.

    python -m benchmarks.banking77 --data ../shared/benchmarks/banking77 [--shots full,10] [--out FILE.md]

Reads train.csv and test.csv from `--data` (never copied into the repo). Holds out a stratified
validation slice of train (10% per intent, seed 77), then per setting:
  full  train on the rest of train.csv;
  10    train on 10 examples per intent drawn from that rest (seed 77), tune on 5 per intent of val;
each with `python -m finetune embedding --train-file .. --val-file .. --labels-from-data --no-notes
--no-vote --output-dir var/banking77/router-<setting>[-<tag>] [--router-args ...]`, then scores test.csv with `python -m eval
routing --test-file test.csv --backends embedding --embedding-dir var/banking77/router-<setting>`
(one question at a time, so the latency is a user's). MiniLM vectors are cached under
var/embed-cache, so the training time of a rerun is the head's fit (the first run also embeds).
Prints a Markdown table: accuracy with its 95% Wilson interval, macro-F1, training time, p50 latency.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

SEED = 77
VAL_FRACTION = 0.1
ANCHORS = "BERT-base fine-tuned 93.66 (full); USE+ConveRT 93.36 (full), 85.19 (10 per intent)"


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    return path


def by_intent(rows: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        groups[row[1]].append(row)
    return dict(sorted(groups.items()))


def splits(train_csv: Path, work: Path) -> dict[str, tuple[Path, Path]]:
    """Per setting, the (train, val) CSVs: a stratified, seeded val slice of train.csv; never test."""
    from core.schemas import read_routing_examples

    examples, errors = read_routing_examples(train_csv)
    if errors:
        raise SystemExit("\n".join(map(str, errors)))
    rng = random.Random(SEED)
    rest, val = [], []
    for rows in by_intent([(e.question, e.category) for e in examples]).values():
        rows = rows[:]
        rng.shuffle(rows)
        cut = max(1, round(len(rows) * VAL_FRACTION))
        val += rows[:cut]
        rest += rows[cut:]
    shots = [row for rows in by_intent(rest).values() for row in rng.sample(rows, 10)]
    val5 = [row for rows in by_intent(val).values() for row in rng.sample(rows, min(5, len(rows)))]
    # "10-strict": only the 10 shots per intent are labelled at all: 7 train, 3 tune (a refit on
    # train + val then sees exactly 10 per intent, the published few-shot setting).
    seven, three = [], []
    for rows in by_intent(shots).values():
        seven += rows[:7]
        three += rows[7:]
    return {
        "full": (write_csv(work / "train-full.csv", rest), write_csv(work / "val.csv", val)),
        "10": (write_csv(work / "train-10.csv", shots), write_csv(work / "val-5.csv", val5)),
        "10-strict": (write_csv(work / "train-10-7.csv", seven), write_csv(work / "val-10-3.csv", three)),
    }


def main(argv: list[str] | None = None) -> int:
    from eval.cli import main as eval_main
    from finetune.cli import main as finetune_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with BANKING77's train.csv and test.csv")
    parser.add_argument(
        "--shots",
        default="full,10",
        help="settings to run: full, 10 (10 per intent, tuned on 5 more per intent of the val slice) and/or "
        "10-strict (10 per intent in all: 7 train, 3 tune; default full,10)",
    )
    parser.add_argument("--work", type=Path, default=Path("var/banking77"), help="splits, routers, reports")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    parser.add_argument(
        "--router-args",
        default="",
        help='more `finetune embedding` options for every setting, e.g. "--refit-on-val --word-ngrams" '
        "(a single option needs the = form: --router-args=--refit-on-val)",
    )
    parser.add_argument("--tag", default="", help="suffix of the router folders and summaries (one per variant)")
    args = parser.parse_args(argv)
    train_csv, test_csv = args.data / "train.csv", args.data / "test.csv"
    for path in (train_csv, test_csv):
        if not path.exists():
            raise SystemExit(f"{path}: not found — point --data at the BANKING77 folder")
    files = splits(train_csv, args.work)
    rows = []
    for setting in [s.strip() for s in args.shots.split(",") if s.strip()]:
        train, val = files[setting]
        name = f"{setting}{'-' + args.tag if args.tag else ''}"
        out = args.work / f"router-{name}"
        start = time.perf_counter()
        command = [
            "embedding",
            *("--train-file", str(train), "--val-file", str(val), "--labels-from-data"),
            *("--no-notes", "--no-vote", "--output-dir", str(out)),
            *args.router_args.split(),
        ]
        if finetune_main(command) != 0:
            return 1
        train_s = time.perf_counter() - start
        summary_path = args.work / f"test-{name}.json"
        score = ["routing", "--test-file", str(test_csv), "--backends", "embedding", "--embedding-dir", str(out)]
        score += ["--report", str(args.work / "reports"), "--summary", str(summary_path), "--json"]
        if eval_main(score) != 0:
            return 1
        result = json.loads(summary_path.read_text())["backends"]["embedding"]
        meta = json.loads((out / "meta.json").read_text())
        lo, hi = result["accuracy_ci"]
        refit = meta.get("refit_on_val")
        n_train = meta["metrics"]["n_train"] + meta["metrics"].get("n_val_refit", 0)
        rows.append(
            f"| embedding ({meta['features']}, {meta['classifier']}{', refit on train + val' if refit else ''}) | "
            f"{setting} | {n_train} | "
            f"{result['accuracy']:.2%} ({lo:.1%}–{hi:.1%}) | {result['macro_f1']:.3f} | "
            f"{meta['metrics']['val_accuracy']:.1%} | {train_s:.0f} s | {result['latency_ms']['p50']:.1f} ms |"
        )
    table = "\n".join(
        [
            "| router | train | n train (final head) | test accuracy (95% CI) | macro-F1 | val acc (before any refit) "
            "| training | p50 latency |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"{len(json.loads((args.data / 'categories.json').read_text()))} intents, test n = 3,080. "
            f"Published anchors: {ANCHORS}.",
        ]
    )
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

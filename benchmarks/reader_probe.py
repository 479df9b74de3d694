"""Can an embedded model learn to read? Gemma 3 270M as an answerability reader, a dev-only probe.

The extractive answerer refuses when its word-overlap and type features say the notes do not cover
the question (`app.extractive.QUESTION_FEATURES`); on near misses that name a real thing of the house
they cannot tell (issue 14). This probe trains the largest embedded model as a reader of
(question, sentence) pairs and measures whether its scores add to those features:

    python -m benchmarks.reader_probe pairs --store S --out DIR
    python -m finetune train gemma3-270m-reader-probe --train-file DIR/train.jsonl \\
        --val-file DIR/val.jsonl --labels-from-data --output-dir DIR/run --threads 2
    python -m benchmarks.reader_probe score DIR --model DIR/run/adapter

`pairs` retrieves the QA dev half and the dev-only supplements (`data/eval/qa-dev-extra*.jsonl`)
through the app's pipeline in both arms (`eval.tune_extractive.dev_cases`), and writes each
supplement question's top `--top` sentences (by the committed sentence weights) plus every right one
as "yes" (a gold note's sentence that states a keyword, the sentence model's own label) or "no";
"yes" lines are repeated `--repeat` times so the classes weigh about the same. A hash of the
question sends 15% of the supplement questions to `val.jsonl`; the dev half is never trained on.
`score` prints the reader's AUC on the held-out supplement pairs, then refusal AUC on the dev half:
the reader's score of the lead sentence and its best over the top 3 and top 6 alone, and beside
`QUESTION_FEATURES` in a logistic regression cross-validated with `eval.tune_extractive.folds`.
The test half is never read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

READER = "embedded:gemma3-270m"
TOP = 6
REPEAT = 5
VAL_SHARE = 15  # percent of the supplement questions held out by hash
REFUSAL_C = (0.1, 0.3, 1.0)


def pair_text(question: str, sentence: Any) -> str:
    """What the reader reads: the question, then the sentence under its note title and heading."""
    head = f"{sentence.chunk.title} — {sentence.heading}" if sentence.heading else sentence.chunk.title
    return f"Question: {question}\nNote: {head}: {sentence.text}"


def top_sentences(case: Any, top: int) -> list[int]:
    """The indices of a case's `top` best-scoring sentences, best first."""
    import numpy as np

    return [int(i) for i in np.argsort(-case.scored.scores)[:top]]


def pairs(cases: list[Any], top: int = TOP) -> dict[str, float]:
    """(pair text → 1.0 / 0.0) over both arms: each case's top sentences and every right one."""
    out: dict[str, float] = {}
    for case in cases:
        if not case.scored.sentences:
            continue
        keep = set(top_sentences(case, top)) | {int(i) for i in case.labels.nonzero()[0]}
        for i in keep:
            key = pair_text(case.item.question, case.scored.sentences[i])
            out[key] = max(out.get(key, 0.0), float(case.labels[i]))
    return out


def held_out(question: str) -> bool:
    return int(hashlib.md5(question.encode()).hexdigest(), 16) % 100 < VAL_SHARE


def write_pairs(path: Path, labelled: dict[str, float], repeat: int) -> tuple[int, int]:
    """JSONL question,category lines (`finetune --train-file`); returns (lines, distinct positives)."""
    lines = 0
    with path.open("w") as f:
        for text, label in sorted(labelled.items()):
            row = json.dumps({"question": text, "category": "yes" if label else "no"}) + "\n"
            f.write(row * (repeat if label else 1))
            lines += repeat if label else 1
    return lines, int(sum(labelled.values()))


def run_pairs(args: argparse.Namespace) -> int:
    from core.schemas import read_qa
    from core.settings import from_env
    from eval.tune_extractive import dev_cases

    settings = from_env({}, store=args.store)
    items, _ = read_qa(settings.qa_file)
    dev = [i for i in items if i.split == "dev"]
    extra = [item for f in sorted(Path(settings.qa_file).parent.glob("qa-dev-extra*.jsonl")) for item in read_qa(f)[0]]
    cases = dev_cases(settings, dev, extra)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "cases.pkl").open("wb") as f:
        pickle.dump(cases, f)
    supplement = [c for c in cases if c.extra]
    for name, group in (
        ("train", [c for c in supplement if not held_out(c.item.question)]),
        ("val", [c for c in supplement if held_out(c.item.question)]),
    ):
        lines, positive = write_pairs(args.out / f"{name}.jsonl", pairs(group, args.top), args.repeat)
        print(f"{args.out / f'{name}.jsonl'}: {lines} lines, {positive} distinct right sentences (x{args.repeat})")
    print(
        f"{args.out / 'cases.pkl'}: {len(cases)} cases ({len(dev)} dev and {len(extra)} supplement questions, 2 arms)"
    )
    return 0


class Reader:
    """A trained classifier adapter that scores pair texts: P("yes") (the llm router's `ClassifierScorer`)."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        import torch

        from core.categories import label_set_from_ids
        from core.settings import from_env
        from router.llm import ClassifierScorer, load_adapted_classifier

        torch.set_num_threads(threads)
        ids = [c["id"] for c in json.loads((model_dir / "meta.json").read_text())["categories"]]
        labels = label_set_from_ids(ids)
        self.yes = labels.ids.index("yes")
        model, tokenizer = load_adapted_classifier(model_dir, READER, from_env({}).var_dir, len(labels))
        self.scorer = ClassifierScorer(model, tokenizer, labels, batch_size=16)
        self.cache: dict[str, float] = {}

    def __call__(self, texts: list[str]) -> list[float]:
        todo = sorted({t for t in texts if t not in self.cache})
        if todo:
            self.cache.update(zip(todo, self.scorer.probabilities(todo)[:, self.yes].tolist(), strict=True))
        return [self.cache[t] for t in texts]


def refusal_table(cases: list[Any], reader_rows: Any) -> list[str]:
    """Dev-half refusal AUC, cross-validated by question: the features alone and with the reader's scores."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from eval.tune_extractive import folds

    features = np.array([c.scored.question for c in cases])
    y = np.array([float(c.item.answerable) for c in cases])
    lines = [
        f"  reader alone, {name}: {roc_auc_score(y, reader_rows[:, j]):.3f}"
        for j, name in enumerate(("lead sentence", "best of top 3", "best of top 6"))
    ]
    for c in REFUSAL_C:
        for name, x in (("features", features), ("features + reader", np.hstack([features, reader_rows]))):
            p = np.zeros(len(y))
            for train, held in folds(cases):
                model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000))
                p[held] = model.fit(x[train], y[train]).predict_proba(x[held])[:, 1]
            lines.append(f"  C {c:<4} {name:<18} {roc_auc_score(y, p):.3f}")
    return lines


def run_score(args: argparse.Namespace) -> int:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from core.errors import HousechatError

    for needed in (args.dir / "val.jsonl", args.dir / "cases.pkl"):
        if not needed.exists():
            raise HousechatError(
                f"{needed} is missing — run `python -m benchmarks.reader_probe pairs --out {args.dir}` first"
            )
    if not (args.model / "meta.json").exists():
        raise HousechatError(f"{args.model} has no trained adapter (meta.json) — train it with the command in --help")
    reader = Reader(args.model, args.threads)
    val = [json.loads(line) for line in (args.dir / "val.jsonl").open()]
    unique = {row["question"]: row["category"] == "yes" for row in val}
    scores = reader(list(unique))
    print(f"held-out supplement pairs ({len(unique)}): reader AUC {roc_auc_score(list(unique.values()), scores):.3f}")
    with (args.dir / "cases.pkl").open("rb") as f:
        cases = [c for c in pickle.load(f) if not c.extra and c.scored.sentences]
    rows = []
    for case in cases:
        p = reader([pair_text(case.item.question, case.scored.sentences[i]) for i in top_sentences(case, TOP)])
        rows.append([p[0], max(p[:3]), max(p)])
    print(f"refusal AUC on the dev half ({len(cases)} cases, both arms; 5 folds by question):")
    print("\n".join(refusal_table(cases, np.array(rows))))
    return 0


def main(argv: list[str] | None = None) -> int:
    from core.cli import positive_int, run

    parser = argparse.ArgumentParser(prog="python -m benchmarks.reader_probe", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser(
        "pairs", help="retrieve dev + supplements, write DIR/train.jsonl, DIR/val.jsonl, DIR/cases.pkl"
    )
    make.add_argument("--store", type=Path, required=True, help="a store of data/notes (python -m ingest --store S)")
    make.add_argument("--out", type=Path, required=True, help="the folder it writes (made if missing)")
    make.add_argument(
        "--top", type=positive_int, default=TOP, help="sentences per question, best first (default %(default)s)"
    )
    make.add_argument(
        "--repeat", type=positive_int, default=REPEAT, help="copies of each 'yes' line (default %(default)s)"
    )
    score = sub.add_parser("score", help="the reader's AUC on held-out pairs and for refusals on the dev half")
    score.add_argument("dir", type=Path, help="the --out folder of `pairs`")
    score.add_argument("--model", type=Path, required=True, help="the trained adapter (DIR/run/adapter)")
    score.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (default %(default)s)")
    return run(parser, lambda args: run_pairs(args) if args.command == "pairs" else run_score(args), argv)


if __name__ == "__main__":
    raise SystemExit(main())

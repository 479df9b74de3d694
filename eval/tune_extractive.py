"""`python -m eval tune-extractive`: pick the extractive answerer's weights and refusal threshold on the QA dev half.

The retrieved chunks come from the app's pipeline (router off, k = 5), then two grid searches run
over the sentence picker alone (no retrieval in the loop, so a grid is seconds):

1. sentence scoring (BM25, question-type and chunk-score weights, how close a supporting sentence
   must score to the best one): the highest keyword coverage, refusals off (ties: the shorter answer);
2. refusal (the missing-subject-word penalties and the threshold): the most questions handled
   right, counting an answerable question by its keyword coverage and an unanswerable one as 1
   when refused.

It prints the best rows and one chosen `Weights`; `app/extractive.py`'s defaults are one of the rows
tied best on the refusal grid (docs/results/answers.md). Never run on test.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from dataclasses import replace
from typing import Any

from core.schemas import QAItem
from core.settings import Settings
from eval import metrics
from eval.answers import REFUSAL

SCORING_GRID = {
    "bm25": (0.2, 0.35, 0.5),
    "type_match": (0.2, 0.35, 0.5),
    "chunk": (0.3, 0.6),
    "support_ratio": (0.7, 0.8),
    "other_note_ratio": (0.7, 0.85, 1.01),
}
REFUSAL_GRID = {
    "missing_any": (0.0, 0.25, 0.5, 0.75, 1.0),
    "missing_best": (0.0, 0.25, 0.5, 0.75),
    "refuse_below": tuple(x / 100 for x in range(40, 160, 4)),
}


def tune(settings: Settings, items: list[QAItem]) -> tuple[Any, list[str]]:
    """The chosen weights and a report (lines) of the best rows of each grid."""
    from app.extractive import SentencePicker, Weights
    from app.pipeline import Pipeline

    pipeline = Pipeline.load(replace(settings, answerer="extractive"), routing=False)
    cases = []
    for item in items:
        stream = pipeline.stream(item.question, routing=False)
        cases.append((item, next(stream).chunks))
        stream.close()
    picker = SentencePicker()
    answerable = [(i, c) for i, c in cases if i.answerable]
    unanswerable = [(i, c) for i, c in cases if not i.answerable]

    def coverage(weights: Any) -> tuple[float, float]:
        picker.weights = weights
        texts = [(i, picker.answer(i.question, c)) for i, c in answerable]
        cov = statistics.mean(metrics.keyword_coverage(t, i.keywords) for i, t in texts)
        return cov, statistics.median(len(t) for _, t in texts)

    rows = []
    for values in itertools.product(*SCORING_GRID.values()):
        weights = replace(Weights(refuse_below=-1e9), **dict(zip(SCORING_GRID, values, strict=True)))
        cov, chars = coverage(weights)
        rows.append((cov, -chars, values))
    rows.sort(reverse=True)
    best = replace(Weights(), **dict(zip(SCORING_GRID, rows[0][2], strict=True)))
    lines = [f"dev: {len(answerable)} answerable, {len(unanswerable)} unanswerable", "", "scoring (refusals off):"]
    lines += [
        f"  coverage {c:.3f}  chars p50 {-n:.0f}  {dict(zip(SCORING_GRID, v, strict=True))}" for c, n, v in rows[:5]
    ]

    # The refusal grid reads the picker's scores once per question, then thresholds them.
    picker.weights = replace(best, refuse_below=-1e9)
    picked = [(i, picker.pick(i.question, c), c) for i, c in cases]
    from app.extractive import missing, render

    features = []
    for item, pick, chunks in picked:
        top = pick.sentences[0][0].chunk if pick.sentences else None
        miss_any = missing(item.question, chunks) if chunks else 1.0
        miss_best = missing(item.question, [top], chunks) if top else 1.0
        cov = metrics.keyword_coverage(render(pick), item.keywords) if item.answerable else 0.0
        features.append((item.answerable, pick.best, miss_any, miss_best, cov))
    refusal_rows = []
    for a, b, threshold in itertools.product(*REFUSAL_GRID.values()):
        score = 0.0
        for is_answerable, top_score, miss_any, miss_best, cov in features:
            refused = top_score - a * miss_any - b * miss_best < threshold
            score += (0.0 if refused else cov) if is_answerable else float(refused)
        refusal_rows.append((score / len(features), a, b, threshold))
    refusal_rows.sort(key=lambda r: (r[0], -r[3]), reverse=True)
    _, a, b, threshold = refusal_rows[0]
    best = replace(best, missing_any=a, missing_best=b, refuse_below=threshold)
    picker.weights = best
    texts = [(i, picker.answer(i.question, c)) for i, c in cases]
    cov = statistics.mean(metrics.keyword_coverage(t, i.keywords) for i, t in texts if i.answerable)
    ref = statistics.mean(bool(REFUSAL.search(t)) for i, t in texts if not i.answerable)
    lines += ["", "refusal (share of questions handled right):"]
    lines += [f"  {s:.3f}  missing_any {x} missing_best {y} refuse_below {t:.2f}" for s, x, y, t in refusal_rows[:5]]
    lines += ["", f"chosen: keyword coverage {cov:.3f}, refusal accuracy {ref:.3f} on dev", f"{best}"]
    return best, lines


def main(settings: Settings, qa_file: Any) -> int:
    from core.schemas import read_qa

    items, errors = read_qa(qa_file)
    for error in errors:
        print(error, file=sys.stderr)
    dev = [i for i in items if i.split == "dev"]
    if not dev:
        print(f"{qa_file}: no dev questions — run `python -m eval split-qa --write` first", file=sys.stderr)
        return 1
    _, lines = tune(settings, dev)
    print("\n".join(lines))
    return 0

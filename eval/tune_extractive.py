"""`python -m eval tune-extractive`: fit the extractive answerer's weights and refusal on the QA dev half.

Every dev question is retrieved through the app's pipeline in both arms (router off and on, k = 5),
and so is every question of the dev-only supplements `data/eval/qa-dev-extra*.jsonl` (near-miss
questions the notes do not answer, and answerable ones, written for fitting: never test questions,
see `leaks`). Then, with no retrieval in the loop:

1. **sentence scoring**: a conditional logit over each question's sentences (`SENTENCE_FEATURES`),
   where the right sentences are those of a gold note that state a keyword; its L2 strength is picked
   by 5-fold cross-validation grouped by question (how often the first sentence's note is a gold note,
   on the dev half's held-out questions); fit on dev and the supplement;
2. **support**: how close a sentence of the same note, or of another note, must score to the first one
   to be added — the highest citation precision, then keyword coverage, refusals off (dev and supplement);
3. **refusal**: a logistic regression over `QUESTION_FEATURES` (notes answer it or not), fit on dev and
   the supplement with the classes weighted equally; its threshold is read off cross-validated
   probabilities of the dev half's questions: the table shows keyword coverage, refusal accuracy and
   false refusals per threshold, and the chosen one refuses the most unanswerable dev questions while
   dev keyword coverage stays at `--min-coverage` or above (the test half has scored below dev);
   a second table drops each feature in turn (cross-validated AUC), so each one shows what it adds.

It prints those tables and the chosen `Weights`, which `app/extractive.py` carries as its defaults
(docs/results/answers.md). Never run on test.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.schemas import QAItem
from core.settings import Settings
from eval import metrics
from eval.answers import CITATION, REFUSAL

L2 = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
GAPS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
THRESHOLDS = tuple(x / 20 for x in range(1, 20))
FOLDS = 5
EMBED_TOP = (0, 6, 10, 16)
REFUSAL_C = (0.3, 1.0, 3.0, 10.0, 30.0)


MIN_COVERAGE = 0.80
LEAK_COSINE = 0.8  # a supplement question this close (MiniLM) to a test question is a leak


@dataclass
class Case:
    """One dev question in one arm: its retrieved chunks and their scored sentences."""

    item: QAItem
    chunks: list[Any]
    scored: Any  # app.extractive.Scored
    labels: Any  # numpy (n,): 1 for a sentence of a gold note that states a keyword
    counts: Any = None  # the store's app.extractive.WordCounts
    extra: bool = False  # from the dev-only supplement, not the dev half


def fit_sentence_weights(cases: list[Case], l2: float) -> Any:
    """Conditional logit: per question, a softmax over its sentences; maximise the right ones' share."""
    import numpy as np
    from scipy.optimize import minimize

    groups = [(c.scored.features, c.labels > 0) for c in cases if c.labels.any()]
    stacked = np.vstack([f for f, _ in groups])
    mean, scale = stacked.mean(0), stacked.std(0) + 1e-9
    standard = [((f - mean) / scale, right) for f, right in groups]

    def loss(w: Any) -> tuple[float, Any]:
        total, grad = l2 * float(w @ w), 2 * l2 * w
        for f, right in standard:
            s = f @ w
            e = np.exp(s - s.max())
            p = e / e.sum()
            total -= float(np.log(e[right].sum() / e.sum()))
            grad -= f.T @ (np.where(right, e / e[right].sum(), 0.0) - p)
        return total, grad

    found = minimize(loss, np.zeros(stacked.shape[1]), jac=True, method="L-BFGS-B")
    return found.x / scale  # on the raw features (a constant shift does not change a softmax)


def folds(cases: list[Case]) -> list[tuple[list[int], list[int]]]:
    """FOLDS splits with both arms of a question on the same side."""
    questions = sorted({c.item.question for c in cases})
    fold_of = {q: i % FOLDS for i, q in enumerate(questions)}
    return [
        (
            [i for i, c in enumerate(cases) if fold_of[c.item.question] != k],
            [i for i, c in enumerate(cases) if fold_of[c.item.question] == k],
        )
        for k in range(FOLDS)
    ]


def rescore(cases: list[Case], weights: Any) -> None:
    """Each case's sentence scores and question features under new sentence weights."""
    import numpy as np

    from app.extractive import Weights, question_features

    for c in cases:
        s = c.scored
        if s.sentences:
            s.scores = s.features @ np.asarray(weights)
            s.question = question_features(
                s.sentences, s.features, s.scores, c.chunks, c.item.question, s.wanted, Weights().support_gap, c.counts
            )


def first_note_right(cases: list[Case]) -> float:
    answerable = [c for c in cases if c.item.answerable and c.scored.sentences]
    return statistics.mean(c.scored.sentences[c.scored.best].note_id in c.item.gold_note_ids for c in answerable)


def answer_scores(picker: Any, cases: list[Case]) -> dict[str, float]:
    """Keyword coverage and citation precision (answerable), refusal accuracy (unanswerable), chars p50."""
    from app.extractive import render

    texts = [(c, render(picker.choose(c.scored, c.chunks))) for c in cases]
    answerable = [(c, t) for c, t in texts if c.item.answerable]
    precision = []
    for c, t in answerable:
        cited = set(CITATION.findall(t))
        if cited:
            precision.append(len(cited & set(c.item.gold_note_ids)) / len(cited))
    unanswerable = [t for c, t in texts if not c.item.answerable]
    return {
        "coverage": statistics.mean(metrics.keyword_coverage(t, c.item.keywords) for c, t in answerable),
        "citation_precision": statistics.mean(precision) if precision else 0.0,
        "refusal": statistics.mean(bool(REFUSAL.search(t)) for t in unanswerable) if unanswerable else 0.0,
        "false_refusal": statistics.mean(bool(REFUSAL.search(t)) for _, t in answerable),
        "chars": statistics.median(len(t) for _, t in texts),
    }


def dev_cases(settings: Settings, items: list[QAItem], extra: list[QAItem] | None = None) -> list[Case]:
    """Each question retrieved through the app's pipeline in both arms, its sentences scored and labelled."""
    from app.pipeline import Pipeline

    pipeline = Pipeline.load(replace(settings, answerer="extractive"))
    retrieved = []
    for item in [*items, *(extra or [])]:
        for routing in (False, True):
            stream = pipeline.stream(item.question, routing=routing)
            retrieved.append((item, next(stream).chunks))
            stream.close()
    cases = score_cases(retrieved, counts=pipeline.word_counts())
    for case in cases[len(items) * 2 :]:
        case.extra = True
    return cases


def score_cases(retrieved: list[tuple[QAItem, list[Any]]], embed: Any = None, counts: Any = None) -> list[Case]:
    """The sentences of each question's chunks scored (current default weights) and labelled."""
    import numpy as np

    from app.extractive import SentencePicker, Weights
    from eval.metrics import keyword_pattern

    picker = SentencePicker(Weights(embed_top=0), embed=embed)  # every sentence: the fit sees them all
    cases = []
    for item, chunks in retrieved:
        scored = picker.score(item.question, chunks, counts=counts)
        labels = np.array(
            [
                float(
                    item.answerable
                    and s.note_id in item.gold_note_ids
                    and any(keyword_pattern(k).search(s.text) for k in item.keywords)
                )
                for s in scored.sentences
            ]
        )
        cases.append(Case(item, chunks, scored, labels, counts))
    return cases


def tune(
    settings: Settings,
    items: list[QAItem],
    extra: list[QAItem] | None = None,
    min_coverage: float = MIN_COVERAGE,
) -> tuple[Any, list[str]]:
    """The fitted weights and a report (lines) of each step."""
    return fit(dev_cases(settings, items, extra), min_coverage=min_coverage)


def leaks(questions: list[str], test: list[str], threshold: float = LEAK_COSINE) -> list[tuple[str, str, float]]:
    """(question, test question, cosine) for each question whose MiniLM cosine to a test question reaches
    `threshold`: a supplement question must not copy or paraphrase the test half."""
    from core.models import embed

    if not questions or not test:
        return []
    sims = embed(questions) @ embed(test).T
    out = []
    for i, question in enumerate(questions):
        j = int(sims[i].argmax())
        if sims[i, j] >= threshold:
            out.append((question, test[j], float(sims[i, j])))
    return out


def fit(cases: list[Case], embed: Any = None, min_coverage: float = MIN_COVERAGE) -> tuple[Any, list[str]]:
    """Fit the sentence weights, the support gaps and the refusal on scored dev (and supplement) cases.

    Every table is on the dev half's questions (held out by cross-validation where it says so); the
    supplement's questions only add training data.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from app.extractive import SentencePicker, Weights, render

    picker = SentencePicker(embed=embed)
    dev = [c for c in cases if not c.extra]
    lines = []
    for name, group in (("dev", dev), ("supplement (fitting only)", [c for c in cases if c.extra])):
        items = list({c.item.question: c.item for c in group}.values())
        answerable = sum(i.answerable for i in items)
        lines.append(
            f"{name}: {answerable} answerable, {len(items) - answerable} unanswerable questions, arms off and on"
        )
    lines.append("")

    # 1. Sentence scoring.
    rescore(cases, Weights().sentence)
    lines += [f"sentence scoring: first sentence's note is gold (dev), current weights {first_note_right(dev):.3f}"]
    split = folds(cases)
    by_l2 = []
    for l2 in L2:
        right = []
        for train, held in split:
            weights = fit_sentence_weights([cases[i] for i in train], l2)
            held_dev = [cases[i] for i in held if not cases[i].extra]
            rescore(held_dev, weights)
            right += [first_note_right(held_dev)] * len(held_dev)
        by_l2.append((statistics.mean(right), l2))
        lines.append(f"  L2 {l2:>5}: {by_l2[-1][0]:.3f} (cross-validated)")
    l2 = max(by_l2)[1]
    sentence = tuple(round(float(x), 3) for x in fit_sentence_weights(cases, l2))
    rescore(cases, sentence)
    lines.append(f"  chosen L2 {l2}; fit on all: {first_note_right(dev):.3f}")

    # 2. Supporting sentences (refusals off).
    lines += [
        "",
        "support (refusals off): same-note gap, other-note gap -> coverage, citation precision, chars p50 (dev)",
    ]
    rows = []
    for same in GAPS:
        for other in GAPS:
            picker.weights = Weights(sentence, answer_above=0.0, support_gap=same, other_note_gap=other)
            both = answer_scores(picker, cases)
            rows.append((round(both["citation_precision"], 3), same, other, both, answer_scores(picker, dev)))
    # Citation precision first (coverage is past its target on dev, precision is not), then coverage.
    rows.sort(key=lambda r: (r[0], r[3]["coverage"], -r[3]["chars"]), reverse=True)
    for _, same, other, _, got in rows[:8]:
        lines.append(
            f"  {same:.1f} {other:.1f} -> {got['coverage']:.3f} {got['citation_precision']:.3f} {got['chars']:.0f}"
        )
    _, same, other, _, _ = rows[0]

    # 3. Refusal: cross-validated probabilities, then a threshold.
    usable = [c for c in cases if c.scored.sentences]
    x = np.vstack([c.scored.question[:-1] for c in usable])  # the last value is the lead's index
    y = np.array([c.item.answerable for c in usable])
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / scale
    on_dev = np.array([not c.extra for c in usable])
    folded = folds(usable)

    def model(c: float, rows: Any) -> Any:
        return LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(z[rows], y[rows])

    def held_out(c: float) -> Any:
        probability = np.zeros(len(usable))
        for train, held in folded:
            probability[held] = model(c, train).predict_proba(z[held])[:, 1]
        return probability

    lines += ["", "refusal model: L2 strength C -> cross-validated ROC AUC (answerable vs not; dev, supplement)"]
    by_c = []
    for c in REFUSAL_C:
        p = held_out(c)
        by_c.append((roc_auc_score(y[on_dev], p[on_dev]), c))
        extra = roc_auc_score(y[~on_dev], p[~on_dev]) if (~on_dev).any() and len(set(y[~on_dev])) > 1 else float("nan")
        lines.append(f"  C {c:>4}: {by_c[-1][0]:.3f} {extra:.3f}")
    c = max(by_c)[1]
    from app.extractive import QUESTION_FEATURES

    lines += ["", f"refusal features: cross-validated ROC AUC without each one (C {c}; dev, supplement)"]
    every = np.arange(z.shape[1])
    for j, name in enumerate(QUESTION_FEATURES):
        p = np.zeros(len(usable))
        keep = every[every != j]
        for train, held in folded:
            fitted_without = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(
                z[train][:, keep], y[train]
            )
            p[held] = fitted_without.predict_proba(z[held][:, keep])[:, 1]
        extra = roc_auc_score(y[~on_dev], p[~on_dev]) if (~on_dev).any() and len(set(y[~on_dev])) > 1 else float("nan")
        lines.append(f"  - {name:<24} {roc_auc_score(y[on_dev], p[on_dev]):.3f} {extra:.3f}")
    probability = held_out(c)[on_dev]
    fitted = model(c, np.arange(len(usable)))
    coef = fitted.coef_[0] / scale  # back to the raw features
    intercept = fitted.intercept_[0] - float(coef @ mean)
    refusal = tuple(round(float(v), 4) for v in [*coef, intercept])
    base = Weights(sentence, refusal, 0.0, same, other)
    picker.weights = base
    held = [case for case, d in zip(usable, on_dev, strict=True) if d]
    coverage = {
        id(c): metrics.keyword_coverage(render(picker.choose(c.scored, c.chunks)), c.item.keywords) for c in held
    }
    lines += [
        "",
        "refusal threshold (cross-validated on dev): coverage, refusal accuracy, false refusals",
    ]
    table = []
    for threshold in THRESHOLDS:
        refused = probability < threshold
        answerable = [(c, r) for c, r in zip(held, refused, strict=True) if c.item.answerable]
        unanswerable = [r for c, r in zip(held, refused, strict=True) if not c.item.answerable]
        cov = statistics.mean(0.0 if r else coverage[id(c)] for c, r in answerable)
        ref = statistics.mean(float(r) for r in unanswerable) if unanswerable else 0.0
        false = statistics.mean(float(r) for _, r in answerable)
        table.append((cov >= min_coverage, ref, -false, threshold))
        lines.append(f"  {threshold:.2f}: {cov:.3f} {ref:.3f} {false:.3f}")
    threshold = max(table)[3]
    lines[-len(THRESHOLDS) + THRESHOLDS.index(threshold)] += (
        f"   <- chosen (most refused with coverage >= {min_coverage})"
    )
    best = replace(base, answer_above=threshold)
    picker.weights = best
    got = answer_scores(picker, dev)
    lines += [
        "",
        f"chosen, dev (fit on it, so optimistic): coverage {got['coverage']:.3f}, citation precision "
        f"{got['citation_precision']:.3f}, refusal {got['refusal']:.3f}, false refusals {got['false_refusal']:.3f}",
    ]

    # 4. How many sentences a cold answer must embed (the rest are ranked out by their chunk's score).
    lines += ["", "sentences embedded per question (dev): coverage, citation precision, refusal, false refusals"]
    for top in EMBED_TOP:
        picker.weights = replace(best, embed_top=top)
        rescored = [
            Case(c.item, c.chunks, picker.score(c.item.question, c.chunks, counts=c.counts), c.labels, c.counts)
            for c in dev
        ]
        got = answer_scores(picker, rescored)
        lines.append(
            f"  {top or 'all':>3}: {got['coverage']:.3f} {got['citation_precision']:.3f} "
            f"{got['refusal']:.3f} {got['false_refusal']:.3f}"
        )
    lines += ["", f"{best}"]
    return best, lines


def main(settings: Settings, qa_file: Any, extra_files: Sequence[Any] = (), min_coverage: float = MIN_COVERAGE) -> int:
    from core.schemas import read_qa

    items, errors = read_qa(qa_file)
    extra: list[QAItem] = []
    test = [i.question for i in items if i.split == "test"]
    for extra_file in extra_files:
        more_items, more = read_qa(extra_file)
        extra += more_items
        errors += more
        found = leaks([i.question for i in more_items], test)
        for question, near, cosine in found:
            print(f"{extra_file}: {question!r} is {cosine:.2f} from test question {near!r}", file=sys.stderr)
        if found:
            print(f"{extra_file}: remove or rewrite those questions (never fit on the test half)", file=sys.stderr)
            return 1
    for error in errors:
        print(error, file=sys.stderr)
    dev = [i for i in items if i.split == "dev"]
    if not dev:
        print(f"{qa_file}: no dev questions — run `python -m eval split-qa --write` first", file=sys.stderr)
        return 1
    _, lines = tune(settings, dev, extra, min_coverage)
    print("\n".join(lines))
    return 0

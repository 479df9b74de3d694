"""Scorers shared by the routing and answer evals. Plain Python + numpy, checked by hand-made cases."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (well-behaved at 0%, 100% and small n)."""
    if n == 0:
        return (0.0, 0.0)
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def per_category(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and support per label (a None prediction counts as wrong everywhere)."""
    out = {}
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        predicted = sum(p == label for p in pred)
        support = sum(g == label for g in gold)
        out[label] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "n": support,
        }
    return out


def macro_f1(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> float:
    """Mean F1 over the labels that occur in `gold` (labels absent from the data are skipped)."""
    scores = []
    for stats in per_category(gold, pred, labels).values():
        if not stats["n"]:
            continue
        p, r = stats["precision"], stats["recall"]
        scores.append(2 * p * r / (p + r) if p + r else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def reliability(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[dict[str, float]]:
    """Confidence bins: mean confidence, accuracy and count per bin (for ECE and the plot)."""
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidences) if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if idx:
            rows.append(
                {
                    "lo": lo,
                    "hi": hi,
                    "confidence": sum(confidences[i] for i in idx) / len(idx),
                    "accuracy": sum(correct[i] for i in idx) / len(idx),
                    "n": len(idx),
                }
            )
    return rows


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE: the count-weighted gap between confidence and accuracy over the bins."""
    n = len(confidences)
    if not n:
        return 0.0
    return sum(r["n"] / n * abs(r["accuracy"] - r["confidence"]) for r in reliability(confidences, correct, bins))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def confusion(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> list[list[int]]:
    """Rows are gold labels, columns predicted labels, plus a last column for no/invalid output."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        if g in index:
            matrix[index[g]][index.get(p, len(labels)) if p is not None else len(labels)] += 1
    return matrix


def hit_at_k(ranked: Sequence[str], gold: Sequence[str], k: int) -> float:
    """1.0 when any gold id is in the top k of `ranked`."""
    return float(any(r in set(gold) for r in ranked[:k]))


def reciprocal_rank(ranked: Sequence[str], gold: Sequence[str]) -> float:
    """1/rank of the first gold id in `ranked`, 0.0 when none is there."""
    for i, r in enumerate(ranked, start=1):
        if r in set(gold):
            return 1.0 / i
    return 0.0


def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """A keyword as a whole token: "$29" does not match "$290", "34" not "1340".

    Case and spacing are loose ("135 °F" matches "135°F"), so a right answer is not failed on form.
    """
    parts = [re.escape(p) for p in keyword.split()]
    body = r"\s*".join(parts)
    head = r"(?<![0-9a-z])" if keyword[:1].isalnum() else ""
    tail = r"(?![0-9a-z])" if keyword[-1:].isalnum() else ""
    return re.compile(head + body + tail, re.IGNORECASE)


def keyword_coverage(answer: str, keywords: Sequence[str]) -> float:
    """Share of the keywords that the answer states, each matched as a whole token."""
    if not keywords:
        return 1.0
    return sum(bool(keyword_pattern(k).search(answer)) for k in keywords) / len(keywords)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 13) -> dict[str, float]:
    """Mean of b - a with a 95% bootstrap interval over paired items."""
    if not a:
        return {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return {"mean": sum(diffs) / n, "lo": means[int(0.025 * n_boot)], "hi": means[int(0.975 * n_boot) - 1]}

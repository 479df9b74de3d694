"""Routing eval: every chosen backend over the test split (or any labelled file).

Each backend is measured as itself (no fallback): a backend that cannot run here is reported as
skipped with the reason. Questions are routed one at a time so the latency is what a user sees.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from core.categories import LabelSet
from core.schemas import RoutingExample
from core.settings import Settings
from eval import metrics
from router.base import Route
from router.registry import load_router


@dataclass
class BackendResult:
    name: str
    routes: list[Route]
    gold: list[str]
    questions: list[str]

    @property
    def predicted(self) -> list[str | None]:
        return [r.category for r in self.routes]

    def summary(self, labels: LabelSet) -> dict[str, Any]:
        """The per-backend block of `--json` (exact keys per the issue) plus report extras."""
        pred, gold = self.predicted, self.gold
        hits = sum(p == g for p, g in zip(pred, gold, strict=True))
        n = len(gold)
        correct = [p == g for p, g in zip(pred, gold, strict=True)]
        confidences = [r.confidence for r in self.routes]
        latencies = [r.latency_ms for r in self.routes]
        lo, hi = metrics.wilson_interval(hits, n)
        return {
            "accuracy": hits / n if n else 0.0,
            "accuracy_ci": [lo, hi],
            "macro_f1": metrics.macro_f1(gold, pred, labels.ids),
            "invalid_rate": sum(p is None for p in pred) / n if n else 0.0,
            "ece": metrics.expected_calibration_error(confidences, correct),
            "latency_ms": {"p50": metrics.percentile(latencies, 50), "p95": metrics.percentile(latencies, 95)},
            "per_category": metrics.per_category(gold, pred, labels.ids),
        }

    def misrouted(self) -> list[dict[str, Any]]:
        rows = []
        for question, route, gold in zip(self.questions, self.routes, self.gold, strict=True):
            if route.category != gold:
                rows.append(
                    {
                        "question": question,
                        "gold": gold,
                        "predicted": route.category,
                        "top2": [[c, round(p, 3)] for c, p in route.top(2)],
                        "raw_output": route.raw_output,
                    }
                )
        return rows


def split_known(examples: list[RoutingExample], labels: LabelSet) -> tuple[list[RoutingExample], dict[str, int]]:
    """Examples whose label the model knows, and a count of the unknown labels (reported, not crashed on)."""
    known, unknown = [], {}
    for e in examples:
        if e.category in labels:
            known.append(e)
        else:
            unknown[e.category] = unknown.get(e.category, 0) + 1
    return known, unknown


def run_backend(name: str, settings: Settings, labels: LabelSet, examples: list[RoutingExample]) -> BackendResult:
    """Route every example with one backend (loaded without fallback)."""
    from tqdm import tqdm

    router = load_router(name, settings, labels, fallback=False).router
    routes = [
        router.route(e.question) for e in tqdm(examples, desc=name, file=sys.stderr, disable=not sys.stderr.isatty())
    ]
    return BackendResult(name, routes, [e.category for e in examples], [e.question for e in examples])


def markdown(
    dataset: str,
    n: int,
    results: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    unknown: dict[str, int],
    misrouted: dict[str, list[dict[str, Any]]],
    command: str,
) -> str:
    lines = [f"# Routing eval — {dataset}", "", f"`{command}`", "", f"{n} questions.", ""]
    lines += [
        "| backend | accuracy (95% CI) | macro-F1 | invalid | ECE | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lo, hi = r["accuracy_ci"]
        lines.append(
            f"| {name} | {r['accuracy']:.1%} ({lo:.1%}–{hi:.1%}) | {r['macro_f1']:.3f} | {r['invalid_rate']:.1%} | "
            f"{r['ece']:.3f} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} |"
        )
    for name, why in skipped.items():
        lines.append(f"| {name} | skipped: {why} | | | | | |")
    if unknown:
        lines += ["", f"Labels unknown to the model (excluded): {unknown}"]
    if results:
        names = list(results)
        cats = list(next(iter(results.values()))["per_category"])
        lines += [
            "",
            "## Recall per category",
            "",
            "| category | n | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for cat in cats:
            n_cat = results[names[0]]["per_category"][cat]["n"]
            cells = " | ".join(f"{results[b]['per_category'][cat]['recall']:.0%}" for b in names)
            lines.append(f"| {cat} | {n_cat} | {cells} |")
    for name, rows in misrouted.items():
        lines += [
            "",
            f"## Misrouted by {name} ({len(rows)})",
            "",
            "| question | gold | predicted | top-2 |",
            "|---|---|---|---|",
        ]
        for row in rows[:60]:
            top = ", ".join(f"{c} {p:.2f}" for c, p in row["top2"])
            question = row["question"].replace("|", "/")
            lines.append(f"| {question} | {row['gold']} | {row['predicted']} | {top} |")
    lines += ["", "Confusion matrices: `confusion-<backend>.png`; calibration: `reliability.png`."]
    return "\n".join(lines) + "\n"

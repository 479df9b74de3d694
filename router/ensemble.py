"""The `ensemble` router: the llm and embedding routers' log-probabilities, mixed.

    log p(label) ∝ w · log p_llm(label) + (1 − w) · log p_embedding(label)

The two routers err on different questions (design.md measured it), so a mix can beat both.
The weight `w` and the filter thresholds are tuned on the validation split and stored in
`models/router-ensemble/meta.json`; the eval decides whether it earns its place.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.categories import LabelSet
from router.base import Route, Router, route_from_scores
from router.meta import label_meta, write_meta
from router.policy import tune

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def mix(p_llm: dict[str, float], p_emb: dict[str, float], weight: float) -> dict[str, float]:
    """Normalised geometric mix of two distributions over the same labels."""
    logs = {c: weight * math.log(max(p_llm[c], 1e-12)) + (1 - weight) * math.log(max(p_emb[c], 1e-12)) for c in p_llm}
    top = max(logs.values())
    exp = {c: math.exp(v - top) for c, v in logs.items()}
    total = sum(exp.values())
    return {c: v / total for c, v in exp.items()}


class EnsembleRouter:
    name = "ensemble"

    def __init__(self, llm: Router, embedding: Router, weight: float, labels: LabelSet) -> None:
        self.llm, self.embedding, self.weight = llm, embedding, weight
        self.codes = {c.id: c.code for c in labels.categories}

    def route(self, question: str) -> Route:
        return self.route_batch([question])[0]

    def route_batch(self, questions: list[str]) -> list[Route]:
        start = time.perf_counter()
        a, b = self.llm.route_batch(questions), self.embedding.route_batch(questions)
        ms = (time.perf_counter() - start) * 1000 / max(len(questions), 1)
        return [
            route_from_scores(mix(x.scores, y.scores, self.weight), self.codes, self.name, ms)
            for x, y in zip(a, b, strict=True)
        ]


def fit_weight(
    llm_routes: list[Route],
    emb_routes: list[Route],
    gold: list[str],
    labels: LabelSet,
    out_dir: Path,
    sources: dict[str, Any],
) -> dict[str, Any]:
    """Pick w on validation routes by accuracy (ties: the larger w), tune thresholds, write meta.json."""
    best_w, best_acc = 0.0, -1.0
    for w in WEIGHTS:
        acc = sum(
            max(mix(a.scores, b.scores, w).items(), key=lambda kv: kv[1])[0] == g
            for a, b, g in zip(llm_routes, emb_routes, gold, strict=True)
        ) / len(gold)
        if acc >= best_acc:
            best_w, best_acc = w, acc
    codes = {c.id: c.code for c in labels.categories}
    mixed = [
        route_from_scores(mix(a.scores, b.scores, best_w), codes, "ensemble", 0.0)
        for a, b in zip(llm_routes, emb_routes, strict=True)
    ]
    policy, utility = tune(mixed, gold)
    meta = {
        "kind": "ensemble",
        "weight_llm": best_w,
        **label_meta(labels),
        "thresholds": policy.to_json(),
        "metrics": {"val_accuracy": round(best_acc, 4), "val_policy_utility": round(utility, 4)},
        "sources": sources,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_meta(out_dir, meta)
    return meta

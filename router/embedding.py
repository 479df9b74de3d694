"""The `embedding` router: MiniLM sentence embeddings + a logistic-regression head.

Fast (a few ms), needs no LLM, and is the fallback when the `llm` router cannot run. The head is
saved as plain arrays (`head.npz`, no pickle) beside its `meta.json`.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.categories import LabelSet
from core.errors import HousechatError
from core.models import MINILM, embed
from core.schemas import RoutingExample
from router.base import Route, route_from_scores
from router.meta import check_labels, label_meta, read_meta, write_meta
from router.policy import FilterPolicy, tune

C_GRID = (1.0, 4.0, 16.0, 64.0)


class EmbeddingRouter:
    name = "embedding"

    def __init__(self, coef: Any, intercept: Any, labels: LabelSet, policy: FilterPolicy | None = None) -> None:
        self.coef, self.intercept, self.labels = coef, intercept, labels
        self.policy = policy or FilterPolicy()
        self.codes = {c.id: c.code for c in labels.categories}

    @classmethod
    def load(cls, model_dir: Path, labels: LabelSet) -> EmbeddingRouter:
        import numpy as np

        meta = read_meta(model_dir, "python -m finetune embedding")
        check_labels(meta, labels, Path(model_dir))
        if meta.get("embedding_model") != MINILM:
            raise HousechatError(f"{model_dir}: head was fit on {meta.get('embedding_model')} embeddings — refit it")
        head = np.load(Path(model_dir) / "head.npz")
        return cls(head["coef"], head["intercept"], labels, FilterPolicy.from_json(meta.get("thresholds")))

    def probabilities(self, questions: list[str]) -> Any:
        import numpy as np

        logits = embed(questions) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def route(self, question: str) -> Route:
        return self.route_batch([question])[0]

    def route_batch(self, questions: list[str]) -> list[Route]:
        start = time.perf_counter()
        probs = self.probabilities(questions)
        ms = (time.perf_counter() - start) * 1000 / max(len(questions), 1)
        ids = self.labels.ids
        return [
            route_from_scores(dict(zip(ids, map(float, row), strict=True)), self.codes, self.name, ms) for row in probs
        ]


def fit(
    train: list[RoutingExample], val: list[RoutingExample], labels: LabelSet, out_dir: Path, data_hash: str = ""
) -> dict[str, Any]:
    """Fit the head on train, pick C and the filter thresholds on val, save head + meta.json."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    index = {c: i for i, c in enumerate(labels.ids)}
    x_train, x_val = embed([e.question for e in train]), embed([e.question for e in val])
    y_train = np.array([index[e.category] for e in train])
    y_val = np.array([index[e.category] for e in val])
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=3000).fit(x_train, y_train)
        acc = float((clf.predict(x_val) == y_val).mean())
        if acc > best[0]:
            best = (acc, c, clf)
    val_acc, c_best, clf = best
    # Full-width arrays even if a label is absent from train (its logit stays very low).
    coef = np.full((len(labels), x_train.shape[1]), 0.0, dtype=np.float32)
    intercept = np.full(len(labels), -30.0, dtype=np.float32)
    coef[clf.classes_] = clf.coef_
    intercept[clf.classes_] = clf.intercept_
    router = EmbeddingRouter(coef, intercept, labels)
    routes = router.route_batch([e.question for e in val])
    policy, utility = tune(routes, [e.category for e in val])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "head.npz", coef=coef, intercept=intercept)
    meta = {
        "kind": "embedding",
        "embedding_model": MINILM,
        "classifier": f"LogisticRegression(C={c_best})",
        **label_meta(labels),
        "data_hash": data_hash,
        "thresholds": policy.to_json(),
        "metrics": {"val_accuracy": round(val_acc, 4), "val_policy_utility": round(utility, 4), "n_train": len(train)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_meta(out_dir, meta)
    return meta

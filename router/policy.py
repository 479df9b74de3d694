"""FilterPolicy: a Route becomes a Chroma `where` (one category, the top two, or none).

Its two thresholds are tuned on the validation split and stored in the router's meta.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from router.base import Route

# Utility of each outcome for retrieval, used to tune the thresholds: a correct single filter is
# best, a pair that holds the gold category nearly as good, no filter is the unrouted baseline,
# and a filter that excludes the gold category hides the right notes (the costly mistake).
UTILITY = {"single_right": 1.0, "pair_right": 0.9, "none": 0.75, "wrong": 0.0}


@dataclass(frozen=True)
class FilterPolicy:
    """`single`: min top-1 probability for a one-category filter.
    `pair`: min top-1 + top-2 probability for an `$in` filter on the two."""

    single: float = 0.6
    pair: float = 0.8

    def where(self, route: Route) -> dict[str, Any] | None:
        if route.category is None or not route.scores:
            return None
        top = route.top(2)
        if top[0][1] >= self.single:
            return {"category": top[0][0]}
        if len(top) > 1 and top[0][1] + top[1][1] >= self.pair:
            return {"category": {"$in": [top[0][0], top[1][0]]}}
        return None

    def outcome(self, route: Route, gold: str) -> str:
        where = self.where(route)
        if where is None:
            return "none"
        value = where["category"]
        if isinstance(value, str):
            return "single_right" if value == gold else "wrong"
        return "pair_right" if gold in value["$in"] else "wrong"

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> FilterPolicy:
        return cls(**{k: float(v) for k, v in (data or {}).items() if k in ("single", "pair")})


def tune(routes: list[Route], gold: list[str]) -> tuple[FilterPolicy, float]:
    """The thresholds with the best mean utility on (validation) routes (ties keep the lowest)."""
    grid = [round(0.05 * i, 2) for i in range(4, 20)] + [0.97, 0.99]
    best, best_utility = FilterPolicy(), float("-inf")
    for single in grid:
        for pair in (p for p in grid if p >= single):
            policy = FilterPolicy(single, pair)
            utility = sum(UTILITY[policy.outcome(r, g)] for r, g in zip(routes, gold, strict=True))
            if utility > best_utility + 1e-9:
                best, best_utility = policy, utility
    return best, best_utility / max(len(routes), 1)

"""The `Router` interface and the `Route` it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass
class Route:
    """Where a question goes and how sure the router is.

    `scores` covers every label of the label set (probabilities summing to 1) except for the
    `off` router and for generate mode, whose output is parsed text.
    """

    category: str | None
    code: str | None
    confidence: float
    scores: dict[str, float]
    backend: str
    latency_ms: float = 0.0
    fallback_reason: str | None = None
    raw_output: str | None = None  # generate mode: the text the model produced

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        return sorted(self.scores.items(), key=lambda kv: kv[1], reverse=True)[:n]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["top"] = [[c, round(p, 4)] for c, p in self.top(3)]
        data["scores"] = {c: round(p, 5) for c, p in self.scores.items()}
        return data


class Router(Protocol):
    """Every backend: `route` one question, `route_batch` many (same results, faster)."""

    name: str

    def route(self, question: str) -> Route: ...

    def route_batch(self, questions: list[str]) -> list[Route]: ...


def route_with_vector(router: Router, question: str, vector: Any) -> Route:
    """Route `question`, letting a router that reads MiniLM vectors reuse `vector` (its embedding).

    A router offers that with `route_vector(question, vector)`; any other router just routes.
    """
    route_vector = getattr(router, "route_vector", None)
    return route_vector(question, vector) if route_vector is not None else router.route(question)


def route_from_scores(scores: dict[str, float], codes: dict[str, str], backend: str, latency_ms: float) -> Route:
    """A `Route` whose category is the arg-max of `scores` (category id -> probability)."""
    best = max(scores, key=lambda c: scores[c])
    return Route(best, codes.get(best), scores[best], scores, backend, latency_ms)

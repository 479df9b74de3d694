"""Backends by name, and the fallback chain `llm → embedding → off`.

`load_router("llm", settings)` returns a router that always answers: when the configured backend
cannot run (no adapter, a refused meta.json, Ollama down) the next one in the chain answers, and
the `Route` says which backend did and why.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.categories import LabelSet, load_categories
from core.errors import HousechatError
from core.models import SMOLLM2
from core.settings import Settings
from router.base import Route, Router, route_with_vector
from router.meta import MAKE_EMBEDDING, MAKE_ENSEMBLE, MAKE_LLM, check_labels, read_meta
from router.policy import FilterPolicy

if TYPE_CHECKING:
    from core.store import NoteStore
    from router.llm import RouterHint

FALLBACK = {"llm": "embedding", "ensemble": "embedding", "ollama": "embedding", "embedding": "off"}


class OffRouter:
    """No routing: the A/B switch's 'off' arm (retrieval is unfiltered)."""

    name = "off"

    def route(self, question: str) -> Route:
        return Route(None, None, 0.0, {}, self.name, 0.0)

    def route_batch(self, questions: list[str]) -> list[Route]:
        return [self.route(q) for q in questions]


@dataclass
class LoadedRouter:
    """A router plus the filter policy stored with its model."""

    router: Router
    policy: FilterPolicy
    name: str


def _llm(settings: Settings, labels: LabelSet, generate: bool = False) -> LoadedRouter:
    from router.llm import (
        ClassifierScorer,
        LabelScorer,
        LLMRouter,
        Scorer,
        StoreContext,
        load_adapted_classifier,
        load_adapted_model,
    )

    model_dir = settings.router_model_dir
    meta = read_meta(model_dir, MAKE_LLM)
    check_labels(meta, labels, model_dir, MAKE_LLM)
    scorer: Scorer
    if meta.get("mode", "score") == "classify":
        if generate:
            raise HousechatError(_no_generation(model_dir))
        model, tokenizer = load_adapted_classifier(model_dir, meta["base_model"], settings.var_dir, len(labels))
        context = StoreContext.from_meta(meta, lambda: _vote_store(settings))
        hint = router_hint(settings, labels) if meta.get("router_hint") else None
        scorer = ClassifierScorer(model, tokenizer, labels, context=context, hint=hint)
    else:
        model, tokenizer = load_adapted_model(model_dir, meta["base_model"], settings.var_dir)
        scorer = LabelScorer(model, tokenizer, labels, meta["label_format"])
    if settings.llm_int8:
        from router.quantize import quantize_int8

        quantize_int8(scorer)
    name = "llm-generate" if generate else "llm"
    return LoadedRouter(LLMRouter(scorer, name, generate), FilterPolicy.from_json(meta.get("thresholds")), name)


def _zero_shot(settings: Settings, labels: LabelSet) -> LoadedRouter:
    from core.models import load_causal_lm
    from router.llm import LabelScorer, LLMRouter

    model, tokenizer = load_causal_lm(SMOLLM2, settings.var_dir)
    scorer = LabelScorer(model, tokenizer, labels, "names", with_scopes=True)
    return LoadedRouter(LLMRouter(scorer, "zero-shot"), FilterPolicy(), "zero-shot")


def router_hint(settings: Settings, labels: LabelSet) -> RouterHint:
    """The guesses of the household's embedding router (adapted to its store), for a head trained with them."""
    from router.adapt import AdaptingRouter
    from router.llm import RouterHint

    guesser = _embedding(settings, labels).router
    assert isinstance(guesser, AdaptingRouter)
    return RouterHint(lambda questions, vectors: guesser.current().route_batch(questions, vectors))


def _embedding(settings: Settings, labels: LabelSet) -> LoadedRouter:
    import sys

    from router.adapt import AdaptingRouter

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    # The household's store holds notes filed under the categories file. A head trained on another
    # label set (an intent data set such as BANKING77) has nothing to learn or vote from there: it
    # routes with its head alone, and never writes an adapted head for the household's store.
    household = labels.fingerprint() == load_categories(settings.categories_file).fingerprint()
    open_store = (lambda: _vote_store(settings)) if household else (lambda: None)
    router = AdaptingRouter(settings, labels, open_store, log)
    return LoadedRouter(router, router.policy, "embedding")


def _vote_store(settings: Settings) -> NoteStore | None:
    """The store the router votes with: the one `settings` point at (None until it is ingested)."""
    from core.store import StoreMissing, open_store

    try:
        return open_store(settings, create=False)
    except StoreMissing:
        return None


def _ollama(settings: Settings, labels: LabelSet) -> LoadedRouter:
    from router.ollama_router import OllamaRouter

    router = OllamaRouter(settings.ollama_host, settings.ollama_router_model, labels)
    router.check()
    router.check_labels()
    return LoadedRouter(router, router.policy(), "ollama")


def _ensemble(settings: Settings, labels: LabelSet) -> LoadedRouter:
    from router.ensemble import EnsembleRouter

    folder = settings.ensemble_router_dir
    meta = read_meta(folder, MAKE_ENSEMBLE)
    check_labels(meta, labels, folder, MAKE_ENSEMBLE)
    llm, embedding = _llm(settings, labels), _embedding(settings, labels)
    router = EnsembleRouter(llm.router, embedding.router, float(meta["weight_llm"]), labels)
    return LoadedRouter(router, FilterPolicy.from_json(meta.get("thresholds")), "ensemble")


def _off(settings: Settings, labels: LabelSet) -> LoadedRouter:
    return LoadedRouter(OffRouter(), FilterPolicy(), "off")


BACKENDS: dict[str, Callable[[Settings, LabelSet], LoadedRouter]] = {
    "llm": _llm,
    "llm-generate": lambda s, lab: _llm(s, lab, generate=True),
    "zero-shot": _zero_shot,
    "embedding": _embedding,
    "ollama": _ollama,
    "ensemble": _ensemble,
    "off": _off,
}


class FallbackRouter:
    """The next router in the chain answers when the configured one cannot, and every Route says why.

    One job at two moments: built with `reason` (and no `primary`), the configured backend could
    not load and `fallback` answers every question; built with a `primary`, that one routes and a
    question it fails on at route time (Ollama gone away) is handed to `fallback`.
    """

    def __init__(self, fallback: Router, *, primary: Router | None = None, reason: str | None = None) -> None:
        if (primary is None) == (reason is None):
            raise ValueError("give either the primary router or the reason it could not load")
        self.primary, self.fallback, self.reason = primary, fallback, reason
        self.name = (primary or fallback).name

    def route(self, question: str) -> Route:
        if self.primary is None:
            return _noted(self.fallback.route(question), self.reason)
        try:
            return self.primary.route(question)
        except HousechatError as exc:
            return _noted(self.fallback.route(question), f"{self.primary.name}: {exc}")

    def route_vector(self, question: str, vector: Any) -> Route:
        """`route`, passing the question's MiniLM vector on to whichever router answers."""
        if self.primary is None:
            return _noted(route_with_vector(self.fallback, question, vector), self.reason)
        try:
            return route_with_vector(self.primary, question, vector)
        except HousechatError as exc:
            return _noted(route_with_vector(self.fallback, question, vector), f"{self.primary.name}: {exc}")

    def route_batch(self, questions: list[str]) -> list[Route]:
        if self.primary is None:
            return [_noted(r, self.reason) for r in self.fallback.route_batch(questions)]
        return [self.route(q) for q in questions]


def _noted(route: Route, reason: str | None) -> Route:
    """`route` with `reason` in front of any reason a later router in the chain gave (llm, then embedding)."""
    if reason and route.fallback_reason and reason not in route.fallback_reason:
        route.fallback_reason = f"{reason}; {route.fallback_reason}"
    else:
        route.fallback_reason = route.fallback_reason or reason
    return route


def parse_backends(text: str) -> list[str]:
    """Comma-separated backend names, checked against the registry (an argparse `type=`)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend {', '.join(unknown) or text!r} — choose from {', '.join(BACKENDS)}"
        )
    return names


def load_router(name: str, settings: Settings, labels: LabelSet | None = None, fallback: bool = True) -> LoadedRouter:
    """The named backend, or (with `fallback`) the first in its chain that can run."""
    if name not in BACKENDS:
        raise HousechatError(f"unknown router backend {name!r} — choose one of: {', '.join(BACKENDS)}")
    labels = labels or load_categories(settings.categories_file)
    try:
        loaded = BACKENDS[name](settings, labels)
    except HousechatError as exc:
        if not fallback or name not in FALLBACK:
            raise
        nxt = load_router(FALLBACK[name], settings, labels, fallback=True)
        reason = f"{name} unavailable: {exc}"
        return LoadedRouter(FallbackRouter(nxt.router, reason=reason), nxt.policy, nxt.name)
    if fallback and name == "ollama":
        # Ollama can go down after the check: fall back per question too.
        nxt = load_router(FALLBACK[name], settings, labels, fallback=True)
        loaded = LoadedRouter(FallbackRouter(nxt.router, primary=loaded.router), loaded.policy, loaded.name)
    return loaded


def _no_generation(model_dir: object) -> str:
    return f"{model_dir}: a classification-head router does not generate — use the llm backend"


def availability(settings: Settings) -> dict[str, str | None]:
    """For `--list`: None when a backend can run here, else why not (cheap checks only)."""
    labels = load_categories(settings.categories_file)
    result: dict[str, str | None] = {}
    checks = (
        ("llm", settings.router_model_dir, MAKE_LLM),
        ("embedding", settings.embedding_router_dir, MAKE_EMBEDDING),
        ("ensemble", settings.ensemble_router_dir, MAKE_ENSEMBLE),
    )
    for name, folder, make in checks:
        try:
            check_labels(read_meta(folder, make), labels, folder, make)
            result[name] = None
        except HousechatError as exc:
            result[name] = str(exc)
    result["llm-generate"] = result["llm"]
    if result["llm"] is None and read_meta(settings.router_model_dir, MAKE_LLM).get("mode") == "classify":
        result["llm-generate"] = _no_generation(settings.router_model_dir)
    result["ensemble"] = result["ensemble"] or result["llm"] or result["embedding"]
    try:
        from core.models import smollm2_gguf_path

        smollm2_gguf_path()
        result["zero-shot"] = None
    except HousechatError as exc:
        result["zero-shot"] = str(exc)
    try:
        from router.ollama_router import OllamaRouter

        served = OllamaRouter(settings.ollama_host, settings.ollama_router_model, labels, timeout=3)
        served.check()
        served.check_labels()
        result["ollama"] = None
    except HousechatError as exc:
        result["ollama"] = str(exc)
    result["off"] = None
    return {name: result[name] for name in BACKENDS}  # in the registry's order

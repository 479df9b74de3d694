"""One question through the whole app: route → filter policy → retrieve → answer.

`Pipeline.stream` yields the same growing `Answer` after each step, so a UI can show the route
and the sources at once and the text as it is written; `Pipeline.ask` returns the finished one.
The route switch is per question (`routing=False` is the A/B "router off" arm), so one pipeline
serves every user of the UI; it holds no conversation state.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import HousechatError
from core.retrieval import Retrieval, RetrievedChunk, retrieve
from core.schemas import MAX_QUESTION_CHARS
from core.settings import Settings
from router.base import route_with_vector

if TYPE_CHECKING:
    from app.chain import Answerer, Turn
    from app.grounding import Grounding
    from core.store import NoteStore
    from router.base import Route
    from router.policy import FilterPolicy, RetrievalPlan
    from router.registry import LoadedRouter

DEFAULT_K = 5
SNIPPET_CHARS = 280


@dataclass(frozen=True)
class Source:
    """A note the answer drew on: its best-scoring chunk stands for it."""

    note_id: str
    title: str
    category: str
    date: str
    path: str
    score: float
    snippet: str

    @classmethod
    def from_chunk(cls, chunk: RetrievedChunk) -> Source:
        # A one-paragraph preview: headings dropped (the title says it), whitespace collapsed.
        text = " ".join(" ".join(line for line in chunk.text.splitlines() if not line.startswith("#")).split())
        snippet = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
        return cls(chunk.note_id, chunk.title, chunk.category, chunk.date, chunk.path, chunk.score, snippet)

    def to_json(self) -> dict[str, Any]:
        return {
            "note_id": self.note_id,
            "category": self.category,
            "title": self.title,
            "score": round(self.score, 4),
            "path": self.path,
        }


@dataclass
class Answer:
    """A question's answer so far, its route, sources, who answered, and stage timings in ms."""

    question: str
    route: Route
    where: dict[str, Any] | None
    widened: bool
    sources: list[Source]
    answerer: Answerer
    text: str = ""
    done: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # route, retrieve, first_token, answer, total
    filter_mode: str = "none"  # how retrieval used the route: hard, soft, lift or none (router.policy)
    chunks: list[RetrievedChunk] = field(default_factory=list)  # what the answerer read
    grounding: Grounding | None = None  # set when the answer is done

    def to_json(self) -> dict[str, Any]:
        """The `app ask --json` document."""
        return {
            "answer": self.text,
            "grounding": self.grounding.to_json() if self.grounding else None,
            "answerer": f"{self.answerer.name}:{self.answerer.model}",
            "route": {
                "category": self.route.category,
                "confidence": round(self.route.confidence, 4),
                "backend": self.route.backend,
                "latency_ms": round(self.route.latency_ms, 2),
                "filter": self.where,
                "filter_mode": self.filter_mode,
                "widened": self.widened,
            },
            "sources": [s.to_json() for s in self.sources],
        }


@dataclass(frozen=True)
class Status:
    """What the status line shows: who answers, which router, how many notes."""

    answerer: Answerer
    router: str
    router_note: str | None
    notes: int
    chunks: int
    store: str
    router_state: str | None = None  # e.g. "adapted to this store (102 notes, 528 names), current"


def check_question(question: str) -> str:
    """The question, stripped, or a `HousechatError` saying why it cannot be asked.

    Runs before any model does: an empty, oversized or undecodable question costs nothing.
    """
    question = question.strip()
    if not question:
        raise HousechatError("the question is empty — type a question about the house")
    if len(question) > MAX_QUESTION_CHARS:
        raise HousechatError(
            f"the question is {len(question):,} characters, over the {MAX_QUESTION_CHARS:,} limit — "
            "ask it in a sentence or two (the notes hold the details)"
        )
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes on the command line arrive as lone surrogates
        raise HousechatError(
            "the question is not valid UTF-8 text — type it again (or set the terminal to UTF-8)"
        ) from None
    return question


def search_query(question: str, history: Sequence[Turn]) -> str:
    """What is routed and retrieved: the question, after the previous one when there is history.

    A follow-up ("and how much did that cost?") names nothing by itself; with the question before
    it, the route and the notes stay on the same topic. The answer model sees the whole history.
    """
    previous = [text for role, text in history if role == "user" and text.strip()]
    return f"{previous[-1].strip()}\n{question}" if previous else question


class Pipeline:
    """The app's one shared object: the store, the routers by backend, and the answerer."""

    def __init__(
        self,
        settings: Settings,
        store: NoteStore,
        answerer: Answerer,
        router: LoadedRouter,
        k: int = DEFAULT_K,
        backend: str | None = None,
    ) -> None:
        self.settings, self.store, self.answerer, self.k = settings, store, answerer, k
        self._routers: dict[str, LoadedRouter] = {backend or settings.router_backend: router}
        self._lock = threading.Lock()  # router backends keep caches; route one question at a time
        self._word_counts: tuple[int, Any] | None = None  # (store generation, WordCounts)

    @classmethod
    def load(
        cls,
        settings: Settings,
        max_new_tokens: int | None = None,
        k: int = DEFAULT_K,
        routing: bool = True,
        warm: bool = False,
    ) -> Pipeline:
        """Open the store (it must hold notes), load the router and the answerer.

        `routing=False` (a one-shot `app ask --router off`) loads no router model at all. `warm`
        runs one question through the router so lazy weights load now and the first badge shows a
        real latency: worth it for the UI, wasted on a one-shot question.
        """
        from app.chain import DEFAULT_MAX_NEW_TOKENS, load_answerer
        from core.store import open_store
        from router.registry import load_router

        store = open_store(settings, create=False)
        if not store.has_notes():
            raise HousechatError(empty_store_message(store.location))
        answerer = load_answerer(settings, max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
        backend = settings.router_backend if routing else "off"
        loaded = load_router(backend, settings)
        pipeline = cls(settings, store, answerer, loaded, k, backend)
        pipeline.word_counts()  # counted now, not in the first answer's time
        if warm:
            loaded.router.route("warm up")
            warm_sentences(store, answerer)
        return pipeline

    def router(self, backend: str | None = None) -> LoadedRouter:
        """The router for `backend` (default: the configured one), loaded once and kept."""
        from router.registry import load_router

        name = backend or self.settings.router_backend
        with self._lock:
            if name not in self._routers:
                self._routers[name] = load_router(name, self.settings)
            return self._routers[name]

    def status(self) -> Status:
        """The status line's facts, counted now (an ingest may have run since start)."""
        loaded = self.router()
        notes, chunks = self.store.counts()
        describe = getattr(loaded.router, "describe", None)  # the adapting embedding router says if it is current
        return Status(
            self.answerer,
            loaded.name,
            getattr(loaded.router, "reason", None),
            notes,
            chunks,
            self.store.location,
            describe() if describe else None,
        )

    def stream(
        self, question: str, history: Sequence[Turn] = (), routing: bool = True, backend: str | None = None
    ) -> Iterator[Answer]:
        """The answer after routing and retrieval (no text yet), then after each piece of text.

        The last one is `done`: its text has had citations to notes that were not retrieved removed,
        and `grounding` says which sentences state facts the cited notes do not (app.grounding).
        """
        from app.chain import chain_inputs, stream_answer
        from app.grounding import check

        question = check_question(question)
        start = time.perf_counter()
        query = search_query(question, history)
        loaded = self.router(backend if routing else "off")
        vector = self.store.embed([query])[0]  # once: the router, retrieval and the answerer share it
        with self._lock:
            route = route_with_vector(loaded.router, query, vector)
        routed = time.perf_counter()
        plan, found = self.find(query, route, loaded, query_vector=vector)
        retrieved = time.perf_counter()
        answer = Answer(
            question,
            route,
            plan.where,
            found.widened,
            _sources(found.chunks),
            self.answerer,
            timings={"route": _ms(start, routed), "retrieve": _ms(routed, retrieved)},
            filter_mode=plan.mode,
            chunks=list(found.chunks),
        )
        yield answer
        inputs = chain_inputs(question, found.chunks, history, vector)
        inputs["word_counts"] = self.word_counts()
        for answerer, piece in stream_answer(self.answerer, inputs):
            if not answer.text:
                answer.timings["first_token"] = _ms(retrieved, time.perf_counter())
            answer.answerer = answerer
            answer.text += piece
            yield answer
        end = time.perf_counter()
        answer.text, answer.grounding = check(answer.text.strip(), found.chunks)
        answer.timings.update(answer=_ms(retrieved, end), total=_ms(start, end))
        answer.done = True
        yield answer

    def word_counts(self) -> Any:
        """The store's word counts (`app.extractive.WordCounts`) for the extractive answerer's rare-word
        features, counted once per store generation (~0.3 s for 1,000 chunks); None for other answerers."""
        if not any(a is not None and a.name == "extractive" for a in (self.answerer, self.answerer.fallback)):
            return None
        from app.extractive import WordCounts

        generation = self.store.generation()
        with self._lock:
            if self._word_counts is None or self._word_counts[0] != generation:
                counts = WordCounts.of(RetrievedChunk.from_hit(hit) for hit in self.store.documents())
                self._word_counts = (generation, counts)
            return self._word_counts[1]

    def find(
        self,
        query: str,
        route: Route,
        loaded: LoadedRouter,
        filter_mode: str | None = None,
        hybrid: bool | None = None,
        query_vector: Any = None,
    ) -> tuple[RetrievalPlan, Retrieval]:
        """The chunks for a routed query: the router's policy plans (hard, soft or no filter), then search.

        `filter_mode` and `hybrid` default to the settings (the eval tries the others); `query_vector`
        is the query's embedding when the caller has it (embedded once per question).
        """
        policy = loaded.policy.with_mode(filter_mode or self.settings.filter_mode)
        hybrid = self.settings.hybrid if hybrid is None else hybrid
        return plan_and_retrieve(self.store, query, route, policy, self.k, hybrid, query_vector)

    def ask(
        self, question: str, history: Sequence[Turn] = (), routing: bool = True, backend: str | None = None
    ) -> Answer:
        """The finished answer to one question."""
        for answer in self.stream(question, history, routing, backend):
            if answer.done:
                return answer
        raise AssertionError("the stream ended without a finished answer")


def plan_and_retrieve(
    store: NoteStore,
    query: str,
    route: Route,
    policy: FilterPolicy,
    k: int,
    hybrid: bool,
    query_vector: Any = None,
) -> tuple[RetrievalPlan, Retrieval]:
    """Retrieval for a routed query: the policy plans a hard, soft or no filter for the route's band."""
    plan = policy.plan(route)
    found = retrieve(
        store,
        query,
        k,
        plan.where,
        hybrid=hybrid,
        boost=plan.boost,
        query_vector=query_vector,
        open_notes=plan.open_notes,
        lift=plan.mode == "lift",
    )
    return plan, found


def warm_sentences(store: NoteStore, answerer: Answerer) -> Callable[[], None] | None:
    """In the background, embed every stored chunk's sentences for the extractive answerer (UI start).

    Answers asked meanwhile still work; they just embed their own chunks' sentences. Returns the
    function that stops the warm-up and waits for it (also registered to run at exit).
    """
    extractive = next((a for a in (answerer, answerer.fallback) if a is not None and a.name == "extractive"), None)
    if extractive is None:
        return None

    stop = threading.Event()

    def run() -> None:
        try:
            hits = store.documents()
            extractive.chat_model.warm(RetrievedChunk.from_hit(hit) for hit in hits if not stop.is_set())
        except Exception as exc:  # a warm-up is an optimisation: never take the app down
            print(f"note: could not pre-embed the notes' sentences ({exc})", file=sys.stderr)

    def finish() -> None:
        # A process that exits while this thread is inside torch aborts ("terminate called without
        # an active exception", exit 134): stop taking chunks and let the current batch finish.
        stop.set()
        thread.join(timeout=120)

    thread = threading.Thread(target=run, name="warm-sentences", daemon=True)
    thread.start()
    atexit.register(finish)
    return finish


def empty_store_message(location: str) -> str:
    """What to do about a store without notes."""
    return (
        f"the store at {location} has no notes — run `python -m ingest` (data/notes by default) and start again, "
        "or start with `make chat`, which ingests data/notes when the store is empty"
    )


def _sources(chunks: Sequence[RetrievedChunk]) -> list[Source]:
    """One source per note, in rank order (a note's best chunk comes first)."""
    best: dict[str, RetrievedChunk] = {}
    for chunk in chunks:
        best.setdefault(chunk.note_id, chunk)
    return [Source.from_chunk(c) for c in best.values()]


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 1)

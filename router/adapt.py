"""The embedding router follows the household in its store, with no training command run by hand.

The committed head learned the routing questions and one household's notes. For a store that holds
other notes (another family, or this one after edits) the router keeps that head and adds what the
store knows, with nothing refit:

- the *store vote*: the categories of the question's top chunks in an unfiltered search, mixed in
  log space at `ADAPTED_VOTE_WEIGHT` (the committed head's own, lower weight was picked on val for
  the household it already knows);
- the household's *names*: each vendor, person, product or model number written capitalised in the
  chunks and never in lower case, labelled with the category that holds most of its mentions
  ("Bogdan" -> hvac). A question that says one leans to that category by `NAME_WEIGHT`.

Adapting reads the chunks' texts once (no embedding at all), in well under a second. What was
learned lives in `var/router-adapted/<store key>/meta.json`, one per store, so one household's
knowledge never leaks into another's. `AdaptingRouter` checks the store's generation on every
question (cheap) and re-reads the names when an ingest changed it, so a running UI picks it up.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.categories import LabelSet
from core.errors import HousechatError
from core.settings import Settings
from router.base import Route
from router.embedding import NAME_TOKEN, EmbeddingRouter
from router.meta import MAKE_EMBEDDING, check_labels, read_meta, write_meta

if TYPE_CHECKING:
    from core.store import NoteStore

# Bumped when adaptation learns differently: stores adapted by an older version are adapted again.
# 2: names as examples in a refit head; 3: no refit, the committed head + vote + names; 4: vote weight 2.0
ADAPT_VERSION = 4
# Picked on the dev files (the routing.jsonl of the two households the committed routers never saw,
# data/households/vossberg and adeyemi-holm, and the dev half of adeyemi-holm's qa.jsonl) with
# `python -m benchmarks.adapt --sweep`: with the head refit on 7-bit int8 vectors, 281 of 310 right
# at vote weight 2.0 and name weight 4 (280-281 for vote 1.6-2.0 x names 2-4); the head before it
# peaked at vote 2.5 (284, version 3). Without the names, at vote weight 0.9: 248
# (docs/results/routing.md, "Adapting without a refit").
ADAPTED_VOTE_WEIGHT = 2.0
NAME_WEIGHT = 4.0  # added to a category's logit for each of its names the question says
# A name joins the category holding at least this share of the chunks that mention it. Picked on the
# same dev questions, with the refit head of version 2: 268 of 310 right without names, 284 at 0.5,
# 283 at 0.6, 281 at 0.8 (docs/results/routing.md).
NAME_SHARE = 0.5
_NAME = re.compile(r"\b[A-Z][\w'’]*(?:-[A-Z0-9]\w*)*\b|\b[A-Z]{1,5}-?\d[\w-]*\b")


def name_examples(texts: list[str], categories: list[str], share: float = NAME_SHARE) -> list[tuple[str, str]]:
    """(name, category) for each capitalised word or model number of `texts` that is never written in
    lower case there (so not a sentence's first common word) and whose mentions mostly (`share`) fall in
    one category's chunks; months and the family's own names mostly spread out and drop away."""
    from collections import Counter, defaultdict

    lower: set[str] = set()
    mentions: dict[str, Counter[str]] = defaultdict(Counter)
    for text, category in zip(texts, categories, strict=True):
        lower.update(w.lower() for w in NAME_TOKEN.findall(text) if w[0].islower())
        for name in set(_NAME.findall(text)):
            mentions[name][category] += 1
    out = []
    for name, counts in mentions.items():
        if len(name) < 3 or name.lower() in lower:
            continue
        category, n = counts.most_common(1)[0]
        if n >= share * sum(counts.values()):
            out.append((name, category))
    return sorted(out)


def store_fingerprint(store: NoteStore, hashes: dict[str, str] | None = None) -> str:
    """Which notes (ids and content hashes) a store holds: equal fingerprints, same household knowledge."""
    hashes = store.note_hashes() if hashes is None else hashes
    lines = sorted(f"{note_id}:{digest}" for note_id, digest in hashes.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def adapted_dir(settings: Settings) -> Path:
    """Where the head adapted to the store `settings` point at lives (one folder per store)."""
    where = settings.chroma_url or str(Path(settings.store).resolve())
    key = hashlib.sha256(f"{where}|{settings.collection}".encode()).hexdigest()[:12]
    return settings.var_dir / "router-adapted" / key


def adapt(base_dir: Path, store: NoteStore, labels: LabelSet, out_dir: Path) -> dict[str, Any]:
    """Learn `store`'s names for the head in `base_dir`; write them and the mix weights to `out_dir`; return the meta."""
    from core.store import indexed_text

    start = time.perf_counter()
    base = read_meta(base_dir, MAKE_EMBEDDING)
    if base.get("encoder"):
        raise HousechatError(
            f"{base_dir}: its MiniLM was fine-tuned, the store's vectors are the stock MiniLM's — "
            "refit without --fine-tune-epochs to route a household's store"
        )
    known = set(labels.ids)
    chunks = [hit for hit in store.documents() if str(hit.metadata.get("category")) in known]
    texts = [indexed_text(str(hit.metadata.get("title", "")), hit.text) for hit in chunks]
    names = name_examples(texts, [str(hit.metadata["category"]) for hit in chunks])
    hashes = store.note_hashes()
    meta = {
        **{k: v for k, v in base.items() if k not in ("metrics", "created", "store")},
        "vote_weight": ADAPTED_VOTE_WEIGHT,
        "name_weight": NAME_WEIGHT,
        "adapt_version": ADAPT_VERSION,
        "adapted_from": {"dir": str(base_dir), "data_hash": base.get("data_hash"), "created": base.get("created")},
        "store": {
            "location": store.location,
            "fingerprint": store_fingerprint(store, hashes),
            "generation": store.generation(),
            "notes": len(hashes),
            "chunks": len(chunks),
        },
        "metrics": {"n_names": len(names), "adapt_s": round(time.perf_counter() - start, 2)},
        "names": dict(names),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_meta(out_dir, meta)
    return meta


def with_adaptation(base: EmbeddingRouter, folder: Path, labels: LabelSet) -> EmbeddingRouter:
    """`base` (the committed head, untouched) with the vote weight and names adapted to a store in `folder`."""
    meta = read_meta(folder, MAKE_EMBEDDING)
    check_labels(meta, labels, Path(folder), MAKE_EMBEDDING)
    router = copy.copy(base)  # shares the head's arrays; a thread routing with `base` is not disturbed
    index = {c: i for i, c in enumerate(labels.ids)}
    router.names = {name.lower(): index[c] for name, c in meta.get("names", {}).items() if c in index}
    router.vote_weight, router.name_weight = float(meta["vote_weight"]), float(meta.get("name_weight", 0.0))
    return router


def current_head(settings: Settings, store: NoteStore) -> Path | None:
    """What is current for `store`: the base head's folder when it learned these very notes, else the
    store's adaptation folder if it was adapted to them; None when the store changed since (adapt it)."""
    base_dir = settings.embedding_router_dir
    base = read_meta(base_dir, MAKE_EMBEDDING)
    fingerprint = store_fingerprint(store)
    if (base.get("store") or {}).get("fingerprint") == fingerprint:
        return base_dir
    out = adapted_dir(settings)
    if (out / "meta.json").exists():
        meta = read_meta(out)
        same_base = (meta.get("adapted_from") or {}).get("created") == base.get("created")
        same_store = (meta.get("store") or {}).get("fingerprint") == fingerprint
        if same_base and same_store and meta.get("adapt_version") == ADAPT_VERSION:
            return out
    return None


def head_for(settings: Settings, store: NoteStore | None, labels: LabelSet, log: Callable[[str], None]) -> Path:
    """The folder to route with for this store (the base head's, or the store's adaptation), adapting first when the store changed."""
    if store is None:
        return settings.embedding_router_dir
    head = current_head(settings, store)
    if head is not None:
        return head
    out = adapted_dir(settings)
    meta = adapt(settings.embedding_router_dir, store, labels, out)
    metrics = meta["metrics"]
    log(
        f"router adapted to {store.location}: {meta['store']['notes']} notes, {metrics['n_names']} names, {metrics['adapt_s']} s"
    )
    return out


class AdaptingRouter:
    """The `embedding` backend: routes with the head for the current store and re-checks it per question."""

    name = "embedding"

    def __init__(
        self,
        settings: Settings,
        labels: LabelSet,
        open_store: Callable[[], NoteStore | None],
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.settings, self.labels, self._open_store, self.log = settings, labels, open_store, log
        self._lock = threading.Lock()
        self._store: NoteStore | None = None
        self._generation: int | None = None
        self._told_no_store = False
        self.head_dir: Path = settings.embedding_router_dir
        self.base = EmbeddingRouter.load(self.head_dir, labels)
        self.inner = self.base
        self.policy = self.base.policy  # the base head's thresholds (tuned on val)

    def current(self) -> EmbeddingRouter:
        """The router for the store as it is now (adapted again when an ingest changed the store)."""
        with self._lock:
            if self._store is None:
                self._store = self._open_store()
            if self._store is None:
                if self.inner.vote_weight and not self._told_no_store:
                    where = self.settings.chroma_url or self.settings.store
                    self.log(
                        f"no store at {where} yet: routing with the committed head alone, without the store "
                        "vote — ingest the notes with `python -m ingest` and it joins on the next question"
                    )
                    self._told_no_store = True
                return self.inner
            generation = self._store.generation()
            if generation != self._generation:
                head = head_for(self.settings, self._store, self.labels, self.log)
                # Re-read every time: a second ingest into the same store adapts into the same folder.
                inner = self.base if head == self.settings.embedding_router_dir else None
                self.inner = inner or with_adaptation(self.base, head, self.labels)
                self.head_dir = head
                self.inner.attach_store(self._store)
                self._generation = generation
            return self.inner

    def describe(self) -> str:
        """For the status line: which head serves the store, and whether it is current (no refit here)."""
        store = self._store or self._open_store()
        if store is None:
            return "no store yet: the committed head alone"
        head = current_head(self.settings, store)
        if head is None:
            return "the store changed: adapts on the next question"
        if head == self.settings.embedding_router_dir:
            return "committed head, current for this store"
        meta = read_meta(head)
        names = meta["metrics"]["n_names"]
        return f"adapted to this store ({meta['store']['notes']} notes, {names} names), current"

    def route(self, question: str) -> Route:
        return self.current().route(question)

    def route_vector(self, question: str, vector: Any) -> Route:
        """`route` reusing the question's MiniLM vector (router.base.route_with_vector)."""
        return self.current().route_vector(question, vector)

    def route_batch(self, questions: list[str]) -> list[Route]:
        return self.current().route_batch(questions)


def status(settings: Settings) -> dict[str, Any]:
    """For `python -m router --status` and the UI: the store, the head in use, and whether it is current.

    Asking adapts a stale head (a few seconds), exactly as the first question after an ingest would.
    """
    from core.categories import load_categories
    from core.store import StoreMissing, open_store

    labels = load_categories(settings.categories_file)
    try:
        store: NoteStore | None = open_store(settings, create=False)
    except StoreMissing:
        store = None
    base = read_meta(settings.embedding_router_dir, "python -m finetune embedding")
    report: dict[str, Any] = {"store": store.location if store else None}
    if store is None:
        report["router"] = f"base head {settings.embedding_router_dir} (no store yet: run `python -m ingest`)"
        report["current"] = False
        return report
    was_current = current_head(settings, store) is not None
    router = AdaptingRouter(settings, labels, lambda: store)
    router.current()
    notes, chunks = store.counts()
    report.update({"generation": store.generation(), "notes": notes, "chunks": chunks})
    if router.head_dir == settings.embedding_router_dir:
        learned = (base.get("store") or {}).get("fingerprint") == store_fingerprint(store)
        report["router"] = f"base head {router.head_dir}" + (" (learned these notes)" if learned else "")
    else:
        meta = read_meta(router.head_dir)
        metrics = meta["metrics"]
        report["router"] = (
            f"committed head, adapted to this store: {metrics['n_names']} names learned in {metrics['adapt_s']} s "
            f"({router.head_dir})"
        )
    inner = router.inner
    report["vote"] = (
        f"top-{inner.vote_k} chunks, score^{inner.vote_power:g}, weight {inner.vote_weight:g}"
        if inner.vote_weight
        else "off"
    )
    report["current"] = was_current if was_current else "no: the store changed since; adapted now"
    return report

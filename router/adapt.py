"""The embedding router follows the household in its store, with no training command run by hand.

The committed head learned the routing questions (fixed) and one household's notes. A store that
holds other notes (another family, or this one after edits) gets its own *adapted* head: the same
questions plus the store's chunks, featurised from the vectors already stored (no second embedding
pass over the chunks, so it works against a Chroma server too), plus the household's *names* as
short examples — a vendor, person, product or model number written capitalised in the chunks and
never in lower case, labelled with the category that holds most of its mentions ("Bogdan" →
hvac), so that a question naming only him leans to the category of the notes that do; only
these few hundred words are embedded. Refit in seconds with the base head's n-gram weight and C.
Adapted heads live in `var/router-adapted/<store key>/`, one per store, so one household's
knowledge never leaks into another's. `AdaptingRouter` checks the store's generation on every
question (cheap) and swaps heads when an ingest changed it, so a running UI picks it up.
"""

from __future__ import annotations

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
from router.embedding import EmbeddingRouter, blocks, char_vectorizer, save_head, word_vectorizer
from router.meta import read_meta, write_meta

if TYPE_CHECKING:
    from core.store import NoteStore

# Bumped when adaptation learns differently: heads adapted by an older version are refit.
ADAPT_VERSION = 2  # 2: the household's names as examples
QUESTIONS_FILE = "questions.npz"  # the fixed part: question texts, labels and MiniLM vectors (fp16)
# An adapted head knows a new household's notes from a few hundred chunks against thousands of
# questions about the first household, so the store vote carries more of the weight there. Picked
# on the second household's routing questions (data/households/vossberg/routing.jsonl), the middle
# of the plateau of best weights (with the top-3, score**4 vote only 1.2 reaches 94.2%); its QA
# questions are the test (docs/results/routing.md, "A new household").
ADAPTED_VOTE_WEIGHT = 1.2
# A name becomes an example of the category holding at least this share of the chunks that mention
# it. Picked on dev questions of two households the committed head never saw (the routing.jsonl
# files of data/households/vossberg and adeyemi-holm, and the dev half of adeyemi-holm's qa.jsonl:
# 268 of 310 right without names, 284 at 0.5, 283 at 0.6, 281 at 0.8; docs/results/routing.md).
NAME_SHARE = 0.5
_NAME = re.compile(r"\b[A-Z][\w'’]*(?:-[A-Z0-9]\w*)*\b|\b[A-Z]{1,5}-?\d[\w-]*\b")
_WORD = re.compile(r"\b\w[\w'-]*\b")


def name_examples(texts: list[str], categories: list[str], share: float = NAME_SHARE) -> list[tuple[str, str]]:
    """(name, category) for each capitalised word or model number of `texts` that is never written in
    lower case there (so not a sentence's first common word) and whose mentions mostly (`share`) fall in
    one category's chunks; months and the family's own names mostly spread out and drop away."""
    from collections import Counter, defaultdict

    lower: set[str] = set()
    mentions: dict[str, Counter[str]] = defaultdict(Counter)
    for text, category in zip(texts, categories, strict=True):
        lower.update(w.lower() for w in _WORD.findall(text) if w[0].islower())
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
    """Refit the head on the base's questions + `store`'s chunks; write it to `out_dir`; return its meta."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    base = read_meta(base_dir, "python -m finetune embedding")
    path = Path(base_dir) / QUESTIONS_FILE
    if not path.exists():
        raise HousechatError(
            f"{base_dir}: no {QUESTIONS_FILE} to adapt from — refit with `python -m finetune embedding`"
        )
    if base.get("encoder"):
        raise HousechatError(
            f"{base_dir}: its MiniLM was fine-tuned, the store's vectors are the stock MiniLM's — "
            "refit without --fine-tune-epochs to route a household's store"
        )
    saved = np.load(path)
    index = {c: i for i, c in enumerate(labels.ids)}
    q_text = [str(t) for t in saved["texts"]]
    q_y = np.array([index[str(c)] for c in saved["categories"]])
    vectors, metas, texts = store.chunk_vectors()
    hashes = store.note_hashes()
    keep = [i for i, m in enumerate(metas) if str(m.get("category")) in index]
    c_text = [texts[i] for i in keep]
    c_y = np.array([index[str(metas[i]["category"])] for i in keep], dtype=int)
    names = name_examples(c_text, [labels.ids[i] for i in c_y])
    weight, c = float(base.get("char_weight", 0.0)), float(base.get("C", 4.0))
    word_weight = float(base.get("word_weight", 0.0))
    parts = [saved["vectors"].astype(np.float32), vectors[keep].reshape(len(keep), -1)]
    if names:
        parts.append(np.asarray(store.embed([n for n, _ in names]), dtype=np.float32).reshape(len(names), -1))
    x = np.vstack(parts)
    texts_all = q_text + c_text + [n for n, _ in names]
    chars = char_vectorizer() if weight else None
    words = word_vectorizer() if word_weight else None
    features = blocks(
        x,
        [
            (weight, chars.fit_transform(texts_all) if chars else None),  # one pass: fit and transform
            (word_weight, words.fit_transform(texts_all) if words else None),
        ],
    )
    y = np.concatenate([q_y, c_y, np.array([index[category] for _, category in names], dtype=int)])
    clf = LogisticRegression(C=c, max_iter=3000).fit(features, y)
    save_head(out_dir, clf, labels, chars, words)
    meta = {
        **{k: v for k, v in base.items() if k not in ("metrics", "created", "store")},
        "vote_weight": ADAPTED_VOTE_WEIGHT,
        "adapt_version": ADAPT_VERSION,
        "adapted_from": {"dir": str(base_dir), "data_hash": base.get("data_hash"), "created": base.get("created")},
        "store": {
            "location": store.location,
            "fingerprint": store_fingerprint(store, hashes),
            "generation": store.generation(),
            "notes": len(hashes),
            "chunks": len(keep),
        },
        "metrics": {
            "n_questions": len(q_text),
            "n_chunks": len(keep),
            "n_names": len(names),
            "refit_s": round(time.perf_counter() - start, 2),
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_meta(out_dir, meta)
    return meta


def current_head(settings: Settings, store: NoteStore) -> Path | None:
    """The head that is current for `store`: the base when it learned these very notes, else the
    store's adapted head if it was fit on them; None when the store changed since (adapt it)."""
    base_dir = settings.embedding_router_dir
    base = read_meta(base_dir, "python -m finetune embedding")
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
    if not (Path(base_dir) / QUESTIONS_FILE).exists():
        return base_dir  # an older head without its questions: the vote alone follows the store
    return None


def head_for(settings: Settings, store: NoteStore | None, labels: LabelSet, log: Callable[[str], None]) -> Path:
    """The head folder to route with for this store, adapting one first when the store changed."""
    if store is None:
        return settings.embedding_router_dir
    head = current_head(settings, store)
    if head is not None:
        return head
    out = adapted_dir(settings)
    meta = adapt(settings.embedding_router_dir, store, labels, out)
    log(f"router adapted to {store.location}: {meta['store']['notes']} notes, {meta['metrics']['refit_s']} s")
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
        self.inner = EmbeddingRouter.load(self.head_dir, labels)
        self.policy = self.inner.policy  # the base head's thresholds (tuned on val)

    def current(self) -> EmbeddingRouter:
        """The head for the store as it is now (refit when an ingest changed the store)."""
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
                if head != self.head_dir:
                    self.inner = EmbeddingRouter.load(head, self.labels)
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
        names = meta["metrics"].get("n_names", 0)
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
            f"adapted head {router.head_dir} (refit in {metrics['refit_s']} s, {metrics.get('n_names', 0)} names learned)"
        )
    inner = router.inner
    report["vote"] = (
        f"top-{inner.vote_k} chunks, score^{inner.vote_power:g}, weight {inner.vote_weight:g}"
        if inner.vote_weight
        else "off"
    )
    report["current"] = was_current if was_current else "no: the store changed since; adapted now"
    return report

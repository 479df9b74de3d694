"""Retrieve the chunks that answer a question, filtered by the router's category, widened when that fails.

The filter comes from the router's filter policy: `{"category": c}`, `{"category": {"$in": [...]}}`
or None. A filtered search that finds fewer than `min_hits` chunks, or none as similar as
`min_score`, is re-run without a filter and the result is marked `widened`: a wrong or too narrow
route then costs precision, not the answer.

`hybrid=True` fuses the vector hits with BM25 keyword hits (`bm25s`) by reciprocal rank, which
helps with exact tokens such as model and serial numbers; the eval measures whether it pays off.

`boost` switches on the *soft* filter: instead of dropping every chunk outside `where`, the
candidates of an unfiltered and a filtered search are ranked together with each chunk's score
raised by `boost[its category]` (the router's probability times a weight, see
`router.policy.FilterPolicy.plan`). A confident right route then lifts its category's chunks over
look-alikes from other categories, while a wrong or unsure one costs only a little: a chunk from
another category that matches much better still wins. Nothing needs widening. With `open_notes`
N, only the chunks of the first N notes of that ranking may come from any category; the rest of
the k places are kept for the routed categories (`where`), so a small household's category that
has fewer than k matching chunks is not padded out with other categories' look-alikes.

`lift=True` is the *lift* filter: the unfiltered ranking with `where`'s chunks moved ahead of the
rest, each keeping its place relative to the others, after the first `open_notes` notes, which
keep theirs whatever their category; chunks only a filtered search finds come last. The hard and
soft filters build new vector and keyword lists, and reciprocal-rank fusion over them can put
another chunk of the category ahead of the one that answers; the lift filter cannot, so a right
route never moves the right note down. It widens like the hard filter.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.store import ChunkMeta, Hit, NoteStore, filter_categories, indexed_text, normalize_where

# Calibrated on data/eval/qa.jsonl (`python -m benchmarks.ingest calibrate`, docs/results/ingest.md):
# with the right category filter 95% of answerable questions find a chunk scoring >= 0.42; with a
# wrong one the best chunk scores 0.30 (median). At 0.4, 91% of wrong filters widen and 4% of right ones.
DEFAULT_MIN_SCORE = 0.4
DEFAULT_MIN_HITS = 2
RRF_K = 60  # the usual reciprocal-rank-fusion constant: rank 1 and rank 5 differ, but not wildly
_BM25_CACHE_SIZE = 8


@dataclass(frozen=True)
class RetrievedChunk:
    """One retrieved chunk with its note's metadata. `score` is its cosine similarity to the question."""

    id: str
    text: str
    score: float
    note_id: str
    category: str
    title: str
    date: str
    path: str
    chunk: int
    heading: str = ""
    line: int = 0

    @classmethod
    def from_hit(cls, hit: Hit) -> RetrievedChunk:
        """A store hit with its metadata unpacked."""
        meta = ChunkMeta.from_metadata(hit.metadata)
        return cls(
            id=hit.id,
            text=hit.text,
            score=hit.score,
            note_id=meta.note_id,
            category=meta.category,
            title=meta.title,
            date=meta.date,
            path=meta.path,
            chunk=meta.chunk,
            heading=meta.heading,
            line=meta.line,
        )


@dataclass(frozen=True)
class Retrieval:
    """The chunks for a question, best first.

    `where` is the filter that was asked for; `widened` is True when it found too little and the
    chunks come from an unfiltered search instead.
    """

    chunks: list[RetrievedChunk]
    where: dict[str, Any] | None
    widened: bool = False
    hybrid: bool = False
    soft: bool = False
    lifted: bool = False

    @property
    def note_ids(self) -> list[str]:
        """Distinct note ids in rank order (what citations and hit@k use)."""
        return list(dict.fromkeys(c.note_id for c in self.chunks))


def retrieve(
    store: NoteStore,
    question: str,
    k: int = 5,
    where: dict[str, Any] | None = None,
    min_hits: int = DEFAULT_MIN_HITS,
    min_score: float = DEFAULT_MIN_SCORE,
    hybrid: bool = False,
    boost: Mapping[str, float] | None = None,
    query_vector: Any = None,
    open_notes: int | None = None,
    lift: bool = False,
) -> Retrieval:
    """The top-k chunks for `question` within `where`, widened to no filter when that finds too little.

    With `boost` (category -> score bonus) the filter is soft: chunks inside and outside `where`
    compete, in-category ones raised by their bonus (module doc); `open_notes` then keeps the places
    after the first that many notes for `where`'s categories. `query_vector` is the question's
    embedding when the caller has it already (the app embeds a question once for the router,
    retrieval and the answerer).
    """
    where = normalize_where(where)
    query = [float(x) for x in (store.embed([question])[0] if query_vector is None else query_vector)]
    if boost is not None:
        chunks = _soft_search(store, question, query, k, where, hybrid, boost)
        return Retrieval(_on_topic_tail(chunks, where, open_notes), where, hybrid=hybrid, soft=True)
    if lift and where is not None:
        chunks = _lifted_search(store, question, query, k, where, hybrid, open_notes)
        allowed = set(filter_categories(where) or ())
        if not _too_weak([c for c in chunks if c.category in allowed], min(min_hits, k), min_score):
            return Retrieval(chunks, where, hybrid=hybrid, lifted=True)
        return Retrieval(_search(store, question, query, k, None, hybrid), where, widened=True, hybrid=hybrid)
    chunks = _search(store, question, query, k, where, hybrid)
    if where is not None and _too_weak(chunks, min(min_hits, k), min_score):
        return Retrieval(_search(store, question, query, k, None, hybrid), where, widened=True, hybrid=hybrid)
    return Retrieval(chunks, where, widened=False, hybrid=hybrid)


def _on_topic_tail(
    chunks: list[RetrievedChunk], where: dict[str, Any] | None, open_notes: int | None
) -> list[RetrievedChunk]:
    """`chunks` without the ones from other categories than `where`'s after the first `open_notes` notes."""
    if not open_notes or where is None:
        return chunks
    value = where["category"]
    allowed = {value} if isinstance(value, str) else set(value["$in"])
    first = list(dict.fromkeys(c.note_id for c in chunks))[:open_notes]
    return [c for c in chunks if c.note_id in first or c.category in allowed]


def _too_weak(chunks: list[RetrievedChunk], min_hits: int, min_score: float) -> bool:
    return len(chunks) < min_hits or max((c.score for c in chunks), default=0.0) < min_score


def _depth(k: int) -> int:
    return max(4 * k, 20)  # fuse deeper lists than we return, or fusion has nothing to reorder


def _search(
    store: NoteStore,
    question: str,
    query: list[float],
    k: int,
    where: dict[str, Any] | None,
    hybrid: bool,
    n: int | None = None,
) -> list[RetrievedChunk]:
    """The top `n` (default k) of the search for the top k: fused lists are as deep as k's."""
    n = n or k
    if not hybrid:
        return [RetrievedChunk.from_hit(h) for h in store.search(query, n, where)]
    vector = store.search(query, _depth(k), where)
    keyword = [cid for cid, _, _ in _bm25_hits(store, question, _depth(k), where)]
    return _fused(store, query, [[h.id for h in vector], keyword], {h.id: h for h in vector}, n)


def _lifted_search(
    store: NoteStore,
    question: str,
    query: list[float],
    k: int,
    where: dict[str, Any],
    hybrid: bool,
    open_notes: int | None,
) -> list[RetrievedChunk]:
    """The unfiltered ranking with `where`'s chunks lifted over the rest (module doc: the lift filter).

    The first `open_notes` notes of the unfiltered ranking keep their places whatever their
    category; after them come the routed categories' chunks of that ranking in its order, then the
    chunks only the filtered search found, in its order. Nothing is re-fused, so a chunk of a routed
    category never falls below a place it had unfiltered."""
    everywhere = _search(store, question, query, k, None, hybrid, n=_depth(k))
    allowed = set(filter_categories(where) or ())
    first = set(list(dict.fromkeys(c.note_id for c in everywhere))[: open_notes or 0])
    kept = [c for c in everywhere if c.category in allowed or c.note_id in first]
    if len(kept) < k:
        seen = {c.id for c in kept}
        kept += [c for c in _search(store, question, query, k, where, hybrid) if c.id not in seen]
    return kept[:k]


def _soft_search(
    store: NoteStore,
    question: str,
    query: list[float],
    k: int,
    where: dict[str, Any] | None,
    hybrid: bool,
    boost: Mapping[str, float],
) -> list[RetrievedChunk]:
    """Candidates from an unfiltered and a `where` search, ranked by score + boost[category]."""
    pools = [None] if where is None else [None, where]
    depth = _depth(k)
    vector: dict[str, Hit] = {}
    for pool in pools:
        for hit in store.search(query, depth, pool):
            vector.setdefault(hit.id, hit)

    def bonus(category: Any) -> float:
        return float(boost.get(str(category), 0.0))

    by_vector = sorted(vector, key=lambda cid: -(vector[cid].score + bonus(vector[cid].metadata.get("category"))))
    if not hybrid:
        return [RetrievedChunk.from_hit(vector[cid]) for cid in by_vector[:k]]
    keyword: dict[str, tuple[float, str]] = {}
    for pool in pools:
        for cid, score, category in _bm25_hits(store, question, depth, pool):
            keyword.setdefault(cid, (score, category))
    top = max((score for score, _ in keyword.values()), default=1.0) or 1.0
    # BM25 scores scaled to 0..1 (like cosines) so the same bonus means the same push in both lists.
    by_keyword = sorted(keyword, key=lambda cid: -(keyword[cid][0] / top + bonus(keyword[cid][1])))
    return _fused(store, query, [by_vector, by_keyword], vector, k)


def _fused(
    store: NoteStore, query: list[float], rankings: list[list[str]], known: dict[str, Hit], k: int
) -> list[RetrievedChunk]:
    """The top k of reciprocal-rank fusion over `rankings`, with cosine scores (fetched when not `known`)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
    top = sorted(fused, key=lambda cid: -fused[cid])[:k]
    scored = {h.id: h for h in store.score_chunks([cid for cid in top if cid not in known], query)}
    return [RetrievedChunk.from_hit(known.get(cid) or scored[cid]) for cid in top if cid in known or cid in scored]


_bm25_cache: OrderedDict[tuple[str, str, int, str], tuple[Any, list[str], Any]] = OrderedDict()


def _bm25_hits(
    store: NoteStore, question: str, depth: int, where: dict[str, Any] | None
) -> list[tuple[str, float, str]]:
    """(chunk id, BM25 score, category) for `question` within `where`, best first.

    A filter on categories alone searches the whole store's index with the other categories masked
    out, so a chunk scores the same with and without the filter (an index of one category would
    weigh words by that category alone: "breaker" is common among electrical notes and rare in the
    store, and the filtered list would then rank the electrical chunks otherwise than the
    unfiltered one). Other filters get their own index. Indexes are cached per store generation.
    """
    import bm25s

    categories = filter_categories(where)
    indexed = None if categories is not None else where
    key = (store.location, store.name, store.generation(), json.dumps(indexed, sort_keys=True))
    if key not in _bm25_cache:
        hits = store.documents(indexed)
        metas = [ChunkMeta.from_metadata(h.metadata) for h in hits]
        texts = [indexed_text(m.title, h.text) for m, h in zip(metas, hits, strict=True)]
        index = bm25s.BM25()
        if texts:
            index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        _bm25_cache[key] = (index, [h.id for h in hits], np.array([m.category for m in metas], dtype=object))
        while len(_bm25_cache) > _BM25_CACHE_SIZE:
            _bm25_cache.popitem(last=False)
    _bm25_cache.move_to_end(key)
    index, ids, cats = _bm25_cache[key]
    mask = None if categories is None else np.isin(cats, categories).astype(np.float32)
    allowed = len(ids) if mask is None else int(mask.sum())
    tokens = bm25s.tokenize([question], stopwords="en", show_progress=False, return_ids=False)
    if not allowed or not tokens[0]:
        return []
    docs, scores = index.retrieve(tokens, k=min(depth, allowed), weight_mask=mask, show_progress=False)
    return [(ids[int(d)], float(s), str(cats[int(d)])) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]

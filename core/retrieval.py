"""Retrieve the chunks that answer a question, filtered by the router's category, widened when that fails.

The filter comes from the router's filter policy: `{"category": c}`, `{"category": {"$in": [...]}}`
or None. A filtered search that finds fewer than `min_hits` chunks, or none as similar as
`min_score`, is re-run without a filter and the result is marked `widened`: a wrong or too narrow
route then costs precision, not the answer.

`hybrid=True` fuses the vector hits with BM25 keyword hits (`bm25s`) by reciprocal rank, which
helps with exact tokens such as model and serial numbers; the eval measures whether it pays off.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from core.store import ChunkMeta, Hit, NoteStore, indexed_text, normalize_where

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
) -> Retrieval:
    """The top-k chunks for `question` within `where`, widened to no filter when that finds too little."""
    where = normalize_where(where)
    query = [float(x) for x in store.embed([question])[0]]
    chunks = _search(store, question, query, k, where, hybrid)
    if where is not None and _too_weak(chunks, min(min_hits, k), min_score):
        return Retrieval(_search(store, question, query, k, None, hybrid), where, widened=True, hybrid=hybrid)
    return Retrieval(chunks, where, widened=False, hybrid=hybrid)


def _too_weak(chunks: list[RetrievedChunk], min_hits: int, min_score: float) -> bool:
    return len(chunks) < min_hits or max((c.score for c in chunks), default=0.0) < min_score


def _search(
    store: NoteStore, question: str, query: list[float], k: int, where: dict[str, Any] | None, hybrid: bool
) -> list[RetrievedChunk]:
    if not hybrid:
        return [RetrievedChunk.from_hit(h) for h in store.search(query, k, where)]
    depth = max(4 * k, 20)  # fuse deeper lists than we return, or fusion has nothing to reorder
    vector = store.search(query, depth, where)
    keyword = _bm25_ids(store, question, depth, where)
    fused: dict[str, float] = {}
    for ranking in ([h.id for h in vector], keyword):
        for rank, cid in enumerate(ranking, start=1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
    top = sorted(fused, key=lambda cid: -fused[cid])[:k]
    known = {h.id: h for h in vector}
    scored = {h.id: h for h in store.score_chunks([cid for cid in top if cid not in known], query)}
    return [RetrievedChunk.from_hit(known.get(cid) or scored[cid]) for cid in top if cid in known or cid in scored]


_bm25_cache: OrderedDict[tuple[str, str, int, str], tuple[Any, list[str]]] = OrderedDict()


def _bm25_ids(store: NoteStore, question: str, depth: int, where: dict[str, Any] | None) -> list[str]:
    """Chunk ids ranked by BM25 for `question` within `where` (indexes are cached per store generation)."""
    import bm25s

    key = (store.location, store.name, store.generation(), json.dumps(where, sort_keys=True))
    if key not in _bm25_cache:
        hits = store.documents(where)
        texts = [indexed_text(ChunkMeta.from_metadata(h.metadata).title, h.text) for h in hits]
        index = bm25s.BM25()
        if texts:
            index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        _bm25_cache[key] = (index, [h.id for h in hits])
        while len(_bm25_cache) > _BM25_CACHE_SIZE:
            _bm25_cache.popitem(last=False)
    _bm25_cache.move_to_end(key)
    index, ids = _bm25_cache[key]
    tokens = bm25s.tokenize([question], stopwords="en", show_progress=False, return_ids=False)
    if not ids or not tokens[0]:
        return []
    docs, scores = index.retrieve(tokens, k=min(depth, len(ids)), show_progress=False)
    return [ids[int(d)] for d, s in zip(docs[0], scores[0], strict=True) if s > 0]

"""The Chroma store of house-note chunks: the only module that imports `chromadb`.

A store is two Chroma collections:

- `<name>`: one record per chunk, id `<note_id>:<hash>:<i>`, with our own MiniLM embedding (never
  Chroma's default embedding function, which downloads a model) and the metadata `note_id`,
  `category`, `title`, `date`, `path`, `chunk`, `heading`, `line`, `hash` (`ChunkMeta`). The collection's
  metadata records the embedding model and dimension; opening it with another model is refused.
- `<name>-notes`: the note registry, one record per note: the content hash of its *live* version,
  its path, title, category, chunk count and a `dirty` flag.
- `<name>-cat-<category>`, one per category: a copy of that category's chunk records (same ids,
  vectors, documents and metadata). A `{"category": c}` search (or `$in` a few categories) queries
  these small collections instead of filtering the whole one, which Chroma does slowly as the store
  grows (~20x an unfiltered search at 100k chunks, docs/results/ingest.md). The whole collection is
  the ledger: every record in a category collection is also in it, because writes go to the whole
  collection first and deletes to the category collections first, and stale chunks are found
  through the whole collection. A store made before these collections existed searches with the
  plain filter until `build_partitions()` (run by every ingest) has copied its chunks over. When
  a writer finds the whole collection empty (new, or deleted to rebuild it), it drops any category
  collections left over from before.

Chroma has no transactions, so the registry is the commit point. Writing a new version of a note:

1. mark the note dirty in the registry (it still names the old version);
2. upsert the new version's chunks under new ids (the hash is part of the id), into the whole
   collection and then into the category collection;
3. commit: the registry now names the new hash (one record write, atomic);
4. delete the chunks of every other version of that note (category collections, then the whole one);
5. clear the dirty flag.

Readers keep only chunks whose hash is the one the registry names, whichever collection they came
from, so at any moment a note is seen as its old version or its new one, never a mix, and never
nothing. A run killed anywhere leaves dirty records; `recover()` (run at the start of every ingest)
deletes their stale chunks.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from core.errors import HousechatError
from core.models import MINILM_DIM
from core.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

REGISTRY_SUFFIX = "-notes"
PARTITION_INFIX = "-cat-"
PARTITIONS_KEY = "category_partitions"  # chunks collection metadata: 1 once every chunk is in its category's collection
# How wide HNSW searches (Chroma's default is 100). On a store of 51,046 chunks (data/notes plus
# 50,000 generated manuals) the default found 0.898 of the exact top 5 for the QA dev questions,
# and none of them for some questions; 800 finds 0.997, no question below 3 of 5, for a search p50
# of 9.7 ms instead of 2.5 (1600: 1.000, 12.6 ms; `python -m benchmarks.ann_recall`,
# docs/results/growth.md). Stores of a few thousand chunks are searched exactly either way.
# Stores made with less are widened when opened (`_search_wide`).
HNSW_EF_SEARCH = 800
_COSINE = {"hnsw": {"space": "cosine", "ef_search": HNSW_EF_SEARCH}}
LAYOUT_VERSION = 1
_STALE_RETRIES = 4  # a reader re-queries at most this often while a writer swaps versions


class StoreMissing(HousechatError):
    """The store or its collection does not exist yet (and the caller asked not to create it)."""


class StoreUnreachable(HousechatError):
    """The Chroma server stopped answering (killed, restarted, network gone)."""


def _connection_lost(exc: BaseException) -> bool:
    try:
        import httpx
    except ImportError:  # no HTTP client installed: nothing here speaks to a server
        return False
    return isinstance(exc, httpx.TransportError)


def reachable(method: Callable[P, R]) -> Callable[P, R]:
    """Turn a dropped connection to the Chroma server into one `StoreUnreachable` that says what to do.

    Writes are ordered so that a run cut off anywhere converges on the next one (module doc), so
    the fix is always the same: bring the server back and run again.
    """

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if not _connection_lost(exc):
                raise
            store = args[0] if args else None
            where = getattr(store, "location", "") or "the Chroma server"
            raise StoreUnreachable(
                f"the note store at {where} is unreachable ({type(exc).__name__}: {exc}) — start the Chroma "
                "server again (`chroma run --path DIR --port N`) and re-run; notes written so far are kept "
                "and an interrupted ingest finishes on the next run"
            ) from None

    return guarded


@dataclass(frozen=True)
class Embedder:
    """The embedding model a store is bound to: its id, dimension and `encode(texts) -> (n, dim)`."""

    model: str
    dim: int
    encode: Callable[[list[str]], Any]


def minilm_embedder(encoder: str = "minilm", var_dir: Path | None = None) -> Embedder:
    """The embedded all-MiniLM-L6-v2 (design.md) run by `encoder` (core.encoders), with that encoder's id."""
    from core.encoders import encoder_spec
    from core.models import embed

    encode = functools.partial(embed, encoder=encoder, var_dir=var_dir)
    return Embedder(encoder_spec(encoder).model_id, MINILM_DIM, encode)


def indexed_text(title: str, text: str) -> str:
    """What gets embedded (and BM25-indexed) for a chunk: the note title gives a short section context."""
    return f"{title}\n\n{text}" if title else text


def chunk_id(note_id: str, content_hash: str, index: int) -> str:
    """A chunk's id. The hash is part of it, so a new version never overwrites the old one in place."""
    return f"{note_id}:{content_hash}:{index}"


def normalize_where(where: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Chroma `where`: None for no filter (Chroma rejects `{}`), several keys combined with `$and`."""
    if not where:
        return None
    if len(where) == 1:
        return where
    return {"$and": [{key: value} for key, value in where.items()]}


@dataclass(frozen=True)
class NoteEntry:
    """A note as the registry records it. `hash` is the live version ("" while being added or removed)."""

    note_id: str
    hash: str
    path: str
    category: str
    title: str
    chunks: int
    dirty: bool = False

    def to_metadata(self) -> dict[str, Any]:
        """The registry record's Chroma metadata."""
        return {
            "hash": self.hash,
            "path": self.path,
            "category": self.category,
            "title": self.title,
            "chunks": self.chunks,
            "dirty": self.dirty,
        }

    @classmethod
    def from_metadata(cls, note_id: str, meta: dict[str, Any]) -> NoteEntry:
        """A registry record read back from Chroma."""
        return cls(
            note_id=note_id,
            hash=str(meta.get("hash", "")),
            path=str(meta.get("path", "")),
            category=str(meta.get("category", "")),
            title=str(meta.get("title", "")),
            chunks=int(meta.get("chunks", 0)),
            dirty=bool(meta.get("dirty", False)),
        )


@dataclass(frozen=True)
class ChunkMeta:
    """A chunk's Chroma metadata: which note version it belongs to and where in the note it sits.

    The one place that names the metadata keys; ingest writes it and retrieval reads it back.
    """

    note_id: str
    category: str
    title: str
    date: str
    path: str
    chunk: int  # index of the chunk within its note
    heading: str
    line: int  # file line the chunk starts on
    hash: str  # the note version's content hash

    def to_metadata(self) -> dict[str, Any]:
        """The metadata dict Chroma stores (flat str/int values)."""
        return {
            "note_id": self.note_id,
            "category": self.category,
            "title": self.title,
            "date": self.date,
            "path": self.path,
            "chunk": self.chunk,
            "heading": self.heading,
            "line": self.line,
            "hash": self.hash,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ChunkMeta:
        """Read back what `to_metadata` wrote (missing keys become empty values)."""
        return cls(
            note_id=str(meta.get("note_id", "")),
            category=str(meta.get("category", "")),
            title=str(meta.get("title", "")),
            date=str(meta.get("date", "")),
            path=str(meta.get("path", "")),
            chunk=int(meta.get("chunk", 0)),
            heading=str(meta.get("heading", "")),
            line=int(meta.get("line", 0)),
            hash=str(meta.get("hash", "")),
        )


@dataclass(frozen=True)
class NoteVersion:
    """One complete version of a note, ready to write: its registry entry and its embedded chunks."""

    entry: NoteEntry
    documents: list[str]
    metadatas: list[dict[str, Any]]
    embeddings: Any  # (len(documents), dim) float array

    @property
    def ids(self) -> list[str]:
        """The chunk ids of this version."""
        return [chunk_id(self.entry.note_id, self.entry.hash, i) for i in range(len(self.documents))]


@dataclass(frozen=True)
class Hit:
    """A chunk found in the store: `score` is the cosine similarity to the query (1 = same direction)."""

    id: str
    text: str
    score: float
    metadata: dict[str, Any]

    @property
    def note_id(self) -> str:
        return str(self.metadata.get("note_id", ""))

    @property
    def hash(self) -> str:
        return str(self.metadata.get("hash", ""))


class NoteStore:
    """House-note chunks in Chroma, written one complete note version at a time (see module doc)."""

    @reachable
    def __init__(self, client: Any, name: str, embedder: Embedder, location: str, create: bool = True) -> None:
        self.name = name
        self.embedder = embedder
        self.location = location
        self._client = client
        self._max_batch = int(client.get_max_batch_size())
        self._chunks = _search_wide(self._collection(name, create, self._new_metadata(), _COSINE))
        self._registry = self._collection(name + REGISTRY_SUFFIX, create, {"housechat_layout": LAYOUT_VERSION}, None)
        self._check_embedder()
        self._partitions: dict[str, Any] = {}
        # Whether filtered searches use the category collections: True once they hold every chunk
        # (a new store starts that way). Set it False to measure or compare Chroma's plain filter.
        self.partitioned = bool((self._chunks.metadata or {}).get(PARTITIONS_KEY))
        if create and self.partitioned and self._chunks.count() == 0:
            self._drop_orphan_partitions()

    def _drop_orphan_partitions(self) -> None:
        """Drop category collections left by a whole collection that was deleted (e.g. to rebuild it).

        Category collections hold a subset of the whole collection, so with the whole one empty
        anything they hold is left over from before and must go (it may even be another encoder's).
        """
        prefix = self.name + PARTITION_INFIX
        for collection in self._client.list_collections():
            if collection.name.startswith(prefix) and (collection.metadata or {}).get("partition_of") == self.name:
                self._client.delete_collection(collection.name)

    # -- opening -------------------------------------------------------------------------------

    def _new_metadata(self) -> dict[str, Any]:
        return {
            "embedding_model": self.embedder.model,
            "embedding_dim": self.embedder.dim,
            "housechat_layout": LAYOUT_VERSION,
            "generation": 0,
            PARTITIONS_KEY: 1,  # a new store is empty, so its category collections are complete
        }

    def _collection(
        self, name: str, create: bool, metadata: dict[str, Any], configuration: dict[str, Any] | None
    ) -> Any:
        from chromadb.errors import InvalidArgumentError, NotFoundError

        try:
            if create:
                return self._client.get_or_create_collection(
                    name, configuration=configuration, metadata=metadata, embedding_function=None
                )
            return self._client.get_collection(name, embedding_function=None)
        except NotFoundError:
            raise StoreMissing(
                f"no collection {self.name!r} in {self.location} — run `python -m ingest` first"
            ) from None
        except InvalidArgumentError as exc:
            raise HousechatError(
                f"cannot open collection {name!r} in {self.location} ({exc}) — use a name of 3-60 letters, "
                "digits, '.', '-' or '_' that starts and ends with a letter or digit (--collection NAME)"
            ) from None

    def _partition(self, category: str, create: bool) -> Any | None:
        """The collection holding `category`'s chunks (None if it does not exist and `create` is False)."""
        from chromadb.errors import NotFoundError

        if category not in self._partitions:
            name = partition_name(self.name, category)
            try:
                if create:
                    meta = {"housechat_layout": LAYOUT_VERSION, "partition_of": self.name, "category": category}
                    collection = self._client.get_or_create_collection(
                        name, configuration=_COSINE, metadata=meta, embedding_function=None
                    )
                else:
                    collection = self._client.get_collection(name, embedding_function=None)
            except NotFoundError:
                return None  # not cached: a writer may create it later
            self._partitions[category] = _search_wide(collection)
        return self._partitions[category]

    def _check_embedder(self) -> None:
        from core.encoders import encoder_for_model

        meta = self._chunks.metadata or {}
        model, dim = meta.get("embedding_model"), meta.get("embedding_dim")
        if model != self.embedder.model or dim != self.embedder.dim:
            ours, theirs = encoder_for_model(self.embedder.model), encoder_for_model(str(model))
            rebuild = "python -m ingest --rebuild"
            if ours:
                rebuild = f"HOUSECHAT_ENCODER={ours} {rebuild}"
            keep = f", or search it with the encoder that built it (HOUSECHAT_ENCODER={theirs})" if theirs else ""
            raise HousechatError(
                f"collection {self.name!r} in {self.location} was built with embedding model {model!r} "
                f"({dim} dims), but this run embeds with {self.embedder.model!r} ({self.embedder.dim} dims) — "
                f"re-embed every note with `{rebuild}` (add your --store/--collection), ingest into another "
                f"collection (--collection NAME){keep}"
            )

    # -- reading the registry ------------------------------------------------------------------

    @reachable
    def notes(self) -> dict[str, NoteEntry]:
        """Every registry record, including notes in the middle of a write (`dirty`)."""
        entries = {}
        for ids, metas in self._get_all(self._registry, where=None, include=["metadatas"]):
            for note_id, meta in zip(ids, metas, strict=True):
                entries[note_id] = NoteEntry.from_metadata(note_id, meta or {})
        return entries

    def live_notes(self) -> dict[str, NoteEntry]:
        """The notes a reader sees: those with a committed version."""
        return {note_id: e for note_id, e in self.notes().items() if e.hash}

    def note_hashes(self) -> dict[str, str]:
        """note id -> content hash of its live version."""
        return {note_id: e.hash for note_id, e in self.live_notes().items()}

    def note_ids(self) -> list[str]:
        """Ids of the live notes, sorted."""
        return sorted(self.live_notes())

    def has_notes(self) -> bool:
        """Whether a reader sees any note: reads registry records only until the first live one."""
        offset, page = 0, 64
        while True:
            got = self._registry.get(include=["metadatas"], limit=page, offset=offset)
            if not got["ids"]:
                return False
            if any((meta or {}).get("hash") for meta in got["metadatas"]):
                return True
            offset += len(got["ids"])

    def counts(self) -> tuple[int, int]:
        """(notes, chunks) a reader sees."""
        live = self.live_notes().values()
        return len(live), sum(e.chunks for e in live)

    @reachable
    def generation(self) -> int:
        """A number that changes whenever a note version is committed or removed (cache key for readers)."""
        meta = self._client.get_collection(self.name, embedding_function=None).metadata or {}
        return int(meta.get("generation", 0))

    # -- writing -------------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> Any:
        """Embed texts with the store's model: a float array (len(texts), dim)."""
        return self.embedder.encode(texts)

    @reachable
    def write_notes(self, versions: Sequence[NoteVersion]) -> None:
        """Write new versions of notes; a reader switches from each old version to its new one at once."""
        if not versions:
            return
        before = self._entries([v.entry.note_id for v in versions])
        pending = []
        for v in versions:
            old = before.get(v.entry.note_id)
            pending.append(replace(old, dirty=True) if old else replace(v.entry, hash="", chunks=0, dirty=True))
        self._put_entries(pending)
        self._upsert_chunks(versions)
        self._put_entries([replace(v.entry, dirty=True) for v in versions])  # commit point
        self._bump_generation()
        self._delete_stale([v.entry for v in versions if v.entry.note_id in before])
        self._put_entries([replace(v.entry, dirty=False) for v in versions])

    @reachable
    def delete_notes(self, note_ids: Sequence[str]) -> None:
        """Remove notes: readers stop seeing them first, then their chunks and records go."""
        entries = list(self._entries(list(note_ids)).values())
        if not entries:
            return
        self._put_entries([replace(e, hash="", chunks=0, dirty=True) for e in entries])  # commit point
        self._bump_generation()
        self._delete_stale([replace(e, hash="") for e in entries])
        for batch in _batches([e.note_id for e in entries], self._max_batch):
            self._registry.delete(ids=batch)

    @reachable
    def recover(self) -> list[str]:
        """Finish writes a killed run left behind: drop chunks of uncommitted or replaced versions."""
        dirty = [e for e in self.notes().values() if e.dirty]
        if not dirty:
            return []
        self._delete_stale(dirty)
        gone = [e.note_id for e in dirty if not e.hash]
        for batch in _batches(gone, self._max_batch):
            self._registry.delete(ids=batch)
        self._put_entries([replace(e, dirty=False) for e in dirty if e.hash])
        return sorted(e.note_id for e in dirty)

    @reachable
    def _entries(self, note_ids: list[str]) -> dict[str, NoteEntry]:
        entries = {}
        for batch in _batches(note_ids, self._max_batch):
            got = self._registry.get(ids=batch, include=["metadatas"])
            for note_id, meta in zip(got["ids"], got["metadatas"], strict=True):
                entries[note_id] = NoteEntry.from_metadata(note_id, meta or {})
        return entries

    def _put_entries(self, entries: Sequence[NoteEntry]) -> None:
        # Chroma wants a vector per record; the registry is never searched, so all get the same one.
        for batch in _batches(list(entries), self._max_batch):
            self._registry.upsert(
                ids=[e.note_id for e in batch],
                metadatas=[e.to_metadata() for e in batch],
                embeddings=[[1.0] for _ in batch],
            )

    def _upsert_chunks(self, versions: Sequence[NoteVersion]) -> None:
        rows = [
            (cid, doc, meta, emb)
            for v in versions
            for cid, doc, meta, emb in zip(v.ids, v.documents, v.metadatas, v.embeddings, strict=True)
        ]
        for batch in _batches(rows, self._max_batch):
            self._upsert_rows(self._chunks, batch)  # the whole collection first: it is the ledger
            for category, rows_in in _by_category(batch, lambda r: r[2]).items():
                self._upsert_rows(self._partition(category, create=True), rows_in)

    @staticmethod
    def _upsert_rows(collection: Any, rows: Sequence[tuple[str, str, dict[str, Any], Any]]) -> None:
        import numpy as np

        collection.upsert(
            ids=[r[0] for r in rows],
            documents=[r[1] for r in rows],
            metadatas=[r[2] for r in rows],
            embeddings=np.asarray([r[3] for r in rows], dtype=np.float32),
        )

    def _delete_stale(self, entries: Sequence[NoteEntry]) -> None:
        """Delete each note's chunks that are not its live version (all of them when `hash` is "").

        They are found in the whole collection and deleted from their category's collection first,
        so a run killed in between leaves them findable for `recover()`.
        """
        for e in entries:
            where: dict[str, Any] = {"note_id": e.note_id}
            if e.hash:
                where = {"$and": [where, {"hash": {"$ne": e.hash}}]}
            stale = [
                (cid, meta or {})
                for ids, metas in self._get_all(self._chunks, where, ["metadatas"])
                for cid, meta in zip(ids, metas, strict=True)
            ]
            for category, rows in _by_category(stale, lambda r: r[1]).items():
                partition = self._partition(category, create=False)
                if partition is None:
                    continue
                for batch in _batches([cid for cid, _ in rows], self._max_batch):
                    partition.delete(ids=batch)
            for batch in _batches([cid for cid, _ in stale], self._max_batch):
                self._chunks.delete(ids=batch)

    @reachable
    def build_partitions(self) -> bool:
        """Copy every chunk into its category's collection, for a store made before they existed.

        Does nothing (returns False) when they are complete. Safe to kill: filtered searches use the
        plain filter until the copy has finished and the flag is set, and the next run copies again.
        """
        if self.partitioned:
            return False
        for ids, embeddings, metas, docs in self._get_all(self._chunks, None, ["embeddings", "metadatas", "documents"]):
            rows = list(zip(ids, docs, [m or {} for m in metas], embeddings, strict=True))
            for category, rows_in in _by_category(rows, lambda r: r[2]).items():
                for batch in _batches(rows_in, self._max_batch):
                    self._upsert_rows(self._partition(category, create=True), batch)
        meta = dict(self._client.get_collection(self.name, embedding_function=None).metadata or {})
        meta[PARTITIONS_KEY] = 1
        self._chunks.modify(metadata=meta)
        self.partitioned = True
        return True

    def _bump_generation(self) -> None:
        meta = dict(self._client.get_collection(self.name, embedding_function=None).metadata or {})
        meta["generation"] = int(meta.get("generation", 0)) + 1
        self._chunks.modify(metadata=meta)  # modify replaces the whole metadata dict

    # -- searching -----------------------------------------------------------------------------

    @reachable
    def search(self, embedding: Sequence[float], k: int, where: dict[str, Any] | None = None) -> list[Hit]:
        """The k live chunks nearest to `embedding`, best first, optionally filtered by a Chroma `where`."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        sources = self._sources(normalize_where(where))
        query = [float(x) for x in embedding]
        n, kept = k, []
        for _ in range(_STALE_RETRIES):
            hits, exhausted = [], True
            for collection, residual in sources:
                got = collection.query(
                    query_embeddings=[query],
                    n_results=n,
                    where=residual,
                    include=["documents", "metadatas", "distances"],
                )
                exhausted = exhausted and len(got["ids"][0]) < n
                hits += [
                    Hit(cid, doc or "", 1.0 - float(dist), meta or {})
                    for cid, doc, meta, dist in zip(
                        got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0], strict=True
                    )
                ]
            if len(sources) > 1:
                hits = sorted(hits, key=lambda h: -h.score)[:n]
            kept = self._live(hits)
            # Dropped hits are chunks of a version being swapped: ask again with room for them.
            if len(kept) >= k or exhausted:
                break
            n += len(hits) - len(kept)
        return kept[:k]

    def _sources(self, where: dict[str, Any] | None) -> list[tuple[Any, dict[str, Any] | None]]:
        """(collection, where) pairs to search: the category collections a pure category filter
        names (no filter left to apply), else the whole collection with the filter."""
        categories = filter_categories(where) if self.partitioned else None
        if categories is None:
            return [(self._chunks, where)]
        found = [self._partition(c, create=False) for c in categories]
        return [(collection, None) for collection in found if collection is not None]

    @reachable
    def documents(self, where: dict[str, Any] | None = None) -> list[Hit]:
        """Every live chunk matching `where` (score 0): the corpus for keyword search."""
        hits: list[Hit] = []
        for collection, residual in self._sources(normalize_where(where)):
            for ids, docs, metas in self._get_all(collection, residual, ["documents", "metadatas"]):
                hits.extend(
                    Hit(cid, doc or "", 0.0, meta or {}) for cid, doc, meta in zip(ids, docs, metas, strict=True)
                )
        return self._live(hits)

    def chunk_vectors(self) -> tuple[Any, list[dict[str, Any]], list[str]]:
        """Every live chunk's stored embedding (an (n, dim) float32 array), metadata and indexed text.

        One pass over the collection, so the three lists share one order: a head can be fit on a
        household's chunks without a second embedding pass (benchmarks.routing_levers does).
        """
        import numpy as np

        rows: list[tuple[str, Any, dict[str, Any], str]] = []
        for got_ids, embs, got_metas, docs in self._get_all(
            self._chunks, None, ["embeddings", "metadatas", "documents"]
        ):
            rows += [(i, e, m or {}, d or "") for i, e, m, d in zip(got_ids, embs, got_metas, docs, strict=True)]
        live = {h.id for h in self._live([Hit(i, "", 0.0, m) for i, _, m, _ in rows])}
        rows = [r for r in rows if r[0] in live]
        dim = len(rows[0][1]) if rows else 0
        array = np.array([r[1] for r in rows], dtype=np.float32).reshape(len(rows), dim)
        texts = [indexed_text(str(m.get("title", "")), d) for _, _, m, d in rows]
        return array, [m for _, _, m, _ in rows], texts

    @reachable
    def score_chunks(self, ids: Sequence[str], embedding: Sequence[float]) -> list[Hit]:
        """The live chunks with these ids, scored by cosine similarity to `embedding` (order kept)."""
        if not ids:
            return []
        got = self._chunks.get(ids=list(ids), include=["documents", "metadatas", "embeddings"])
        found = {
            cid: Hit(cid, doc or "", _cosine(emb, embedding), meta or {})
            for cid, doc, meta, emb in zip(
                got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
            )
        }
        return self._live([found[i] for i in ids if i in found])

    def _live(self, hits: list[Hit]) -> list[Hit]:
        """Keep the hits that belong to the version of their note the registry names."""
        live = {note_id: e.hash for note_id, e in self._entries(sorted({h.note_id for h in hits})).items()}
        return [h for h in hits if h.hash and live.get(h.note_id) == h.hash]

    def _get_all(self, collection: Any, where: dict[str, Any] | None, include: list[str]) -> Iterator[tuple[Any, ...]]:
        """Page through `collection.get` (a 100k-chunk store does not come back in one response)."""
        offset = 0
        while True:
            got = collection.get(where=where, include=include, limit=self._max_batch, offset=offset)
            if not got["ids"]:
                return
            yield (got["ids"], *(got[field] for field in include))
            offset += len(got["ids"])


def partition_name(name: str, category: str) -> str:
    """The collection of one category's chunks: readable for a category id, hashed for anything else."""
    if re.fullmatch(r"[a-z0-9][a-z0-9_]{0,63}", category):
        return f"{name}{PARTITION_INFIX}{category}"
    return f"{name}{PARTITION_INFIX}h{hashlib.sha256(category.encode()).hexdigest()[:16]}"


def _search_wide(collection: Any) -> Any:
    """`collection`, its HNSW search widened to `HNSW_EF_SEARCH` if it was made with less.

    Chroma keeps the setting with the collection and applies it when a process loads the index,
    so a store made before the setting searches widely from here on (or from the next start, in a
    process that had searched it already). A store this process cannot write to (read-only files)
    keeps its old setting, with a warning."""
    hnsw = (getattr(collection, "configuration", None) or {}).get("hnsw") or {}
    if not hnsw or int(hnsw.get("ef_search") or 0) >= HNSW_EF_SEARCH:
        return collection
    try:
        collection.modify(configuration={"hnsw": {"ef_search": HNSW_EF_SEARCH}})
    except Exception as exc:  # widening is an improvement, not a requirement
        print(f"warning: could not widen {collection.name}'s search ({exc}); searching it as it is", file=sys.stderr)
    return collection


def filter_categories(where: dict[str, Any] | None) -> list[str] | None:
    """The categories a filter on `category` alone keeps (`c`, `{"$eq": c}`, `{"$in": [...]}`), else None."""
    if not where or set(where) != {"category"}:
        return None
    value = where["category"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and len(value) == 1:
        ((op, arg),) = value.items()
        if op == "$eq" and isinstance(arg, str):
            return [arg]
        if op == "$in" and isinstance(arg, list) and all(isinstance(c, str) for c in arg):
            return list(dict.fromkeys(arg))
    return None


T = TypeVar("T")


def _by_category(rows: Iterable[T], meta_of: Callable[[T], dict[str, Any]]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = {}
    for row in rows:
        groups.setdefault(str(meta_of(row).get("category", "")), []).append(row)
    return groups


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b))
    return dot / norm if norm else 0.0


def _http_client(url: str, chroma_settings: Any) -> Any:
    import chromadb

    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HousechatError(f"bad Chroma URL {url!r} — write it as http://HOST:PORT, e.g. http://127.0.0.1:8000")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8000)
    except ValueError:
        raise HousechatError(f"bad port in Chroma URL {url!r} — write it as http://HOST:PORT") from None
    try:
        return chromadb.HttpClient(
            host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=chroma_settings
        )
    except ValueError as exc:  # chromadb raises ValueError when the heartbeat fails
        raise HousechatError(
            f"cannot reach the Chroma server at {url} ({exc}) — start it with `chroma run --path DIR --port N`, "
            "or unset --chroma-url / HOUSECHAT_CHROMA_URL to use the embedded store"
        ) from None


def open_store(settings: Settings, embedder: Embedder | None = None, create: bool = True) -> NoteStore:
    """The note store `settings` point at: a Chroma server when `chroma_url` is set, else the embedded one.

    With `create=False` a missing store raises `StoreMissing` instead of being created (nothing is written).
    """
    embedder = embedder or minilm_embedder(settings.encoder, settings.var_dir)
    client, location = _client(settings, create)
    return NoteStore(client, settings.collection, embedder, location, create=create)


def drop_store(settings: Settings) -> int:
    """Delete the collection `settings` name, its note registry and its category collections.

    What `python -m ingest --rebuild` runs before ingesting from scratch (e.g. with another
    encoder). Returns how many collections went; a store that does not exist is left alone.
    """
    try:
        client, _ = _client(settings, create=False)
    except StoreMissing:
        return 0
    name = settings.collection
    dropped = 0
    for collection in client.list_collections():
        meta = collection.metadata or {}
        ours = collection.name in (name, name + REGISTRY_SUFFIX) or (
            collection.name.startswith(name + PARTITION_INFIX) and meta.get("partition_of") == name
        )
        if ours:
            client.delete_collection(collection.name)
            dropped += 1
    return dropped


def _client(settings: Settings, create: bool) -> tuple[Any, str]:
    """(Chroma client, location): the server `chroma_url` names, else the embedded store folder."""
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        return _http_client(settings.chroma_url, chroma_settings), settings.chroma_url
    import chromadb

    location = str(settings.store)
    if not create and not (settings.store / "chroma.sqlite3").exists():
        raise StoreMissing(f"no store at {location} — run `python -m ingest` first (or pass --store DIR)")
    settings.store.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=location, settings=chroma_settings), location

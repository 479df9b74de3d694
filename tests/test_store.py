"""The Chroma store and retrieval: real Chroma (embedded in tmp_path, and a real server), real MiniLM."""

from __future__ import annotations

import hashlib
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.categories import load_categories
from core.errors import HousechatError
from core.retrieval import retrieve
from core.settings import PROJECT_ROOT, Settings, from_env
from core.store import (
    HNSW_EF_SEARCH,
    PARTITIONS_KEY,
    Embedder,
    NoteEntry,
    NoteStore,
    NoteVersion,
    StoreMissing,
    indexed_text,
    normalize_where,
    open_store,
)
from ingest.pipeline import sync

CATEGORIES = PROJECT_ROOT / "data" / "categories.yaml"


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    return from_env(environ={}, home=tmp_path, store=tmp_path / "store", categories_file=CATEGORIES, **changes)


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.slow)])  # server: a Chroma server
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for an embedded store in tmp_path, or a fresh collection on the shared Chroma server."""
    if request.param == "server":
        url = request.getfixturevalue("chroma_server")
        return make_settings(tmp_path, chroma_url=url, collection=f"t-{uuid.uuid4().hex[:12]}")
    return make_settings(tmp_path)


def version(store: NoteStore, note_id: str, category: str, texts: list[str], content_hash: str) -> NoteVersion:
    entry = NoteEntry(note_id, content_hash, f"{note_id}.md", category, note_id, len(texts))
    metadatas = [
        {"note_id": note_id, "category": category, "title": note_id, "date": "", "path": f"{note_id}.md",
         "chunk": i, "heading": "", "line": 1, "hash": content_hash}
        for i in range(len(texts))
    ]  # fmt: skip
    return NoteVersion(entry, texts, metadatas, store.embed(texts))


def visible(store: NoteStore, note_id: str) -> list[str]:
    """The chunk texts a reader sees for one note."""
    return sorted(h.text for h in store.documents({"note_id": note_id}))


def physical_chunks(store: NoteStore) -> int:
    """Chunk records on disk, including stale ones a reader never sees (white-box check)."""
    return int(store._chunks.count())


def test_write_search_count_in_both_modes(store_settings: Settings) -> None:
    store = open_store(store_settings)
    store.write_notes(
        [
            version(store, "pool-heater-codes", "pool", ["Pool heater error E3 means low water flow.", "Reset the pool heater at the breaker."], "a1"),
            version(store, "water_heater-flush", "water_heater", ["Flush the water heater tank every October."], "b1"),
            version(store, "hvac-filter", "hvac", ["Change the furnace air filter every three months."], "c1"),
        ]
    )  # fmt: skip
    assert store.counts() == (3, 4)
    assert store.note_ids() == ["hvac-filter", "pool-heater-codes", "water_heater-flush"]
    assert store.note_hashes() == {"pool-heater-codes": "a1", "water_heater-flush": "b1", "hvac-filter": "c1"}

    query = store.embed(["what does error E3 on the pool heater mean"])[0]
    unfiltered = store.search(query, k=2)
    assert unfiltered[0].note_id == "pool-heater-codes"
    assert unfiltered[0].score > unfiltered[1].score
    assert {h.metadata["category"] for h in store.search(query, k=5, where={"category": "hvac"})} == {"hvac"}
    both = store.search(query, k=5, where={"category": {"$in": ["hvac", "water_heater"]}})
    assert {h.note_id for h in both} == {"hvac-filter", "water_heater-flush"}
    assert set(both[0].metadata) >= {"note_id", "category", "title", "date", "path", "chunk", "hash"}


def test_store_reopens_with_its_data(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = open_store(settings)
    store.write_notes([version(store, "roof-leak", "roof", ["The valley leak was fixed in 2026."], "h1")])
    assert open_store(settings, create=False).counts() == (1, 1)


def test_a_reader_sees_the_old_version_until_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(make_settings(tmp_path))
    old = ["Old text one about the sump pump.", "Old text two about the sump pump."]
    store.write_notes([version(store, "plumbing-sump", "plumbing", old, "v1")])
    new = version(store, "plumbing-sump", "plumbing", ["New text one.", "New text two.", "New text three."], "v2")

    # Die after the new chunks are written, before the registry names them (the commit).
    calls = []

    def put_then_die(entries: list[NoteEntry], original: Callable[..., None] = store._put_entries) -> None:
        calls.append(entries)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(entries)

    monkeypatch.setattr(store, "_put_entries", put_then_die)
    with pytest.raises(KeyboardInterrupt):
        store.write_notes([new])
    monkeypatch.undo()
    assert physical_chunks(store) == 5  # both versions on disk...
    assert visible(store, "plumbing-sump") == sorted(old)  # ...and the reader sees exactly the old one
    assert store.recover() == ["plumbing-sump"]
    assert physical_chunks(store) == 2 and store.note_hashes() == {"plumbing-sump": "v1"}


def test_a_reader_sees_the_new_version_right_after_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(make_settings(tmp_path))
    store.write_notes([version(store, "plumbing-sump", "plumbing", ["Old one.", "Old two."], "v1")])
    new_texts = ["New one.", "New two.", "New three."]
    new = version(store, "plumbing-sump", "plumbing", new_texts, "v2")

    def die(entries: list[NoteEntry]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_delete_stale", die)  # die after the commit, before old chunks go
    with pytest.raises(KeyboardInterrupt):
        store.write_notes([new])
    monkeypatch.undo()
    assert visible(store, "plumbing-sump") == sorted(new_texts)
    query = store.embed(["old"])[0]
    assert {h.hash for h in store.search(query, k=10)} == {"v2"}  # stale chunks never come back from search
    assert store.counts() == (1, 3)
    store.recover()
    assert physical_chunks(store) == 3 and not any(e.dirty for e in store.notes().values())


def test_a_new_note_killed_before_commit_is_invisible_then_cleaned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(make_settings(tmp_path))

    new = version(store, "car-tyres", "car", ["Winter tyres go on in November."], "t1")
    upsert = store._upsert_chunks

    def write_then_die(versions: list[NoteVersion]) -> None:
        upsert(versions)
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_upsert_chunks", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        store.write_notes([new])
    monkeypatch.undo()
    assert physical_chunks(store) == 1 and store.counts() == (0, 0) and visible(store, "car-tyres") == []
    assert store.recover() == ["car-tyres"]
    assert physical_chunks(store) == 0 and store.notes() == {}


def test_delete_notes_removes_chunks_and_record(tmp_path: Path) -> None:
    store = open_store(make_settings(tmp_path))
    store.write_notes(
        [version(store, "garden-hedge", "garden", ["Trim the hedge in June."], "g1"),
         version(store, "garden-mower", "garden", ["Mower blade sharpened in May.", "Oil change."], "g2")]
    )  # fmt: skip
    store.delete_notes(["garden-mower", "not-there"])
    assert store.note_ids() == ["garden-hedge"] and physical_chunks(store) == 1


def test_writes_are_batched_under_the_client_limit(tmp_path: Path) -> None:
    store = open_store(make_settings(tmp_path))
    store._max_batch = 2  # what a small server would report from get_max_batch_size()
    texts = [f"Gutter cleaning log entry {i}." for i in range(5)]
    store.write_notes(
        [
            version(store, "gutters-log", "gutters", texts, "x1"),
            version(store, "gutters-guard", "gutters", ["Guards."], "x2"),
        ]
    )
    assert store.counts() == (2, 6) and len(store.documents()) == 6
    store.delete_notes(["gutters-log", "gutters-guard"])
    assert store.counts() == (0, 0)


def test_another_embedding_model_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, encoder="minilm")
    open_store(settings)  # built with MiniLM
    other = Embedder("test:random-8", 8, lambda texts: np.ones((len(texts), 8), dtype=np.float32))
    with pytest.raises(
        HousechatError, match=r"was built with embedding model 'embedded:all-minilm-l6-v2'.*--collection"
    ):
        open_store(settings, embedder=other)
    assert open_store(replace(settings, collection="other-model"), embedder=other).counts() == (0, 0)


def test_a_missing_store_is_not_created_on_request(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with pytest.raises(StoreMissing, match="python -m ingest"):
        open_store(settings, create=False)
    assert not (tmp_path / "store").exists()


@pytest.mark.slow  # a Chroma server
def test_a_missing_collection_on_a_server_is_reported(chroma_server: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, chroma_url=chroma_server, collection=f"absent-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StoreMissing, match="run `python -m ingest` first"):
        open_store(settings, create=False)


def test_an_unreachable_server_says_how_to_fix(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HousechatError, match=r"cannot reach the Chroma server.*chroma run --path"):
        open_store(make_settings(tmp_path, chroma_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(HousechatError, match="bad Chroma URL"):
        open_store(make_settings(tmp_path, chroma_url="ftp://example"))


def test_a_bad_collection_name_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(HousechatError, match="--collection NAME"):
        open_store(make_settings(tmp_path, collection="x"))


def test_normalize_where() -> None:
    assert normalize_where(None) is None and normalize_where({}) is None
    assert normalize_where({"category": "pool"}) == {"category": "pool"}
    assert normalize_where({"category": "pool", "note_id": "a"}) == {"$and": [{"category": "pool"}, {"note_id": "a"}]}


# -- retrieval ---------------------------------------------------------------------------------

NOTES = {
    "pool-heater-error-codes": ("pool", "## Error codes\n\nE3 on the pool heater display means low water flow: clean the "
                                "skimmer basket and the pump strainer, then reset the heater. E5 is a tripped high-limit switch."),
    "pool-pump-schedule": ("pool", "## Schedule\n\nThe pool pump runs 8 hours a day in summer, from 9 am to 5 pm, on low speed."),
    "water_heater-flush-2024": ("water_heater", "## Visit\n\nThe water heater tank was flushed on 2024-10-12; the first buckets "
                                "were milky with sediment. Next flush due October 2025."),
    "hvac-furnace-overview": ("hvac", "## The unit\n\nTidewell TG96-080 gas furnace, serial number TW1408-22913, installed 2014 "
                              "in the basement utility room."),
    "garden-mower": ("garden", "## Mower\n\nThe lawn mower blade was sharpened in May and the oil changed."),
}  # fmt: skip


@pytest.fixture(scope="module")
def house_store(tmp_path_factory: pytest.TempPathFactory, write_note: Callable[..., Path]) -> NoteStore:
    root = tmp_path_factory.mktemp("house")
    for note_id, (category, body) in NOTES.items():
        write_note(root / "notes", note_id, category, body, title=note_id)
    settings = make_settings(root)
    store = open_store(settings)
    summary = sync([root / "notes"], store, load_categories(CATEGORIES), root)
    assert not summary.errors and len(summary.added) == len(NOTES)
    return store


def test_filtered_retrieval_keeps_to_the_category(house_store: NoteStore) -> None:
    result = retrieve(house_store, "How often does the pool pump run?", k=3, where={"category": "pool"})
    assert not result.widened and result.where == {"category": "pool"}
    assert {c.category for c in result.chunks} == {"pool"}
    top = result.chunks[0]
    assert top.note_id == "pool-pump-schedule" and top.path.endswith("pool-pump-schedule.md")
    assert top.title == "pool-pump-schedule" and top.chunk == 0 and 0 < top.score <= 1


def test_in_filter_and_no_filter(house_store: NoteStore) -> None:
    pair = retrieve(
        house_store, "when was the tank flushed", k=5, where={"category": {"$in": ["water_heater", "hvac"]}}
    )
    assert {c.category for c in pair.chunks} <= {"water_heater", "hvac"} and not pair.widened
    assert pair.chunks[0].note_id == "water_heater-flush-2024"
    assert retrieve(house_store, "when was the tank flushed", k=2, where={}).where is None


def test_a_wrong_filter_is_widened(house_store: NoteStore) -> None:
    # The router said garden; no garden note is about the pool heater, so the hits are weak.
    result = retrieve(house_store, "What does error E3 on the pool heater mean?", k=3, where={"category": "garden"})
    assert result.widened and result.where == {"category": "garden"}
    assert result.chunks[0].note_id == "pool-heater-error-codes"


def test_too_few_hits_are_widened(house_store: NoteStore) -> None:
    empty = retrieve(house_store, "Is the roof under warranty?", k=3, where={"category": "roof"})
    assert empty.widened and len(empty.chunks) == 3
    one = retrieve(house_store, "when was the mower blade sharpened", k=3, where={"category": "garden"}, min_hits=2)
    assert one.widened  # garden holds a single chunk: fewer than min_hits
    kept = retrieve(house_store, "when was the mower blade sharpened", k=3, where={"category": "garden"}, min_hits=1)
    assert not kept.widened and kept.note_ids == ["garden-mower"]


def test_soft_filter_reranks_without_excluding(house_store: NoteStore) -> None:
    question = "when was the tank flushed"
    plain = retrieve(house_store, question, k=5)
    assert plain.chunks[0].note_id == "water_heater-flush-2024"
    # A strong boost for hvac lifts hvac over the better-matching water heater note; the rest stay in.
    lifted = retrieve(house_store, question, k=5, where={"category": "hvac"}, boost={"hvac": 1.0})
    assert lifted.soft and not lifted.widened and lifted.where == {"category": "hvac"}
    assert lifted.chunks[0].category == "hvac" and len({c.category for c in lifted.chunks}) > 1
    assert "water_heater-flush-2024" in lifted.note_ids
    assert [c.score for c in lifted.chunks if c.note_id == "water_heater-flush-2024"] == [plain.chunks[0].score]
    # A small boost for a wrong category does not hide a note that matches much better.
    wrong = retrieve(
        house_store,
        "What does error E3 on the pool heater mean?",
        k=3,
        where={"category": "garden"},
        boost={"garden": 0.1},
    )
    assert wrong.chunks[0].note_id == "pool-heater-error-codes"
    # Hybrid soft: keyword hits fused, boosted the same way.
    serial = retrieve(house_store, "TW1408-22913", k=3, where={"category": "pool"}, boost={"pool": 0.05}, hybrid=True)
    assert serial.soft and serial.hybrid and serial.chunks[0].note_id == "hvac-furnace-overview"
    pushed = retrieve(house_store, "TW1408-22913", k=3, where={"category": "pool"}, boost={"pool": 2.0}, hybrid=True)
    # The only keyword hit keeps its place at the top (it ranks first in one list, high in the other);
    # the boost decides what follows it.
    assert [c.category for c in pushed.chunks] == ["hvac", "pool", "pool"]


def test_soft_filter_keeps_the_places_after_its_open_notes_for_the_route(house_store: NoteStore) -> None:
    question = "when was the tank flushed"
    soft = retrieve(house_store, question, k=5, where={"category": "hvac"}, boost={"hvac": 0.05})
    assert soft.note_ids[0] == "water_heater-flush-2024" and len({c.category for c in soft.chunks}) > 2
    # One open note: the better-matching water heater note keeps first place; the places after it
    # hold only hvac chunks, so fewer than k come back when hvac has fewer left to give.
    tail = retrieve(house_store, question, k=5, where={"category": "hvac"}, boost={"hvac": 0.05}, open_notes=1)
    assert tail.note_ids[0] == "water_heater-flush-2024" and tail.soft
    assert {c.category for c in tail.chunks[1:]} == {"hvac"}
    assert [c.id for c in tail.chunks] == [
        c.id for c in soft.chunks if c.note_id == tail.note_ids[0] or c.category == "hvac"
    ]
    # Every place open (0), or as many open notes as found: the soft filter as it was.
    for open_notes in (0, 5):
        same = retrieve(
            house_store, question, k=5, where={"category": "hvac"}, boost={"hvac": 0.05}, open_notes=open_notes
        )
        assert [c.id for c in same.chunks] == [c.id for c in soft.chunks]
    # A pair route keeps both categories in the tail.
    pair = retrieve(
        house_store, question, k=5, where={"category": {"$in": ["hvac", "pool"]}}, boost={"hvac": 0.05}, open_notes=1
    )
    assert {c.category for c in pair.chunks[1:]} <= {"hvac", "pool"}


def test_lift_filter_moves_the_route_up_in_the_unfiltered_order(house_store: NoteStore) -> None:
    for hybrid in (False, True):
        question = "when was the tank flushed"
        plain = retrieve(house_store, question, k=20, hybrid=hybrid)
        route = {"where": {"category": "pool"}, "lift": True, "hybrid": hybrid, "min_score": 0.0}
        lifted = retrieve(house_store, question, k=5, **route)
        assert lifted.lifted and not lifted.widened and lifted.where == {"category": "pool"}
        pool = [c.id for c in plain.chunks if c.category == "pool"]
        # The routed category's chunks come first, in the order the unfiltered search gave them.
        assert len(pool) >= 2 and [c.id for c in lifted.chunks][: len(pool)] == pool[:5]
        # One open note: the best unfiltered note keeps first place, whatever its category.
        open1 = retrieve(house_store, question, k=5, open_notes=1, **route)
        assert open1.note_ids[0] == plain.note_ids[0] == "water_heater-flush-2024"
        assert {c.category for c in open1.chunks if c.note_id != plain.note_ids[0]} == {"pool"}
        # Every chunk of the route ranks at least as high as it did unfiltered.
        position = {c.id: i for i, c in enumerate(plain.chunks)}
        assert all(i <= position[c.id] for i, c in enumerate(lifted.chunks) if c.id in position)
    # A wrong route whose chunks are weak is widened, as the hard filter is.
    wrong = retrieve(
        house_store, "What does error E3 on the pool heater mean?", k=3, where={"category": "garden"}, lift=True
    )
    assert wrong.widened and wrong.chunks[0].note_id == "pool-heater-error-codes"


def test_hybrid_search_fuses_keyword_hits(house_store: NoteStore) -> None:
    result = retrieve(house_store, "TW1408-22913", k=3, hybrid=True)
    assert result.hybrid and result.chunks[0].note_id == "hvac-furnace-overview"
    assert all(-1 <= c.score <= 1 for c in result.chunks)
    filtered = retrieve(house_store, "E5 high-limit", k=2, where={"category": "pool"}, hybrid=True, min_score=0)
    assert {c.category for c in filtered.chunks} == {"pool"} and filtered.chunks[0].note_id == "pool-heater-error-codes"


def test_a_category_filter_masks_the_keyword_search_and_does_not_rescore_it(house_store: NoteStore) -> None:
    """A chunk's BM25 score is the whole store's with or without a category filter (one index,
    the other categories masked out); an index of the category alone would weigh its words anew."""
    import bm25s

    from core.retrieval import _bm25_hits

    question = "pool pump heater error breaker"
    everything = {cid: (score, category) for cid, score, category in _bm25_hits(house_store, question, 100, None)}
    for where in ({"category": "pool"}, {"category": {"$in": ["pool", "hvac"]}}):
        wanted = {"pool"} if where["category"] == "pool" else {"pool", "hvac"}
        filtered = _bm25_hits(house_store, question, 100, where)
        assert filtered and {category for _, _, category in filtered} <= wanted
        assert {cid: (score, category) for cid, score, category in filtered} == {
            cid: hit for cid, hit in everything.items() if hit[1] in wanted
        }
        assert [score for _, score, _ in filtered] == sorted((score for _, score, _ in filtered), reverse=True)
    # What it replaced: the pool chunks' own index scores them otherwise (IDF over pool alone).
    pool = house_store.documents({"category": "pool"})
    texts = [indexed_text(h.metadata["title"], h.text) for h in pool]
    alone = bm25s.BM25()
    alone.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([question], stopwords="en", show_progress=False, return_ids=False)
    docs, scores = alone.retrieve(tokens, k=len(pool), show_progress=False)
    own = {pool[int(d)].id: float(s) for d, s in zip(docs[0], scores[0], strict=True) if s > 0}
    assert any(abs(own[cid] - everything[cid][0]) > 1e-6 for cid in own if cid in everything)


# -- per-category collections -------------------------------------------------------------------

PART_CATEGORIES = ["pool", "hvac", "garden", "roof", "plumbing", "water_heater"]


def hashed_embedder(dim: int = 32) -> Embedder:
    """Deterministic random vectors per text: many chunks quickly, with no ties between scores."""

    def encode(texts: list[str]) -> Any:
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        return np.stack([np.random.default_rng(s).normal(size=dim) for s in seeds]).astype(np.float32)

    return Embedder(f"test:hashed-{dim}", dim, encode)


def fill(store: NoteStore, notes: int = 60, per_note: int = 4) -> None:
    store.write_notes(
        [
            version(store, f"note-{n:03d}", PART_CATEGORIES[n % len(PART_CATEGORIES)],
                    [f"note {n} chunk {i}" for i in range(per_note)], f"h{n}")
            for n in range(notes)
        ]
    )  # fmt: skip


def partition_ids(store: NoteStore) -> dict[str, set[str]]:
    """Chunk ids in each category's collection (white-box)."""
    found = {}
    for category in PART_CATEGORIES:
        collection = store._partition(category, create=False)
        ids = set(collection.get(include=[])["ids"]) if collection is not None else set()
        if ids:
            found[category] = ids
    return found


def whole_ids(store: NoteStore) -> dict[str, set[str]]:
    """Chunk ids in the whole collection, by category."""
    got = store._chunks.get(include=["metadatas"])
    found: dict[str, set[str]] = {}
    for cid, meta in zip(got["ids"], got["metadatas"], strict=True):
        found.setdefault(meta["category"], set()).add(cid)
    return found


@contextmanager
def plain_filter(store: NoteStore) -> Iterator[None]:
    """Search with Chroma's own `where` on the whole collection, as a store without category collections does."""
    store.partitioned = False
    try:
        yield
    finally:
        store.partitioned = True


def plain_search(store: NoteStore, query: Any, k: int, where: dict[str, Any]) -> list[Any]:
    with plain_filter(store):
        return store.search(query, k, where)


def test_category_collections_give_the_plain_filters_results(store_settings: Settings) -> None:
    store = open_store(store_settings, embedder=hashed_embedder())
    fill(store)
    assert store.partitioned and partition_ids(store) == whole_ids(store)
    queries = np.random.default_rng(7).normal(size=(12, 32))
    filters = [
        {"category": "pool"},
        {"category": {"$eq": "hvac"}},
        {"category": {"$in": ["garden", "roof"]}},
        {"category": {"$in": ["water_heater", "pool", "plumbing"]}},
        {"category": "car"},  # no note: no collection
    ]
    for where in filters:
        assert store._sources(where)[0][0] is not store._chunks if where["category"] != "car" else True
        for query in queries:
            fast, plain = store.search(query, 7, where), plain_search(store, query, 7, where)
            assert [h.id for h in fast] == [h.id for h in plain]
            assert [h.score for h in fast] == pytest.approx([h.score for h in plain], abs=1e-5)
        assert sorted(h.id for h in store.documents(where)) == sorted(
            h.id
            for h in store.documents({"$and": [where, {"chunk": {"$gte": 0}}]})  # the plain filter
        )
    assert store.search(queries[0], 5, {"category": "car"}) == []
    # Other filters still go to the whole collection.
    assert store._sources(normalize_where({"category": "pool", "note_id": "note-000"}))[0][0] is store._chunks
    assert {h.note_id for h in store.search(queries[0], 5, {"category": "pool", "note_id": "note-000"})} == {"note-000"}
    # The soft filter searches through the same path.
    question = "note 3 chunk 1"
    soft = retrieve(store, question, k=5, where={"category": "roof"}, boost={"roof": 0.2})
    with plain_filter(store):
        plain_soft = retrieve(store, question, k=5, where={"category": "roof"}, boost={"roof": 0.2})
    assert soft.soft and [c.id for c in soft.chunks] == [c.id for c in plain_soft.chunks]


class DieOnDelete:
    """A collection whose `delete` is cut off (the process killed right there)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        if name == "delete":
            raise KeyboardInterrupt
        return getattr(self._collection, name)


@pytest.mark.parametrize("kill", ["whole-written", "committed", "categories-cleaned"])
def test_a_note_moving_category_switches_at_once_in_every_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill: str
) -> None:
    store = open_store(make_settings(tmp_path), embedder=hashed_embedder())
    fill(store, notes=12)
    old_texts = visible(store, "note-004")  # a plumbing note
    new = version(store, "note-004", "water_heater", ["moved chunk 0", "moved chunk 1", "moved chunk 2"], "moved")
    if kill == "whole-written":  # new chunks in the whole collection, not yet in water_heater's
        upsert_rows = store._upsert_rows

        def die_on_category(collection: Any, rows: Any) -> None:
            if collection is not store._chunks:
                raise KeyboardInterrupt
            upsert_rows(collection, rows)

        monkeypatch.setattr(store, "_upsert_rows", die_on_category)
    elif kill == "committed":  # registry names the new version; no stale chunk deleted yet
        monkeypatch.setattr(store, "_delete_stale", lambda entries: (_ for _ in ()).throw(KeyboardInterrupt()))
    else:  # stale chunks gone from plumbing's collection, still in the whole one
        monkeypatch.setattr(store, "_chunks", DieOnDelete(store._chunks))
    with pytest.raises(KeyboardInterrupt):
        store.write_notes([new])
    monkeypatch.undo()

    query = store.embed(["moved chunk 1"])[0]
    in_plumbing = {h.note_id for h in store.search(query, 50, {"category": "plumbing"})}
    in_water = {h.note_id for h in store.search(query, 50, {"category": "water_heater"})}
    both = store.search(query, 50, {"category": {"$in": ["plumbing", "water_heater"]}})
    note_hashes = {h.hash for h in both if h.note_id == "note-004"}
    if kill == "whole-written":  # before the commit: the old version, everywhere
        assert "note-004" in in_plumbing and "note-004" not in in_water and note_hashes == {"h4"}
        assert visible(store, "note-004") == old_texts
    else:  # after it: the new version, everywhere
        assert "note-004" in in_water and "note-004" not in in_plumbing and note_hashes == {"moved"}
        assert visible(store, "note-004") == ["moved chunk 0", "moved chunk 1", "moved chunk 2"]
    for where in ({"category": "plumbing"}, {"category": "water_heater"}):
        assert [h.id for h in store.search(query, 10, where)] == [h.id for h in plain_search(store, query, 10, where)]

    assert store.recover() == ["note-004"]
    assert partition_ids(store) == whole_ids(store)  # nothing stale left in any collection
    assert store.counts() == (12, 12 * 4 + (0 if kill == "whole-written" else -1))


def test_delete_notes_empties_their_category_collections(tmp_path: Path) -> None:
    store = open_store(make_settings(tmp_path), embedder=hashed_embedder())
    fill(store, notes=12)
    store.delete_notes([f"note-{n:03d}" for n in range(0, 12, len(PART_CATEGORIES))])  # every pool note
    assert "pool" not in partition_ids(store) and partition_ids(store) == whole_ids(store)
    assert store.search(np.ones(32), 5, {"category": "pool"}) == []


def test_a_store_from_before_category_collections_keeps_working_and_gets_them(
    tmp_path: Path, write_note: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    store = open_store(settings)
    for note_id, (category, body) in NOTES.items():
        write_note(tmp_path / "notes", note_id, category, body, title=note_id)
    labels = load_categories(CATEGORIES)
    sync([tmp_path / "notes"], store, labels, tmp_path)
    # Make it look like a store written before: no category collections, no flag.
    for category in {category for category, _ in NOTES.values()}:
        store._client.delete_collection(store._partition(category, create=False).name)
    meta = dict(store._chunks.metadata)
    del meta[PARTITIONS_KEY]
    store._chunks.modify(metadata=meta)

    old = open_store(settings)
    assert not old.partitioned
    question = "How often does the pool pump run?"
    before = retrieve(old, question, k=3, where={"category": "pool"})
    assert before.chunks[0].note_id == "pool-pump-schedule" and not before.widened
    assert {c.category for c in retrieve(old, question, k=3, where={"category": {"$in": ["pool", "hvac"]}}).chunks} <= {
        "pool",
        "hvac",
    }

    # An ingest killed while copying leaves the flag unset: readers keep the plain filter.
    upsert_rows = old._upsert_rows
    calls = []

    def die_on_second(collection: Any, rows: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        upsert_rows(collection, rows)

    monkeypatch.setattr(old, "_upsert_rows", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        old.build_partitions()
    monkeypatch.undo()
    assert not open_store(settings).partitioned

    summary = sync([tmp_path / "notes"], open_store(settings), labels, tmp_path)  # the next ingest builds them
    assert summary.unchanged and not summary.added and summary.store_chunks == len(NOTES)
    rebuilt = open_store(settings)
    assert rebuilt.partitioned and not rebuilt.build_partitions()
    assert rebuilt.counts() == (len(NOTES), len(NOTES))
    got = rebuilt._chunks.get(include=["metadatas"])
    by_category: dict[str, set[str]] = {}
    for cid, m in zip(got["ids"], got["metadatas"], strict=True):
        by_category.setdefault(m["category"], set()).add(cid)
    for category, ids in by_category.items():
        assert set(rebuilt._partition(category, create=False).get(include=[])["ids"]) == ids
    after = retrieve(rebuilt, question, k=3, where={"category": "pool"})
    assert [c.id for c in after.chunks] == [c.id for c in before.chunks]


def test_searches_are_wide_and_a_store_made_narrower_is_widened_when_opened(store_settings: Settings) -> None:
    """Chroma's default HNSW width missed a tenth of the exact top 5 at 51k chunks (benchmarks.ann_recall)."""
    store = open_store(store_settings, embedder=hashed_embedder())
    fill(store, notes=12)

    def widths(s: NoteStore) -> list[int]:
        collections = [s._chunks] + [s._partition(c, create=False) for c in PART_CATEGORIES]
        return [int(c.configuration["hnsw"]["ef_search"]) for c in collections]

    assert widths(store) == [HNSW_EF_SEARCH] * (1 + len(PART_CATEGORIES)) and HNSW_EF_SEARCH > 100
    for collection in [store._chunks] + [store._partition(c, create=False) for c in PART_CATEGORIES]:
        collection.modify(configuration={"hnsw": {"ef_search": 100}})  # as a store made before the setting
    assert widths(open_store(store_settings, embedder=hashed_embedder(), create=False)) == [HNSW_EF_SEARCH] * (
        1 + len(PART_CATEGORIES)
    )
    reopened = open_store(store_settings, embedder=hashed_embedder())
    assert reopened.search(reopened.embed(["note 3 chunk 1"])[0], 3)[0].text == "note 3 chunk 1"
    assert (
        reopened.search(reopened.embed(["note 4 chunk 2"])[0], 2, {"category": "plumbing"})[0].text == "note 4 chunk 2"
    )


def test_a_deleted_whole_collection_takes_its_category_collections_along(store_settings: Settings) -> None:
    settings = store_settings
    store = open_store(settings, embedder=hashed_embedder())
    fill(store, notes=12)
    # What a rebuild does: drop the whole collection and the registry, then ingest again.
    for name in (store.name, store.name + "-notes"):
        store._client.delete_collection(name)
    rebuilt = open_store(settings, embedder=hashed_embedder())
    assert partition_ids(rebuilt) == {}
    fill(rebuilt, notes=6)
    assert rebuilt.partitioned and partition_ids(rebuilt) == whole_ids(rebuilt)

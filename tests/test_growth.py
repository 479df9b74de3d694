"""The growth benchmark's scoring: every arm at the store's size, and the soft filter at more settings."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_growth_scores_the_soft_filter_at_each_boost(tmp_path: Path, write_note) -> None:
    from benchmarks.growth import _score, markdown
    from core.schemas import QAItem
    from core.settings import from_env
    from core.store import open_store
    from ingest.cli import main as ingest_main
    from router.base import Route
    from router.policy import SOFT_BOOST, FilterPolicy

    notes = tmp_path / "notes"
    write_note(notes, "pool-pump", "pool", "Replaced the Aquavolt VS-2 pump seal in May 2024.")
    write_note(notes, "hvac-filter", "hvac", "The furnace takes a 16x25x1 MERV 11 filter.")
    write_note(notes, "roof-leak", "roof", "Shingles over the porch lifted in the March storm.")
    assert ingest_main(["--store", str(tmp_path / "store"), str(notes)]) == 0
    store = open_store(from_env({}, store=tmp_path / "store"), create=False)
    # A roof question the router sends to the pool: the stronger the boost, the more the pool note wins.
    item = QAItem("what lifted over the porch in the March storm", "roof", ("roof-leak",), ("lifted",), True)
    route = Route("pool", None, 0.9, {"pool": 0.9, "hvac": 0.05, "roof": 0.05}, "test", 0.0)
    policy = FilterPolicy().with_mode("soft")
    row = _score(store, [item], [route], policy, 1, False, [SOFT_BOOST, 2.0], oracle=True)
    arms = row["arms"]
    oracles = {"oracle hard", "oracle soft", "oracle lift"}
    assert set(arms) == {"off", "hard", "soft", "lift", f"soft boost {SOFT_BOOST:g}", "soft boost 2", *oracles}
    assert all(arms[arm] == {"hit_at_3": 1.0, "category_precision": 1.0} for arm in oracles)
    # At boost 2 the router's wrong route costs the soft filter the note; routed by the gold category it wins.
    strong = _score(store, [item], [route], FilterPolicy(boost=2.0), 1, False, oracle=True)["arms"]
    assert strong["soft"]["hit_at_3"] == 0.0 and strong["oracle soft"]["hit_at_3"] == 1.0
    assert arms[f"soft boost {SOFT_BOOST:g}"] == arms["soft"]  # the policy's own boost, named: the same search
    assert arms["off"] == {"hit_at_3": 1.0, "category_precision": 1.0} == arms["soft"]  # 0.2 does not overturn it
    assert arms["soft boost 2"] == {"hit_at_3": 0.0, "category_precision": 0.0}
    assert row["on_minus_off"]["soft boost 2"]["mean"] == -1.0
    # k = 3 with one open note: the roof note first, then only pool chunks; with every place open
    # (0) the hvac note fills the third place too.
    wide = _score(store, [item], [route], policy, 3, False, opens=[0, 1], lifts=[1])["arms"]
    assert wide["soft open 0"]["category_precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert wide["soft open 1"]["category_precision"] == 1 / 2 and wide["soft open 1"]["hit_at_3"] == 1.0
    # The pool holds one chunk, fewer than the two a filter needs: lift widens to router off, as hard does.
    assert wide["lift"] == wide["lift open 1"] == wide["off"] and wide["lift"]["hit_at_3"] == 1.0
    row.update(distractors=0, chunks=3, note_chunks=3)
    table = markdown({"command": "growth", "backend": "test", "hybrid": False, "k": 1, "split": "test", "n": 1,
                      "answerable": 1, "load_average": [0.0], "rows": [row]})  # fmt: skip
    assert "The soft and lift filters at other settings (oracle: routed by the gold category):" in table
    assert "| 0 | soft boost 2 | 0.000 | -1.000 (" in table and "| 0 | oracle hard | 1.000 | +0.000 (" in table
    assert "| hit@3 off | hit@3 hard | hit@3 soft | hit@3 lift |" in table


def test_distractor_vectors_are_cached_by_text_so_another_household_embeds_only_its_redraws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    import core.models
    from benchmarks.distractors import distractors
    from benchmarks.growth import _distractor_vectors

    embedded: list[str] = []

    def counting_embed(texts: list[str]) -> np.ndarray:
        embedded.extend(texts)
        return np.stack([np.full(384, float(len(t)), dtype=np.float32) for t in texts])

    monkeypatch.setattr(core.models, "embed", counting_embed)
    team = list(distractors(4, seed=7))
    first = _distractor_vectors(tmp_path, 7, team)
    assert first.shape == (4, 384) and len(embedded) == 4
    # Another household's keyword redraws paragraph 2: only that one is embedded again.
    word = team[2].text.split()[3].strip(".,:;")
    other = list(distractors(4, seed=7, keywords=[word]))
    assert other[2] != team[2] and other[:2] == team[:2]
    embedded.clear()
    second = _distractor_vectors(tmp_path, 7, other)
    assert len(embedded) == sum(o != t for o, t in zip(other, team, strict=True)) >= 1
    assert np.array_equal(second[:2], first[:2]) and second.shape == (4, 384)
    embedded.clear()
    assert np.array_equal(_distractor_vectors(tmp_path, 7, team), first) and embedded == []  # from the file


def test_growth_pools_households_size_by_size() -> None:
    from benchmarks.growth import _summary, markdown, pool

    def run(size_rows: dict[int, tuple[list[float], list[float]]], qa: str) -> dict:
        rows = []
        for size, (off, hard) in size_rows.items():
            hits = {"off": off, "hard": hard, "soft": hard}
            row = _summary([1.0] * len(off), hits, {arm: [1.0] * len(off) for arm in hits}, 1)
            row.update(distractors=size, chunks=size + 10, note_chunks=10)
            rows.append(row)
        return {"backend": "embedding", "hybrid": True, "boost": 0.2, "open_notes": 3, "k": 5, "split": "test",
                "qa_file": qa, "n": len(off), "answerable": len(off), "load_average": [1.0], "rows": rows}  # fmt: skip

    a = run({1000: ([1, 1, 0], [1, 1, 1]), 10000: ([1, 0, 0], [1, 1, 0])}, "data/eval/qa.jsonl")
    b = run({10000: ([1, 0], [1, 1]), 50000: ([0, 0], [1, 1])}, "data/households/vossberg/qa.jsonl")
    pooled = pool([a, b])
    assert [row["distractors"] for row in pooled["rows"]] == [10000]  # the only size both have
    row = pooled["rows"][0]
    assert row["arms"]["off"]["hit_at_3"] == 0.4 and row["arms"]["hard"]["hit_at_3"] == 0.8
    assert row["on_minus_off"]["hard"]["mean"] == pytest.approx(0.4) and row["hard_widened"] == 2
    assert pooled["n"] == 5 and pooled["split"] == "eval:test + vossberg:test"
    assert "QA eval:test + vossberg:test (5 questions" in markdown(pooled)
    assert "| 10,000 | 10,010 |" in markdown(pooled)
    with pytest.raises(ValueError, match="same --sizes"):
        pool([a, run({50000: ([1], [1])}, "x/qa.jsonl")])


@pytest.mark.slow  # two fresh processes load Chroma and the encoder
def test_ann_recall_measures_each_width_against_exact_search_and_puts_the_width_back(
    tmp_path: Path, write_note, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from benchmarks.ann_recall import _collection, main
    from ingest.cli import main as ingest_main

    notes = tmp_path / "notes"
    write_note(notes, "pool-pump", "pool", "Replaced the Aquavolt VS-2 pump seal in May 2024.")
    write_note(notes, "hvac-filter", "hvac", "The furnace takes a 16x25x1 MERV 11 filter.")
    write_note(notes, "roof-leak", "roof", "Shingles over the porch lifted in the March storm.")
    assert ingest_main(["--store", str(tmp_path / "store"), str(notes)]) == 0
    qa = tmp_path / "qa.jsonl"
    rows = [{"question": q, "split": "dev"} for q in ("when was the pump seal replaced", "which furnace filter")]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _collection(tmp_path / "store", "house_notes").modify(configuration={"hnsw": {"ef_search": 300}})

    args = ["--store", str(tmp_path / "store"), "--qa-file", str(qa), "--k", "2", "--ef", "10,800"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "3 chunks, 2 questions, k = 2" in table
    assert "| 10 | 1.000 | 1.00 | 1.000 |" in table and "| 800 | 1.000 | 1.00 | 1.000 |" in table  # 3 chunks: exact
    assert _collection(tmp_path / "store", "house_notes").configuration["hnsw"]["ef_search"] == 300  # as it was

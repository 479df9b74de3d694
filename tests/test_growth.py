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
    row = _score(store, [item], [route], policy, 1, False, [SOFT_BOOST, 2.0])
    arms = row["arms"]
    assert set(arms) == {"off", "hard", "soft", f"soft boost {SOFT_BOOST:g}", "soft boost 2"}
    assert arms[f"soft boost {SOFT_BOOST:g}"] == arms["soft"]  # the policy's own boost, named: the same search
    assert arms["off"] == {"hit_at_3": 1.0, "category_precision": 1.0} == arms["soft"]  # 0.2 does not overturn it
    assert arms["soft boost 2"] == {"hit_at_3": 0.0, "category_precision": 0.0}
    assert row["on_minus_off"]["soft boost 2"]["mean"] == -1.0
    # k = 3 with one open note: the roof note first, then only pool chunks; with every place open
    # (0) the hvac note fills the third place too.
    wide = _score(store, [item], [route], policy, 3, False, opens=[0, 1])["arms"]
    assert wide["soft open 0"]["category_precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert wide["soft open 1"]["category_precision"] == 1 / 2 and wide["soft open 1"]["hit_at_3"] == 1.0
    row.update(distractors=0, chunks=3, note_chunks=3)
    table = markdown({"command": "growth", "backend": "test", "hybrid": False, "k": 1, "split": "test", "n": 1,
                      "answerable": 1, "load_average": [0.0], "rows": [row]})  # fmt: skip
    assert "The soft filter at other settings:" in table and "| 0 | boost 2 | 0.000 | -1.000 (" in table

"""Settings, categories, the shared prompt, and the data sets (counts, splits, leaks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.categories import label_set_from_ids, load_categories
from core.errors import HousechatError
from core.schemas import read_qa, read_routing_examples
from core.settings import from_env
from finetune.data import check_splits, normalise

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_IDS = [
    "appliances",
    "brickwork",
    "car",
    "cleaning",
    "cooking",
    "electrical",
    "flooring",
    "fountain",
    "garden",
    "gutters",
    "hvac",
    "internet",
    "painting",
    "pest_control",
    "plumbing",
    "pool",
    "roof",
    "security",
    "water_heater",
    "windows_doors",
]


@pytest.fixture(scope="module")
def labels():
    return load_categories(ROOT / "data" / "categories.yaml")


def test_exactly_the_twenty_categories_with_opaque_unique_codes(labels) -> None:
    assert labels.ids == EXPECTED_IDS
    assert len(set(labels.codes)) == 20
    for cat in labels.categories:
        assert cat.code.isupper() and len(cat.code) == 2
        # Opaque: not the first two letters of the id or of any of its words.
        assert cat.code != cat.id[:2].upper(), cat
        assert cat.code.lower() not in {w[:2] for w in cat.id.split("_")}, cat
        assert len(cat.scope) > 60, f"{cat.id}: the scope must settle boundaries"


def test_scopes_settle_the_known_boundaries(labels) -> None:
    scope = {c.id: c.scope.lower() for c in labels.categories}
    assert "spa" in scope["pool"] and "pool heater" in scope["pool"] and "pool pump" in scope["pool"]
    assert "garage door" in scope["windows_doors"]
    assert "condensate" in scope["hvac"]
    assert "chimney" in scope["brickwork"] and "chimney" in scope["roof"]
    assert "doorbell" in scope["security"] and "wi-fi" in scope["internet"]
    assert "fountain" in scope["fountain"] and "pool" in scope["fountain"]


def test_settings_env_overrides_and_cli_wins(tmp_path: Path) -> None:
    env = {"HOUSECHAT_HOME": str(tmp_path), "HOUSECHAT_CHROMA_URL": "http://127.0.0.1:9", "HOUSECHAT_COLLECTION": "x"}
    settings = from_env(env)
    assert settings.home == tmp_path
    assert settings.store == tmp_path / "var" / "store"
    assert settings.chroma_url == "http://127.0.0.1:9" and settings.collection == "x"
    assert from_env(env, collection="y").collection == "y"
    assert from_env({}).home == ROOT


def test_filter_mode_and_hybrid_from_the_environment() -> None:
    assert (from_env({}).filter_mode, from_env({}).hybrid) == ("auto", True)
    settings = from_env({"HOUSECHAT_FILTER_MODE": "soft", "HOUSECHAT_HYBRID": "1"})
    assert (settings.filter_mode, settings.hybrid) == ("soft", True)
    assert from_env({"HOUSECHAT_HYBRID": "off"}).hybrid is False
    assert from_env({"HOUSECHAT_HYBRID": "1"}, hybrid=False).hybrid is False  # the flag wins
    with pytest.raises(HousechatError, match="HOUSECHAT_HYBRID"):
        from_env({"HOUSECHAT_HYBRID": "maybe"})
    with pytest.raises(HousechatError, match="filter mode 'sideways'"):
        from_env({}, filter_mode="sideways")


def test_settings_own_every_path(tmp_path: Path) -> None:
    """Every path is a plain `Path` derived from home, so no caller builds one by hand."""
    import dataclasses

    settings = from_env({"HOUSECHAT_HOME": str(tmp_path), "HOUSECHAT_REPORTS_DIR": str(tmp_path / "r")})
    paths = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.type == "Path"}
    assert len(paths) == 12 and all(isinstance(p, Path) for p in paths.values())
    assert settings.routing_data_dir == tmp_path / "data" / "routing"
    assert settings.qa_file == tmp_path / "data" / "eval" / "qa.jsonl"
    assert settings.runs_dir == tmp_path / "runs" and settings.reports_dir == tmp_path / "r"
    assert settings.ensemble_router_dir == tmp_path / "models" / "router-ensemble"
    # The ensemble lives next to the LLM router it mixes, wherever that is moved.
    moved = from_env({}, router_model_dir=tmp_path / "elsewhere" / "llm")
    assert moved.ensemble_router_dir == tmp_path / "elsewhere" / "router-ensemble"
    assert moved.ollama_router_model == "housechat-router"
    with pytest.raises(TypeError, match="unknown settings: nope"):
        from_env({}, nope=1)


def test_bad_categories_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "categories:\n  - {id: pool, code: PO, name: Pool, scope: s}\n  - {id: spa, code: PO, name: Spa, scope: s}\n"
    )
    with pytest.raises(HousechatError, match="duplicate category code"):
        load_categories(bad)
    bad.write_text("categories:\n  - {id: pool, code: p1, name: Pool, scope: s}\n")
    with pytest.raises(HousechatError, match="two uppercase letters"):
        load_categories(bad)


def test_unknown_category_suggests_the_nearest(labels) -> None:
    with pytest.raises(HousechatError, match="did you mean 'plumbing'"):
        labels.by_id("plumbin")


def test_external_label_sets_get_codes() -> None:
    ls = label_set_from_ids(["card_arrival", "age_limit", "card_arrival"])
    assert ls.ids == ["age_limit", "card_arrival"] and ls.codes == ["AA", "AB"]


def test_readers_report_path_and_line(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text(
        '{"question": "ok?", "category": "pool"}\nnot json\n{"question": "", "category": "pool"}\n'
        '{"question": "x", "category": "pooll"}\n'
    )
    examples, errors = read_routing_examples(f, known={"pool"})
    assert [e.question for e in examples] == ["ok?"]
    assert [(e.line, e.problem.split(" (")[0]) for e in errors] == [
        (2, "invalid JSON"),
        (3, "missing or empty 'question'"),
        (4, "unknown category 'pooll'"),
    ]
    assert str(errors[2]).startswith(f"{f}:4: unknown category 'pooll' — did you mean 'pool'?")
    csv_file = tmp_path / "b.csv"
    csv_file.write_text("text,category\nmy card is late,card_arrival\n")
    examples, errors = read_routing_examples(csv_file)
    assert examples[0].question == "my card is late" and examples[0].category == "card_arrival" and not errors


@pytest.mark.slow  # near-duplicate scan over every split
def test_routing_splits_meet_the_data_bar(labels) -> None:
    report = check_splits(ROOT / "data" / "routing", labels, [ROOT / "data" / "eval" / "qa.jsonl"])
    assert not report.errors, "\n".join(map(str, report.errors[:10]))
    assert report.total >= 1200
    for category in labels.ids:
        assert sum(report.counts[s][category] for s in report.counts) >= 45, category
    n = {s: sum(c.values()) for s, c in report.counts.items()}
    assert abs(n["train"] / report.total - 0.70) < 0.02 and abs(n["test"] / report.total - 0.15) < 0.02
    assert report.boundary / report.total >= 0.15


def test_check_catches_cross_split_near_duplicates(tmp_path: Path, labels) -> None:
    rows = {
        "train": "when was the pool heater serviced?",
        "val": "When was the pool heater serviced",
        "test": "what breaker feeds the garage",
    }
    for split, question in rows.items():
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"question": question, "category": "pool"}) + "\n")
    report = check_splits(tmp_path, labels, [])
    assert len(report.errors) == 1 and "near-duplicate" in report.errors[0].problem


def test_extra_training_questions_are_checked_against_val_and_test(tmp_path: Path, labels) -> None:
    from finetune.data import extra_examples

    for split, question in {
        "train": "pool pump model?",
        "val": "who services the boiler",
        "test": "wifi password",
    }.items():
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"question": question, "category": "pool"}) + "\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    lines = [
        {"question": "Wifi password?", "category": "internet"},
        {"question": "skimmer basket size", "category": "pool"},
    ]
    (extra / "mixed.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = check_splits(tmp_path, labels, [])
    assert report.extra == 2
    assert [(Path(e.path).name, e.line) for e in report.errors] == [("mixed.jsonl", 1)]  # the twin of a test question
    examples, digest = extra_examples(extra, labels)
    assert [e.category for e in examples] == ["internet", "pool"] and len(digest) == 16


def test_qa_set_is_consistent_with_the_notes(labels) -> None:
    items, errors = read_qa(ROOT / "data" / "eval" / "qa.jsonl", known=set(labels.ids))
    assert not errors
    assert len(items) >= 150 and sum(not i.answerable for i in items) >= 20
    notes = {p.stem: p.read_text(encoding="utf-8").lower() for p in (ROOT / "data" / "notes").glob("*.md")}
    assert len(notes) >= 300
    routing = {
        normalise(e.question)
        for s in ("train", "val", "test")
        for e in read_routing_examples(ROOT / "data" / "routing" / f"{s}.jsonl")[0]
    }
    for item in items:
        assert normalise(item.question) not in routing, item.question
        for note_id in item.gold_note_ids:
            assert note_id in notes, f"qa.jsonl:{item.line}: unknown gold note {note_id}"
        for keyword in item.keywords:
            assert any(keyword.lower() in notes[n] for n in item.gold_note_ids), (item.line, keyword)


@pytest.mark.slow  # near-duplicate scan over every split
def test_data_command_prints_the_table(capsys) -> None:
    from finetune.cli import main

    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "TOTAL" in out and "water_heater" in out and "data hash" in out


def test_notes_become_routing_examples_and_bad_notes_are_skipped(tmp_path: Path, labels, write_note) -> None:
    from finetune.data import note_examples

    write_note(
        tmp_path,
        "pool-leak",
        "pool",
        "Truelevel found the leak at the skimmer throat in May 2024.\n\nIt cost $480 including the dye test.",
        title="Pool leak detection",
    )
    write_note(tmp_path, "mystery", "spaceships", "A paragraph long enough to count as a real training example.")
    (tmp_path / "broken.md").write_text("---\ncategory: [pool\n---\nA paragraph long enough to count as an example.\n")
    examples, digest = note_examples(tmp_path, labels)
    assert [e.category for e in examples] == ["pool", "pool"]  # unknown category and bad YAML skipped
    assert examples[0].question == "Pool leak detection. Truelevel found the leak at the skimmer throat in May 2024."
    write_note(tmp_path, "pool-leak", "pool", "Truelevel came back in June.", title="Pool leak detection")
    assert note_examples(tmp_path, labels)[1] != digest  # the hash follows the notes

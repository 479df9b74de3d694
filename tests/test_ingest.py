"""`python -m ingest`: note validation, chunking, and incremental sync into a real Chroma with real MiniLM."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from core.categories import load_categories
from core.errors import DataError
from core.notes import MAX_NOTE_BYTES, read_note, read_notes
from core.schemas import Note
from core.settings import ENV_PREFIX, PROJECT_ROOT, Settings, from_env
from core.store import open_store
from ingest import cli
from ingest.chunking import chunk_note

LABELS = load_categories(PROJECT_ROOT / "data" / "categories.yaml")
WriteNote = Callable[..., Path]

BODIES = {
    "water_heater-flush": (
        "water_heater",
        "## Visit\n\nThe water heater was flushed in October 2024. Sediment was moderate.",
    ),
    "pool-pump-schedule": ("pool", "## Schedule\n\nThe pool pump runs 8 hours a day in summer on low speed."),
    "hvac-filters": ("hvac", "## Filters\n\nThe furnace takes a 16x25x4 MERV 11 filter, changed every 3 months."),
}


@pytest.fixture(autouse=True)
def no_housechat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads HOUSECHAT_* variables; tests pass everything explicitly."""
    for f in fields(Settings):
        monkeypatch.delenv(ENV_PREFIX + f.name.upper(), raising=False)


@pytest.fixture
def notes(tmp_path: Path, write_note: WriteNote) -> Path:
    folder = tmp_path / "notes"
    for note_id, (category, body) in BODIES.items():
        write_note(folder, note_id, category, body, date="2024-10-12")
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run the CLI with --json; (exit code, parsed stdout)."""
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def store_of(tmp_path: Path) -> Any:
    return open_store(from_env(environ={}, store=tmp_path / "store"), create=False)


# -- the incremental sync ----------------------------------------------------------------------


def test_reingest_is_idempotent(tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    code, first = run(capsys, str(notes), "--store", store)
    assert code == 0 and first["errors"] == []
    assert (first["added"], first["updated"], first["unchanged"], first["deleted"]) == (3, 0, 0, 0)
    assert first["chunks"] == 3 and first["store"] == {"notes": 3, "chunks": 3}
    code, second = run(capsys, str(notes), "--store", store)
    assert code == 0 and (second["added"], second["unchanged"], second["chunks"]) == (0, 3, 0)  # embeds nothing


def test_an_edited_note_is_reembedded_alone(
    tmp_path: Path, notes: Path, write_note: WriteNote, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    run(capsys, str(notes), "--store", store)
    long_body = "## Schedule\n\n" + " ".join(["The pool pump now runs 10 hours a day on high speed."] * 30)
    write_note(notes, "pool-pump-schedule", "pool", long_body)
    code, summary = run(capsys, str(notes), "--store", store)
    expected_chunks = len(chunk_note(read_note(notes / "pool-pump-schedule.md", "x", LABELS).note))
    assert expected_chunks > 1
    assert code == 0 and summary["notes"]["updated"] == ["pool-pump-schedule"]
    assert (summary["updated"], summary["unchanged"], summary["chunks"]) == (1, 2, expected_chunks)
    live = store_of(tmp_path).documents({"note_id": "pool-pump-schedule"})
    assert len(live) == expected_chunks and all("10 hours" in h.text for h in live)


def test_a_deleted_note_is_removed_and_reported(
    tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    run(capsys, str(notes), "--store", store)
    (notes / "hvac-filters.md").unlink()
    assert cli.main([str(notes), "--store", store]) == 0
    out = capsys.readouterr().out
    assert "1 deleted" in out and "deleted (file gone): hvac-filters" in out
    assert store_of(tmp_path).note_ids() == ["pool-pump-schedule", "water_heater-flush"]


def test_a_note_renamed_to_another_file_moves(tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    run(capsys, str(notes), "--store", store)
    (notes / "hvac-filters.md").rename(notes / "hvac-air-filters.md")
    code, summary = run(capsys, str(notes), "--store", store)
    assert code == 0 and (summary["updated"], summary["deleted"]) == (1, 0)
    [hit] = store_of(tmp_path).documents({"note_id": "hvac-filters"})
    assert hit.metadata["path"].endswith("hvac-air-filters.md")


def test_ingesting_one_file_leaves_the_others(tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    run(capsys, str(notes), "--store", store)
    code, summary = run(capsys, str(notes / "hvac-filters.md"), "--store", store)
    assert code == 0 and (summary["unchanged"], summary["deleted"]) == (1, 0)


def test_dry_run_and_check_write_nothing(
    tmp_path: Path, notes: Path, write_note: WriteNote, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    code, fresh = run(capsys, str(notes), "--store", str(store), "--dry-run")
    assert code == 0 and fresh["dry_run"] and fresh["added"] == 3 and not store.exists()
    code, checked = run(capsys, str(notes), "--store", str(store), "--check")
    assert code == 0 and checked["notes"] == 3 and checked["chunks"] == 3 and not store.exists()
    assert checked["categories"]["pool"] == 1 and checked["categories"]["roof"] == 0
    assert set(checked["categories"]) == set(LABELS.ids)

    run(capsys, str(notes), "--store", str(store))
    write_note(notes, "pool-pump-schedule", "pool", "## Schedule\n\nRuns 12 hours now.")
    code, planned = run(capsys, str(notes), "--store", str(store), "--dry-run")
    assert code == 0 and planned["notes"]["updated"] == ["pool-pump-schedule"] and planned["chunks"] == 1
    code, again = run(capsys, str(notes), "--store", str(store))
    assert again["updated"] == 1  # the dry run changed nothing


def test_check_prints_counts_per_category(notes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([str(notes), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 valid notes, 3 chunks, 0 problem(s)")
    assert "  water_heater   1" in out and "  windows_doors  0" in out


# -- bad input ---------------------------------------------------------------------------------


def front(note_id: str = "pool-x", category: str = "pool", title: str = "A title") -> str:
    return f"---\nid: {note_id}\ncategory: {category}\ntitle: {title}\n---\n"


# 424 bytes that expand to 9^6 strings: the stock loader built them all (3 GB) and echoed them back.
ALIAS_BOMB = b"""---
id: pool-bomb
category: pool
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
title: *f
tags: *f
---
body
"""

BAD_NOTES: dict[str, tuple[bytes, int, str]] = {
    # file name: (content, expected line, expected words in the message)
    "bad-yaml.md": (
        b"---\nid: pool-y\ncategory: pool\ntitle: [unclosed\n---\nbody\n",
        5,
        "invalid YAML in front matter",
    ),
    "no-front-matter.md": (
        b"# Just markdown\n\nno fields\n",
        1,
        "no YAML front matter — start the file with a line `---`",
    ),
    "unclosed.md": (b"---\nid: pool-z\ncategory: pool\n\nbody\n", 1, "front matter is not closed — add a line `---`"),
    "no-id.md": (
        b"---\ncategory: pool\ntitle: T\n---\nbody\n",
        1,
        "missing 'id' in front matter — add a line `id: no-id`",
    ),
    "no-category.md": (
        b"---\nid: pool-n\ntitle: T\n---\nbody\n",
        1,
        "missing 'category' in front matter — add a line `category: <id>`; valid ids: appliances",
    ),
    "unknown-category.md": (
        front("pool-u", "pol").encode() + b"body\n",
        3,
        "unknown category 'pol' — did you mean 'pool'? valid ids: appliances, brickwork",
    ),
    "bad-id.md": (
        front("Pool Notes").encode() + b"body\n",
        2,
        "id 'Pool Notes' is not a valid note id — use lowercase",
    ),
    "bad-date.md": (
        b"---\nid: pool-d\ncategory: pool\ntitle: T\ndate: last spring\n---\nbody\n",
        5,
        "date 'last spring' is not a date — write it as YYYY-MM-DD",
    ),
    "binary.md": (b"---\nid: pool-b\n\x00\x01\x02", 3, "binary file (contains NUL bytes)"),
    "latin1.md": (
        front("pool-l").encode() + b"caf\xe9 receipt\n",
        6,
        "not UTF-8 text (byte 0xe9) — re-save the file as UTF-8",
    ),
    "empty.md": (b"", 1, "empty file — write front matter and a body"),
    "no-body.md": (front("pool-e").encode() + b"\n  \n", 5, "the note has no body — write the note's text below"),
    "huge.md": (front("pool-h").encode() + b"x" * (MAX_NOTE_BYTES + 1), 1, "MB limit for a note — split it"),
    # YAML reads these as timestamps and the stock loader raised ValueError out of the whole ingest.
    "impossible-date.md": (
        b"---\nid: pool-i\ncategory: pool\ntitle: T\ndate: 2024-13-45\n---\nbody\n",
        5,
        "date '2024-13-45' is not a date — write it as YYYY-MM-DD",
    ),
    "impossible-extra-date.md": (
        b"---\nid: pool-j\ncategory: pool\ntitle: T\ninstalled: 2024-02-30\ndate: 2024-02-30\n---\nbody\n",
        6,
        "date '2024-02-30' is not a date",
    ),
    "alias-bomb.md": (ALIAS_BOMB, 4, "front matter uses a YAML alias"),
}


@pytest.mark.parametrize("name", sorted(BAD_NOTES))
def test_each_bad_note_is_located_with_a_fix(tmp_path: Path, name: str) -> None:
    content, line, message = BAD_NOTES[name]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_note(tmp_path / name, name, LABELS)
    assert str(caught.value).startswith(f"{name}:{line}: ") and message in str(caught.value)


def test_unreadable_paths_are_reported(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    (tmp_path / "notes" / "folder.md").mkdir()
    corpus = read_notes([tmp_path / "notes", tmp_path / "missing"], LABELS, tmp_path)
    messages = sorted(str(e) for e in corpus.errors)
    assert messages[0].startswith(f"{tmp_path / 'missing'}:1: no such file or folder — check the path")
    assert messages[1].startswith("notes/dangling.md:1: cannot read the file (No such file or directory) — check")
    assert messages[2].startswith("notes/folder.md:1: not a regular file")


def test_duplicate_ids_keep_the_stored_owner(tmp_path: Path, write_note: WriteNote) -> None:
    folder = tmp_path / "notes"
    write_note(folder, "pool-a", "pool", "first")
    copy = folder / "a-copy.md"
    copy.write_text((folder / "pool-a.md").read_text())
    fresh = read_notes([folder], LABELS, tmp_path)
    assert [n.note.path for n in fresh.notes] == ["notes/a-copy.md"]
    assert [str(e) for e in fresh.errors] == [
        "notes/pool-a.md:2: duplicate id 'pool-a', also used by notes/a-copy.md — give each note its own id (ids name notes in citations)"
    ]
    stored = read_notes([folder], LABELS, tmp_path, stored_paths={"pool-a": "notes/pool-a.md"})
    assert [n.note.path for n in stored.notes] == ["notes/pool-a.md"]
    assert stored.errors[0].path == "notes/a-copy.md" and stored.ok_paths == {"notes/pool-a.md"}


def test_bad_input_is_reported_and_everything_else_goes_in(
    tmp_path: Path, notes: Path, write_note: WriteNote, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    run(capsys, str(notes), "--store", store)
    for name, (content, _, _) in BAD_NOTES.items():
        (notes / name).write_bytes(content)
    (notes / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    (notes / "dup.md").write_text((notes / "hvac-filters.md").read_text())
    # A stored note turns bad: it is reported, and its stored version is kept (not deleted).
    (notes / "water_heater-flush.md").write_text("---\nid: water_heater-flush\ncategory: plumbin\ntitle: T\n---\nx\n")
    write_note(notes, "roof-warranty", "roof", "## Warranty\n\n25-year shingle warranty, registered 2019.")

    code, summary = run(capsys, str(notes), "--store", store)
    assert code == 1
    assert (summary["added"], summary["unchanged"], summary["deleted"]) == (1, 2, 0)
    reported = {Path(e["path"]).name: e for e in summary["errors"]}
    assert set(reported) == set(BAD_NOTES) | {"dangling.md", "dup.md", "water_heater-flush.md"}
    for name, (_, line, message) in BAD_NOTES.items():
        assert reported[name]["line"] == line and message in reported[name]["message"], name
    assert "did you mean 'plumbing'?" in reported["water_heater-flush.md"]["message"]
    assert store_of(tmp_path).note_ids() == [
        "hvac-filters",
        "pool-pump-schedule",
        "roof-warranty",
        "water_heater-flush",
    ]


def test_text_mode_prints_errors_as_path_line(tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (notes / "no-id.md").write_bytes(BAD_NOTES["no-id.md"][0])
    assert cli.main([str(notes), "--store", str(tmp_path / "store")]) == 1
    captured = capsys.readouterr()
    assert "3 added" in captured.out
    assert f"{notes / 'no-id.md'}:1: missing 'id' in front matter — add a line `id: no-id`" in captured.err
    assert "Traceback" not in captured.err


# -- the command line --------------------------------------------------------------------------


def test_help_is_instant_and_usage_errors_exit_2() -> None:
    code = (
        "import sys, contextlib, io, ingest.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out: rc = ingest.cli.main(['--help'])\n"
        "heavy = [m for m in ('chromadb', 'torch', 'sentence_transformers', 'numpy') if m in sys.modules]\n"
        "print(rc, heavy, '--chroma-url' in out.getvalue())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert result.stdout.strip() == "0 [] True"
    assert cli.main(["--check", "--dry-run"]) == 2
    assert cli.main(["--no-such-flag"]) == 2


def test_store_errors_are_printed_without_traceback(
    tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(notes), "--chroma-url", "ftp://nowhere"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: bad Chroma URL") and "Traceback" not in err


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, expect in (
        (Terminal(), "embedding: 100%"),
        (io.StringIO(), "ingest: 2/2 chunks embedded and committed"),
    ):
        monkeypatch.setattr(sys, "stderr", stream)
        with cli._progress() as progress:
            progress(1, 2)
            progress(2, 2)
        assert expect in stream.getvalue()


@pytest.mark.slow  # a Chroma server
def test_server_mode_from_the_environment(
    tmp_path: Path, notes: Path, chroma_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOUSECHAT_CHROMA_URL", chroma_server)
    collection = f"t-{uuid.uuid4().hex[:12]}"
    code, first = run(capsys, str(notes), "--collection", collection)
    assert code == 0 and first["added"] == 3
    (notes / "pool-pump-schedule.md").unlink()
    code, second = run(capsys, str(notes), "--collection", collection)
    assert (second["unchanged"], second["deleted"], second["chunks"]) == (2, 1, 0)
    assert second["store"] == {"notes": 2, "chunks": 2}


# -- an interrupted run ------------------------------------------------------------------------

INGEST_WITH_SMALL_GROUPS = "import sys, ingest.pipeline as p; p.GROUP_CHUNKS = 4; from ingest.cli import main; raise SystemExit(main(sys.argv[1:]))"


@pytest.mark.slow  # kills a real ingest subprocess mid-write, then reruns it
def test_a_killed_run_converges(tmp_path: Path, write_note: WriteNote, capsys: pytest.CaptureFixture[str]) -> None:
    folder, store = tmp_path / "notes", str(tmp_path / "store")
    ids = [f"garden-note-{i:02d}" for i in range(40)]
    for i, note_id in enumerate(ids):
        write_note(folder, note_id, "garden", f"## Bed {i}\n\nVersion one: bed {i} gets compost in March.")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    command = [sys.executable, "-c", INGEST_WITH_SMALL_GROUPS, str(folder), "--store", store]
    subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=True, capture_output=True)
    for i, note_id in enumerate(ids):
        write_note(folder, note_id, "garden", f"## Bed {i}\n\nVersion two: bed {i} gets manure in April.")

    proc = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "chunks embedded and committed" in line:
            proc.send_signal(signal.SIGKILL)  # mid-way: one group committed, the rest not
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # Killed state: every note is still there, each as one complete version (old or new).
    reader = open_store(from_env(environ={}, store=tmp_path / "store"), create=False)
    assert reader.note_ids() == ids
    versions = {}
    for note_id in ids:
        texts = [h.text for h in reader.documents({"note_id": note_id})]
        assert len(texts) == 1, note_id
        versions[note_id] = "Version two" in texts[0]
    assert 0 < sum(versions.values()) < len(ids)

    code, summary = run(capsys, str(folder), "--store", store)
    assert code == 0 and summary["updated"] == sum(not v for v in versions.values())
    assert all("Version two" in h.text for h in reader.documents()) and reader.counts() == (40, 40)
    assert reader._chunks.count() == 40  # white-box: no orphan chunk left on disk
    assert run(capsys, str(folder), "--store", store)[1]["chunks"] == 0


def test_chunking_splits_on_headings_then_by_size() -> None:
    long = " ".join(f"Sentence {i} explains the breaker panel wiring in detail." for i in range(60))
    body = f"Intro line.\n\n## Panel\n\n{long}\n\n```\n# not a heading\n```\n\n## Cost\n\n$80.\n"
    note = Note(id="electrical-panel", category="electrical", title="Panel", body=body, path="p.md", body_line=6)
    chunks = chunk_note(note)
    assert all(len(c.text) <= 900 for c in chunks) and len(chunks) >= 3
    assert chunks[0].heading == "" and chunks[0].line == 6 and chunks[0].text.startswith("Intro line.")
    panel = [c for c in chunks if c.heading == "Panel"]
    assert len(panel) >= 3 and all(c.text.startswith("## Panel") for c in panel)
    assert panel[0].line == 8 and panel[1].line == 10
    first_tail = panel[0].text.split("\n\n", 1)[1].split(". ")[-1]
    assert first_tail in panel[1].text  # consecutive pieces overlap
    assert "# not a heading" in chunks[-1].text and chunks[-1].text.endswith("$80.")  # fences and tiny tails stay put


def test_small_sections_are_packed_together() -> None:
    body = "## Visit\n\nFlushed in 2024.\n\n## Cost\n\n$145.\n\n## Next\n\nOctober 2025.\n"
    note = Note(id="w", category="water_heater", title="Flush", body=body, path="p.md", body_line=5)
    [chunk] = chunk_note(note)
    assert chunk.heading == "Visit" and chunk.line == 5 and "## Cost" in chunk.text and "## Next" in chunk.text


# -- nothing stored is lost to a bad file, a missing folder or a hostile note ------------------


def test_an_impossible_date_is_one_error_and_the_rest_goes_in(
    tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (notes / "bad-date.md").write_bytes(BAD_NOTES["impossible-date.md"][0])
    (notes / "date-title.md").write_text("---\nid: pool-t\ncategory: pool\ntitle: 2024-02-30\n---\nA body.\n")
    code, summary = run(capsys, str(notes), "--store", str(tmp_path / "store"))
    assert code == 1 and summary["added"] == 4  # the three notes and the one whose title looks like a date
    [error] = summary["errors"]
    assert error["path"].endswith("bad-date.md") and error["line"] == 5 and "is not a date" in error["message"]
    assert read_note(notes / "date-title.md", "x", LABELS).note.title == "2024-02-30"


def test_echoed_values_are_capped(tmp_path: Path) -> None:
    for name, field in (("long-id.md", "id"), ("long-category.md", "category"), ("long-date.md", "date")):
        fields = {"id": "pool-x", "category": "pool", "title": "T", field: "X" * 100_000}
        text = "---\n" + "".join(f"{k}: {v}\n" for k, v in fields.items()) + "---\nbody\n"
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError) as caught:
            read_note(tmp_path / name, name, LABELS)
        assert len(str(caught.value)) < 1000 and "XXX…" in str(caught.value), name
    (tmp_path / "bomb.md").write_bytes(ALIAS_BOMB)
    with pytest.raises(DataError) as caught:
        read_note(tmp_path / "bomb.md", "bomb.md", LABELS)
    assert len(str(caught.value)) < 300


def test_a_missing_folder_deletes_nothing(tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    run(capsys, str(notes), "--store", store)
    notes.rename(tmp_path / "renamed")
    code = cli.main([str(notes), "--store", store])
    captured = capsys.readouterr()
    assert code == 1 and "0 deleted" in captured.out
    assert f"{notes}:1: no such file or folder" in captured.err
    assert "does not exist, so this run deletes nothing" in captured.err
    assert store_of(tmp_path).note_ids() == sorted(BODIES)


def test_deleting_most_of_the_store_needs_prune(
    tmp_path: Path, notes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    run(capsys, str(notes), "--store", store)
    for path in notes.iterdir():  # an unmounted or emptied folder looks like this
        path.unlink()
    code, summary = run(capsys, str(notes), "--store", store)
    assert code == 1 and summary["deleted"] == 0 and summary["notes"]["held_back"] == sorted(BODIES)
    assert "run again with --prune" in summary["held_reason"] and "would delete 3 of the 3" in summary["held_reason"]
    assert store_of(tmp_path).note_ids() == sorted(BODIES)
    code, dry = run(capsys, str(notes), "--store", store, "--dry-run")
    assert code == 1 and dry["held_back"] == 3 and dry["deleted"] == 0
    code, pruned = run(capsys, str(notes), "--store", store, "--prune")
    assert code == 0 and pruned["deleted"] == 3 and store_of(tmp_path).note_ids() == []


def test_an_unreadable_folder_keeps_its_notes(
    tmp_path: Path, notes: Path, write_note: WriteNote, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    store = str(tmp_path / "store")
    locked = notes / "locked"
    write_note(locked, "roof-warranty", "roof", "## Warranty\n\n25-year shingle warranty, registered 2019.")
    run(capsys, str(notes), "--store", store)
    locked.chmod(0)
    if os.geteuid() == 0:  # root lists any folder: make this one refuse as it would for a user
        real_scandir = os.scandir

        def scandir(path: Any = ".") -> Any:
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        code, summary = run(capsys, str(notes), "--store", store)
    finally:
        locked.chmod(0o755)
    assert code == 1 and summary["deleted"] == 0 and summary["unchanged"] == 3
    [error] = summary["errors"]
    assert error["path"] == str(locked) and "cannot read the folder (Permission denied) — fix" in error["message"]
    assert "roof-warranty" in store_of(tmp_path).note_ids()


def test_a_duplicate_id_from_another_folder_does_not_take_over(
    tmp_path: Path, write_note: WriteNote, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    first = write_note(tmp_path / "a", "pool-dup", "pool", "## Pump\n\nThe first note about the pool pump.")
    run(capsys, str(tmp_path / "a"), "--store", store)
    other = tmp_path / "b" / "other.md"
    write_note(tmp_path / "b", "pool-dup", "pool", "## Pump\n\nAnother file claiming the same id.")
    (tmp_path / "b" / "pool-dup.md").rename(other)
    code, summary = run(capsys, str(tmp_path / "b"), "--store", store)
    assert code == 1 and summary["added"] + summary["updated"] == 0
    [error] = summary["errors"]
    assert error["path"] == str(other) and error["line"] == 2
    assert f"id 'pool-dup' belongs to the stored note from {first}" in error["message"]
    [hit] = store_of(tmp_path).documents({"note_id": "pool-dup"})
    assert "first note" in hit.text and hit.metadata["path"] == str(first)
    # Once the original file is gone (or holds another id), the id is free to move.
    first.write_text(first.read_text().replace("id: pool-dup", "id: pool-first"))
    code, summary = run(capsys, str(tmp_path / "b"), "--store", store)
    assert code == 0 and summary["notes"]["updated"] == ["pool-dup"]
    first.unlink()
    write_note(tmp_path / "c", "pool-dup", "pool", "## Pump\n\nA third copy.")
    code, summary = run(capsys, str(tmp_path / "c"), "--store", store)
    assert code == 1 and "belongs to the stored note from" in summary["errors"][0]["message"]  # b's file is there


def test_links_are_followed_inside_the_folder_and_reported_outside(tmp_path: Path, write_note: WriteNote) -> None:
    notes, outside = tmp_path / "notes", tmp_path / "outside"
    write_note(notes, "pool-a", "pool", "A pool note.")
    write_note(notes / ".archive", "roof-old", "roof", "An archived roof note.")
    write_note(outside, "car-x", "car", "A note outside the folder.")
    (notes / "archive").symlink_to(notes / ".archive")  # a folder link that stays inside: followed
    (notes / "same-as-a.md").symlink_to(notes / "pool-a.md")  # the same file twice: taken once
    (notes / "loop").symlink_to(notes)  # a loop: listed once
    (notes / "elsewhere").symlink_to(outside)  # leaves the folder: reported
    (notes / "car-x.md").symlink_to(outside / "car-x.md")
    corpus = read_notes([notes], LABELS, tmp_path)
    assert [n.note.path for n in corpus.notes] == ["notes/archive/roof-old.md", "notes/pool-a.md"]
    assert sorted(str(e) for e in corpus.errors) == [
        f"notes/car-x.md:1: link to a note outside the notes folder ({outside / 'car-x.md'}): not followed — "
        "move the notes into the folder (or link from outside into it), or ingest that path too",
        f"notes/elsewhere:1: link to a folder outside the notes folder ({outside}): not followed — "
        "move the notes into the folder (or link from outside into it), or ingest that path too",
    ]

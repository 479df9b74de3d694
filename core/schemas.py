"""Data schemas and their readers. Every problem is reported as `path:line: problem — fix`.

Readers return (records, errors): a bad line is reported and the rest of the file goes on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError, HousechatError, echo

# Questions (asked, or in a data file) longer than this are refused before any model sees them: a
# household question is a line or two; more is a paste, and it would only cost time and memory.
MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class RoutingExample:
    question: str
    category: str
    line: int = 0
    boundary: bool = False


@dataclass(frozen=True)
class QAItem:
    question: str
    category: str
    gold_note_ids: tuple[str, ...]
    keywords: tuple[str, ...]
    answerable: bool
    line: int = 0
    split: str = ""  # "dev" | "test" (eval/qa_split.py); "" for a file without the field


@dataclass(frozen=True)
class Note:
    """One house note: front matter fields plus the markdown body."""

    id: str
    category: str
    title: str
    body: str
    path: str
    date: str = ""
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    body_line: int = 1  # line number where the body starts, for chunk-level messages


def _read_text(path: Path) -> str:
    """A data file's text, or a `HousechatError` saying why it cannot be read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HousechatError(f"{path}: file not found — check the path") from None
    except IsADirectoryError:
        raise HousechatError(f"{path}: is a folder, not a file — give the path of a .jsonl or .csv file") from None
    except OSError as exc:
        raise HousechatError(f"{path}: cannot read the file ({exc.strerror}) — check that it is readable") from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise HousechatError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}) — save the file as UTF-8"
        ) from None


def _jsonl_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[DataError]]:
    records, errors = [], []
    text = _read_text(path)
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(DataError(str(path), n, f"invalid JSON ({exc.msg})", "write one JSON object per line"))
            continue
        if not isinstance(obj, dict):
            errors.append(DataError(str(path), n, "line is not a JSON object", 'write {"question": ..., ...}'))
            continue
        records.append((n, obj))
    return records, errors


def _csv_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[DataError]]:
    """CSV with a header row `text,category` (the BANKING77 layout); `text` maps to `question`."""
    import io

    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    records = []
    try:
        header = reader.fieldnames or []
        if "text" not in header or "category" not in header:
            raise HousechatError(f"{path}:1: CSV header is {echo(header)} — it needs the columns text,category")
        for row in reader:
            records.append(
                (reader.line_num, {"question": row.get("text") or "", "category": row.get("category") or ""})
            )
    except csv.Error as exc:  # e.g. a field over the csv module's 131,072-character limit
        line = reader.line_num + 1  # the reader counts the lines it finished; this one it could not
        raise HousechatError(f"{path}:{line}: unreadable CSV ({exc}) — fix that line") from None
    return records, []


def read_routing_examples(path: Path, known: set[str] | None = None) -> tuple[list[RoutingExample], list[DataError]]:
    """Routing examples from JSONL (`question`, `category`) or CSV (`text,category`).

    With `known`, a label outside that set is reported (not crashed on) and the example dropped.
    """
    path = Path(path)
    records, errors = _csv_records(path) if path.suffix.lower() == ".csv" else _jsonl_records(path)
    examples = []
    for n, obj in records:
        question, category = obj.get("question"), obj.get("category")
        if not isinstance(question, str) or not question.strip():
            errors.append(DataError(str(path), n, "missing or empty 'question'", "add the question text"))
            continue
        if len(question) > MAX_QUESTION_CHARS:
            errors.append(DataError(str(path), n, _too_long(question), "shorten the question"))
            continue
        if not isinstance(category, str) or not category.strip():
            errors.append(DataError(str(path), n, "missing or empty 'category'", "add the category id"))
            continue
        if known is not None and category not in known:
            errors.append(DataError(str(path), n, f"unknown category {echo(category)}", _hint(category, known)))
            continue
        examples.append(RoutingExample(question.strip(), category, n, bool(obj.get("boundary", False))))
    return examples, errors


def read_qa(path: Path, known: set[str] | None = None) -> tuple[list[QAItem], list[DataError]]:
    """The answer-eval set (JSONL `question, category, gold_note_ids, keywords, answerable`)."""
    path = Path(path)
    records, errors = _jsonl_records(path)
    items = []
    for n, obj in records:
        problem = None
        if not isinstance(obj.get("question"), str) or not obj["question"].strip():
            problem = ("missing or empty 'question'", "add the question text")
        elif len(obj["question"].strip()) > MAX_QUESTION_CHARS:
            problem = (_too_long(obj["question"].strip()), "shorten the question")
        elif known is not None and obj.get("category") not in known:
            problem = (f"unknown category {echo(obj.get('category'))}", _hint(str(obj.get("category")), known))
        elif not isinstance(obj.get("answerable"), bool):
            problem = ("'answerable' must be true or false", 'add "answerable": true|false')
        elif not all(isinstance(x, str) for x in obj.get("gold_note_ids", [])):
            problem = ("'gold_note_ids' must be a list of note ids", 'write ["note-id", ...]')
        elif obj["answerable"] and not obj.get("gold_note_ids"):
            problem = ("answerable question without gold_note_ids", "list the notes that answer it")
        elif obj.get("split", "") not in ("", "dev", "test"):
            problem = (f"unknown split {obj.get('split')!r}", 'write "split": "dev" or "test", or leave it out')
        if problem:
            errors.append(DataError(str(path), n, *problem))
            continue
        items.append(
            QAItem(
                obj["question"].strip(),
                str(obj.get("category")),
                tuple(obj.get("gold_note_ids", [])),
                tuple(str(k) for k in obj.get("keywords", [])),
                obj["answerable"],
                n,
                str(obj.get("split", "")),
            )
        )
    return items, errors


def _too_long(question: str) -> str:
    return f"the question is {len(question):,} characters, over the {MAX_QUESTION_CHARS:,} limit"


def _hint(wrong: str, known: set[str]) -> str:
    import difflib

    near = difflib.get_close_matches(wrong[:100], sorted(known), n=1, cutoff=0.5)
    return (f"did you mean {near[0]!r}? " if near else "") + f"valid: {', '.join(sorted(known))}"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows atomically (temp file + rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)

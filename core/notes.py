"""Read house notes (markdown with YAML front matter) and validate them.

Every problem becomes a `DataError` located at `path:line` that says how to fix it; one bad
file never stops the others. The note format (see data/BRIEF.md):

    ---
    id: water_heater-flush-2024
    category: water_heater
    title: Annual water heater flush, October 2024
    date: 2024-10-12
    tags: [flush, sediment]
    ---
    ## Visit
    ...
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.categories import LabelSet
from core.errors import DataError
from core.schemas import Note

MAX_NOTE_BYTES = 1_000_000  # a house note is a few kB; anything this big is an export or an attachment
NOTE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # no ':' — chunk ids use it as a separator
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FRONT_MATTER_FIX = "start the file with a line `---`, then `id:`, `category:` and `title:` lines, then `---`"


@dataclass(frozen=True)
class NoteFile:
    """A valid note, the SHA-256 of its file's bytes, and the line of its `id:` field."""

    note: Note
    sha256: str
    id_line: int


@dataclass
class Corpus:
    """What a scan found: valid notes, errors, and the paths that were read (fine or not)."""

    notes: list[NoteFile] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    ok_paths: set[str] = field(default_factory=set)
    failed_paths: set[str] = field(default_factory=set)

    def fail(self, error: DataError) -> None:
        """Record a problem; its file counts as read with errors (whatever is stored for it is kept)."""
        self.errors.append(error)
        self.failed_paths.add(error.path)


def note_path(path: Path, home: Path) -> str:
    """How a note's path is shown and stored: relative to `home` when inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path(os.path.abspath(home))))
    except ValueError:
        return str(absolute)


def find_note_files(paths: list[Path]) -> tuple[list[Path], list[DataError]]:
    """Markdown files under `paths` (folders are searched recursively, hidden entries skipped)."""
    files: list[Path] = []
    errors = []
    for root in paths:
        if root.is_dir():
            found = (
                p for p in root.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
            files.extend(sorted(found))
        elif root.exists() or root.is_symlink():
            files.append(root)
        else:
            errors.append(
                DataError(str(root), 1, "no such file or folder", "check the path (the default is data/notes)")
            )
    return list(dict.fromkeys(files)), errors


def read_notes(paths: list[Path], labels: LabelSet, home: Path, stored_paths: dict[str, str] | None = None) -> Corpus:
    """Read and validate every note under `paths`.

    Two files with the same id: the one the store already holds for that id keeps it (else the
    first in path order) and the other is reported.
    """
    files, missing = find_note_files(paths)
    corpus = Corpus()
    for error in missing:
        corpus.fail(error)
    by_id: dict[str, NoteFile] = {}
    for path in files:
        shown = note_path(path, home)
        if shown in corpus.ok_paths or shown in corpus.failed_paths:
            continue
        try:
            read = read_note(path, shown, labels)
        except DataError as error:
            corpus.fail(error)
            continue
        note_id = read.note.id
        if note_id in by_id:
            first = by_id[note_id]
            if (stored_paths or {}).get(note_id) == shown:
                first, read = read, first  # the store's current owner of the id keeps it
                by_id[note_id] = first
                corpus.ok_paths.discard(read.note.path)
                corpus.ok_paths.add(first.note.path)
            corpus.fail(
                DataError(
                    read.note.path,
                    read.id_line,
                    f"duplicate id {note_id!r}, also used by {first.note.path}",
                    "give each note its own id (ids name notes in citations)",
                )
            )
            continue
        by_id[note_id] = read
        corpus.ok_paths.add(shown)
    corpus.notes = sorted(by_id.values(), key=lambda r: r.note.path)
    return corpus


def read_note(path: Path, shown: str, labels: LabelSet) -> NoteFile:
    """One note file, validated. Raises `DataError` at the first problem."""
    raw = _read_bytes(path, shown)
    if b"\x00" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        raise DataError(
            shown,
            line,
            "binary file (contains NUL bytes)",
            "notes are UTF-8 markdown; move other files out of the notes folder",
        )
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            shown, line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", "re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(shown, 1, "empty file", "write front matter and a body, or delete the file")
    lines = text.splitlines()
    if lines[0].strip() != "---":
        raise DataError(shown, 1, "no YAML front matter", FRONT_MATTER_FIX)
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise DataError(shown, 1, "front matter is not closed", "add a line `---` after the last field")
    fields, key_lines = _parse_front_matter("\n".join(lines[1:end]), shown)
    body = "\n".join(lines[end + 1 :])
    note = _note(fields, key_lines, shown, labels, body, body_line=end + 2)
    if not body.strip():
        raise DataError(shown, end + 1, "the note has no body", "write the note's text below the closing `---`")
    return NoteFile(note, hashlib.sha256(raw).hexdigest(), key_lines.get("id", 1))


def _read_bytes(path: Path, shown: str) -> bytes:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise DataError(shown, 1, "not a regular file", "notes are *.md files; rename or move this entry")
        size = info.st_size
        if size > MAX_NOTE_BYTES:
            raise DataError(
                shown,
                1,
                f"file is {size / 1e6:.1f} MB, over the {MAX_NOTE_BYTES / 1e6:.0f} MB limit for a note",
                "split it into smaller notes, or move attachments out of the notes folder",
            )
        return path.read_bytes()
    except OSError as exc:
        raise DataError(
            shown, 1, f"cannot read the file ({exc.strerror})", "check that it exists and is readable"
        ) from None


def _parse_front_matter(text: str, shown: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The front matter fields and the file line of each key (front matter starts on line 2)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml when present: ~10x faster
    try:
        node = loader.get_single_node()
        fields = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "syntax error"
        raise DataError(
            shown,
            line,
            f"invalid YAML in front matter ({problem})",
            "fix the syntax; quote values that contain ': ' or start with a special character",
        ) from None
    finally:
        loader.dispose()
    if fields is None:
        raise DataError(shown, 1, "front matter is empty", "add `id:`, `category:` and `title:` lines")
    if not isinstance(fields, dict) or not isinstance(node, yaml.MappingNode):
        raise DataError(shown, 2, "front matter is not a list of `key: value` fields", FRONT_MATTER_FIX)
    key_lines = {str(key.value): key.start_mark.line + 2 for key, _ in node.value}
    return {str(k): v for k, v in fields.items()}, key_lines


def _note(
    fields: dict[str, Any], key_lines: dict[str, int], shown: str, labels: LabelSet, body: str, body_line: int
) -> Note:
    def line(key: str) -> int:
        return key_lines.get(key, 1)

    stem = Path(shown).stem
    note_id = fields.get("id")
    if note_id is None or note_id == "":
        raise DataError(
            shown, 1, "missing 'id' in front matter", f"add a line `id: {stem}` (ids are <category>-<slug>)"
        )
    if not isinstance(note_id, str) or not NOTE_ID_RE.match(note_id):
        raise DataError(
            shown,
            line("id"),
            f"id {note_id!r} is not a valid note id",
            "use lowercase letters, digits, '-' and '_', e.g. `pool-heater-service-2024`",
        )
    category = fields.get("category")
    if category is None or category == "":
        raise DataError(
            shown,
            1,
            "missing 'category' in front matter",
            f"add a line `category: <id>`; valid ids: {', '.join(labels.ids)}",
        )
    if not isinstance(category, str) or category not in labels:
        raise DataError(shown, line("category"), f"unknown category {category!r}", labels.suggest(str(category)))
    title = fields.get("title")
    if not isinstance(title, str) or not title.strip():
        raise DataError(
            shown,
            line("title") if "title" in fields else 1,
            "missing or empty 'title'",
            "add a line `title: <a short description>`",
        )
    return Note(
        id=note_id,
        category=category,
        title=" ".join(title.split()),
        body=body,
        path=shown,
        date=_date(fields.get("date"), shown, line("date")),
        tags=_tags(fields.get("tags"), shown, line("tags")),
        extra={k: v for k, v in fields.items() if k not in {"id", "category", "title", "date", "tags"}},
        body_line=body_line,
    )


def _date(value: Any, shown: str, line: int) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, dt.date):
        return value.isoformat()[:10]
    if isinstance(value, str) and DATE_RE.match(value):
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise DataError(shown, line, f"date {value!r} is not a date", "write it as YYYY-MM-DD, e.g. `date: 2024-10-12`")


def _tags(value: Any, shown: str, line: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list) and all(isinstance(t, (str, int, float)) for t in value):
        return tuple(str(t) for t in value)
    raise DataError(shown, line, "'tags' must be a list of words", "write `tags: [flush, sediment]`")

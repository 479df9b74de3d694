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
import functools
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.categories import ASSIGN_CODES, LabelSet
from core.errors import MAX_ECHO_CHARS, DataError, UnknownCategory, clip, echo
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
    """What a scan found: valid notes, errors, and the paths that were read (fine or not).

    `unreadable_dirs` are folders that could not be listed and `missing_roots` given paths that do
    not exist: whatever the store holds from them is kept, because nothing says those notes are gone.
    """

    notes: list[NoteFile] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    ok_paths: set[str] = field(default_factory=set)
    failed_paths: set[str] = field(default_factory=set)
    unreadable_dirs: list[str] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)

    def fail(self, error: DataError) -> None:
        """Record a problem; its file counts as read with errors (whatever is stored for it is kept)."""
        self.errors.append(error)
        self.failed_paths.add(error.path)

    def under_unreadable_dir(self, path: str) -> bool:
        """Whether a stored path lies in a folder this scan could not list."""
        return any(path.startswith(folder.rstrip("/") + "/") for folder in self.unreadable_dirs)


@dataclass
class Scan:
    """The note files under the given paths, and what could not be looked at."""

    files: list[Path] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)


def note_path(path: Path, home: Path) -> str:
    """How a note's path is shown and stored: relative to `home` when inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path(os.path.abspath(home))))
    except ValueError:
        return str(absolute)


def path_gone(home: Path, stored: str) -> bool:
    """True only when a stored note's file certainly no longer exists (not when it cannot be checked)."""
    try:
        os.lstat(home / stored)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:  # permission denied, I/O error: the file may well be there
        return False
    return False


def find_note_files(paths: list[Path], home: Path | None = None) -> Scan:
    """Markdown files under `paths`: folders are searched recursively, hidden entries skipped.

    Links are followed when their target stays inside the given folder; a link that leads out of
    it, and a folder that cannot be listed, are reported. A file reached both directly and through
    a link is taken once, under its own path.
    """
    scan = Scan()
    for root in paths:
        if root.is_dir():
            _walk_root(root, scan, home)
        elif root.exists() or root.is_symlink():
            scan.files.append(root)  # named explicitly: read it (links included), errors come from reading
        else:
            shown = str(root)  # as the user wrote it
            scan.missing_roots.append(shown)
            scan.errors.append(
                DataError(
                    shown,
                    1,
                    "no such file or folder",
                    "check the path (the default is data/notes); nothing stored was deleted",
                )
            )
    scan.files = list(dict.fromkeys(scan.files))
    return scan


def _shown(path: Path, home: Path | None) -> str:
    return note_path(path, home) if home is not None else str(path)


def _walk_root(root: Path, scan: Scan, home: Path | None) -> None:
    """Depth-first in name order; links to folders are followed after every real folder is listed."""
    real_root = os.path.realpath(root)
    seen_dirs = {real_root}
    real_files: dict[str, Path] = {}  # target -> the path it is taken under
    folder_links: list[Path] = []
    found: list[tuple[Path, bool]] = []  # (path, reached through a link)

    def inside(target: str) -> bool:
        return target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)

    def walk(folder: Path) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            shown = _shown(folder, home)
            scan.unreadable_dirs.append(shown)
            scan.errors.append(
                DataError(
                    shown,
                    1,
                    f"cannot read the folder ({exc.strerror})",
                    "fix its permissions (e.g. `chmod u+rx`) and run again; the notes stored from it are kept",
                )
            )
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target = os.path.realpath(path)
                is_dir = os.path.isdir(target)
                if not is_dir and not entry.name.endswith(".md"):
                    continue
                if os.path.exists(target) and not inside(target):
                    kind = "folder" if is_dir else "note"
                    scan.errors.append(
                        DataError(
                            _shown(path, home),
                            1,
                            f"link to a {kind} outside the notes folder ({target}): not followed",
                            "move the notes into the folder (or link from outside into it), or ingest that path too",
                        )
                    )
                elif is_dir:
                    folder_links.append(path)
                else:
                    found.append((path, True))  # a dangling link is reported when it is read
            elif entry.is_dir(follow_symlinks=False):
                if entry.name.endswith(".md"):
                    found.append((path, False))  # reading it reports "not a regular file"
                seen_dirs.add(os.path.realpath(path))
                walk(path)
            elif entry.name.endswith(".md"):
                found.append((path, False))

    walk(root)
    while folder_links:  # links found inside linked folders join the queue
        link = folder_links.pop(0)
        target = os.path.realpath(link)
        if target in seen_dirs:
            continue  # already listed under its own path (or a loop)
        seen_dirs.add(target)
        walk(link)
    for path, _ in sorted(found, key=lambda item: item[1]):  # own paths first, then links
        real_files.setdefault(os.path.realpath(path), path)
    taken = set(real_files.values())
    scan.files.extend(sorted(p for p, _ in found if p in taken))


def read_notes(paths: list[Path], labels: LabelSet, home: Path, stored_paths: dict[str, str] | None = None) -> Corpus:
    """Read and validate every note under `paths`.

    A note id belongs to the file the store holds it from: another file claiming it is reported,
    unless that file is gone or now holds another id. Two files read now with the same id: the
    store's owner keeps it (else the first in path order) and the other is reported.
    """
    scan = find_note_files(paths, home)
    corpus = Corpus(unreadable_dirs=scan.unreadable_dirs, missing_roots=scan.missing_roots)
    for error in scan.errors:
        corpus.fail(error)
    stored_paths = stored_paths or {}
    by_id: dict[str, NoteFile] = {}
    for path in scan.files:
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
            if stored_paths.get(note_id) == shown:
                first, read = read, first  # the store's current owner of the id keeps it
                by_id[note_id] = first
                corpus.ok_paths.discard(read.note.path)
                corpus.ok_paths.add(first.note.path)
            corpus.fail(
                DataError(
                    read.note.path,
                    read.id_line,
                    f"duplicate id {echo(note_id)}, also used by {first.note.path}",
                    "give each note its own id (ids name notes in citations)",
                )
            )
            continue
        by_id[note_id] = read
        corpus.ok_paths.add(shown)
    for note_id, read in list(by_id.items()):
        owner = stored_paths.get(note_id)
        if owner is None or owner == read.note.path or not _still_claims(owner, note_id, corpus, labels, home):
            continue
        del by_id[note_id]
        corpus.ok_paths.discard(read.note.path)
        corpus.fail(
            DataError(
                read.note.path,
                read.id_line,
                f"id {echo(note_id)} belongs to the stored note from {owner}",
                f"give this note its own id, or delete or rename {owner} first (it keeps its id while it exists)",
            )
        )
    corpus.notes = sorted(by_id.values(), key=lambda r: r.note.path)
    return corpus


def _still_claims(owner: str, note_id: str, corpus: Corpus, labels: LabelSet, home: Path) -> bool:
    """Whether the file the store holds `note_id` from still is (or may be) that note."""
    if owner in corpus.ok_paths:
        return False  # read in this run and valid, under another id
    if path_gone(home, owner):
        return False  # the note moved to its new file
    if owner in corpus.failed_paths or corpus.under_unreadable_dir(owner):
        return True  # cannot tell: the stored note stays its owner's
    try:
        return read_note(home / owner, owner, labels).note.id == note_id
    except DataError:
        return True


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


@functools.cache
def _front_matter_loader() -> type:
    """A safe YAML loader (libyaml when present: ~10x faster) whose impossible dates stay strings.

    YAML reads `2024-13-45` or `2024-02-30` as a timestamp and the stock loader raises ValueError;
    as a string it reaches the field's own check (`date`) or is simply text (`title`).
    """
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class FrontMatterLoader(base):  # type: ignore[misc,valid-type]
        pass

    def timestamp(loader: Any, node: Any) -> Any:
        try:
            return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
        except (ValueError, OverflowError):
            return loader.construct_scalar(node)

    FrontMatterLoader.add_constructor("tag:yaml.org,2002:timestamp", timestamp)
    return FrontMatterLoader


def _parse_front_matter(text: str, shown: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The front matter fields and the file line of each key (front matter starts on line 2)."""
    import yaml

    loader = _front_matter_loader()(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_aliases(node, shown)
        fields = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "syntax error"
        raise DataError(
            shown,
            line,
            f"invalid YAML in front matter ({clip(str(problem), MAX_ECHO_CHARS)})",
            "fix the syntax; quote values that contain ': ' or start with a special character",
        ) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # values YAML parses but cannot build
        raise DataError(
            shown,
            2,
            f"front matter has a value that cannot be read ({clip(str(exc), MAX_ECHO_CHARS)})",
            "write the fields as plain text: `id:`, `category:`, `title:`, `date: YYYY-MM-DD`, `tags: [a, b]`",
        ) from None
    finally:
        loader.dispose()
    if fields is None:
        raise DataError(shown, 1, "front matter is empty", "add `id:`, `category:` and `title:` lines")
    if not isinstance(fields, dict) or not isinstance(node, yaml.MappingNode):
        raise DataError(shown, 2, "front matter is not a list of `key: value` fields", FRONT_MATTER_FIX)
    key_lines = {str(key.value): key.start_mark.line + 2 for key, _ in node.value}
    return {str(k): v for k, v in fields.items()}, key_lines


def _refuse_aliases(root: Any, shown: str) -> None:
    """Refuse YAML aliases (`*name`): a few hundred bytes of nested aliases expand to gigabytes.

    An alias makes the composer hand back a node it already returned, so a node seen twice is one.
    """
    import yaml

    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise DataError(
                shown,
                node.start_mark.line + 2,
                "front matter uses a YAML alias (`*name` repeating an `&name` anchor)",
                "write the value out in full; notes do not support anchors and aliases",
            )
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(child for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


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
            f"id {echo(note_id)} is not a valid note id",
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
        raise UnknownCategory(
            shown,
            line("category"),
            str(category)[:100],
            f"unknown category {echo(category)}",
            f"{labels.suggest(str(category)[:100])} (from {labels.source}); or add it there and run `{ASSIGN_CODES}`",
        )
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
    raise DataError(shown, line, f"date {echo(value)} is not a date", "write it as YYYY-MM-DD, e.g. `date: 2024-10-12`")


def _tags(value: Any, shown: str, line: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list) and all(isinstance(t, (str, int, float)) for t in value):
        return tuple(str(t) for t in value)
    raise DataError(shown, line, "'tags' must be a list of words", "write `tags: [flush, sediment]`")

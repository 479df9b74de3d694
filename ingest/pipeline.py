"""The incremental sync: notes on disk -> chunks in the store, touching only what changed.

1. `recover()` finishes whatever a killed run left half-written (see core/store.py), and a
   store made before the per-category collections gets them (`build_partitions()`).
2. Read and validate every note; compare each note's content hash with the store's.
3. Embed and write new and changed notes, a group of notes at a time, each group committed
   before the next is embedded (a killed run keeps the groups it finished).
4. Remove stored notes whose file is gone.

A note with an error is skipped and whatever the store holds for it is kept: a stored note is
removed only when its file no longer exists, or now validly carries another id. Deletion is the
one step that loses data, so it holds back when the run cannot see the whole picture: a given
path that does not exist, or a folder that cannot be listed, deletes nothing from it; and a run
that would delete more than `PRUNE_SHARE` of the stored notes (a renamed or unmounted folder
looks exactly like that) deletes nothing unless `prune=True`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.categories import LabelSet
from core.errors import DataError, UnknownCategory
from core.notes import Corpus, NoteFile, path_gone, read_notes
from core.store import ChunkMeta, NoteEntry, NoteStore, NoteVersion, indexed_text
from ingest.chunking import CHUNKER_ID, Chunk, chunk_note

PRUNE_SHARE = 0.5  # deleting more than this share of the stored notes in one run needs --prune
GROUP_CHUNKS = 128  # chunks embedded and committed together: progress granularity vs. write overhead

Progress = Callable[[int, int], None]  # (chunks written so far, chunks to write)


@dataclass(frozen=True)
class PreparedNote:
    """A valid note, chunked, with the hash that identifies this version of it."""

    file: NoteFile
    chunks: list[Chunk]
    hash: str

    @property
    def id(self) -> str:
        """The note id."""
        return self.file.note.id


@dataclass
class Summary:
    """What a sync did (or, in a dry run, would do)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)  # gone from disk but kept: the run may not delete them
    held_reason: str = ""  # why they were kept and how to delete them
    chunks: int = 0  # chunks embedded and written (0 when nothing changed)
    errors: list[DataError] = field(default_factory=list)
    store_notes: int = 0
    store_chunks: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        """The machine-readable summary (`--json`)."""
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "deleted": len(self.deleted),
            "held_back": len(self.held_back),
            "chunks": self.chunks,
            "errors": [error_json(e) for e in self.errors],
            "unknown_categories": unknown_categories(self.errors),
            "notes": {
                "added": self.added,
                "updated": self.updated,
                "deleted": self.deleted,
                "held_back": self.held_back,
                "recovered": self.recovered,
            },
            "held_reason": self.held_reason,
            "store": {"notes": self.store_notes, "chunks": self.store_chunks},
            "dry_run": self.dry_run,
        }


@dataclass
class CheckReport:
    """What `--check` found: valid notes per category, their chunk count, and the errors."""

    per_category: dict[str, int]
    notes: int
    chunks: int
    errors: list[DataError]

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report (`--check --json`)."""
        return {
            "notes": self.notes,
            "chunks": self.chunks,
            "categories": self.per_category,
            "errors": [error_json(e) for e in self.errors],
            "unknown_categories": unknown_categories(self.errors),
        }


def error_json(error: DataError) -> dict[str, Any]:
    """A data error as `{"path", "line", "message"}`."""
    return {"path": error.path, "line": error.line, "message": f"{error.problem} — {error.fix}"}


def unknown_categories(errors: list[DataError]) -> dict[str, list[str]]:
    """The notes filed under a category the categories file does not hold: {category: [paths]}.

    After a category is removed from the file, its notes land here until they are re-filed.
    """
    found: dict[str, list[str]] = {}
    for error in errors:
        if isinstance(error, UnknownCategory):
            found.setdefault(error.category, []).append(error.path)
    return found


def version_hash(file: NoteFile) -> str:
    """The hash of everything that decides a note's chunks: file bytes, path and chunker settings."""
    key = f"{file.sha256}\n{file.note.path}\n{CHUNKER_ID}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def prepare(corpus: Corpus) -> list[PreparedNote]:
    """Chunk every valid note of a corpus."""
    return [PreparedNote(f, chunk_note(f.note), version_hash(f)) for f in corpus.notes]


def check(paths: list[Path], labels: LabelSet, home: Path) -> CheckReport:
    """Validate and chunk the notes without touching any store."""
    corpus = read_notes(paths, labels, home)
    prepared = prepare(corpus)
    counts = Counter(p.file.note.category for p in prepared)
    return CheckReport(
        per_category={c: counts.get(c, 0) for c in labels.ids},
        notes=len(prepared),
        chunks=sum(len(p.chunks) for p in prepared),
        errors=corpus.errors,
    )


def sync(
    paths: list[Path],
    store: NoteStore | None,
    labels: LabelSet,
    home: Path,
    dry_run: bool = False,
    progress: Progress | None = None,
    prune: bool = False,
) -> Summary:
    """Bring the store in line with the notes under `paths`.

    `store=None` (only with `dry_run`) stands for a store that does not exist yet. `prune` allows
    deleting more than `PRUNE_SHARE` of the stored notes in this run.
    """
    if store is None and not dry_run:
        raise ValueError("sync needs a store unless it is a dry run")
    summary = Summary(dry_run=dry_run)
    if store is not None and not dry_run:
        summary.recovered = store.recover()
        store.build_partitions()  # a store from before the per-category collections gets them, once
    stored = store.live_notes() if store is not None else {}
    corpus = read_notes(paths, labels, home, stored_paths={i: e.path for i, e in stored.items()})
    summary.errors = corpus.errors
    changed = []
    for note in prepare(corpus):
        old = stored.get(note.id)
        if old is not None and old.hash == note.hash:
            summary.unchanged.append(note.id)
            continue
        (summary.updated if old is not None else summary.added).append(note.id)
        changed.append(note)
    present = {f.note.id for f in corpus.notes}
    gone = sorted(
        note_id for note_id, entry in stored.items() if note_id not in present and _is_gone(entry, corpus, home)
    )
    if gone and corpus.missing_roots:
        summary.held_back = gone
        summary.held_reason = (
            f"{', '.join(corpus.missing_roots)} does not exist, so this run deletes nothing — "
            "check the path (is the folder renamed or not mounted?) and run again"
        )
    elif len(gone) > PRUNE_SHARE * len(stored) and not prune:
        summary.held_back = gone
        summary.held_reason = (
            f"this run would delete {len(gone)} of the {len(stored)} stored notes (their files are gone), "
            "so it deleted nothing — check the notes folder is the right one and mounted; "
            "to delete them, run again with --prune"
        )
    else:
        summary.deleted = gone
    summary.chunks = sum(len(n.chunks) for n in changed)
    if store is not None and not dry_run:
        _write(store, changed, summary.chunks, progress)
        store.delete_notes(summary.deleted)
    if store is not None:
        summary.store_notes, summary.store_chunks = store.counts()
    return summary


def _is_gone(entry: NoteEntry, corpus: Corpus, home: Path) -> bool:
    """A stored note missing from the corpus goes when its file is gone or validly holds another note.

    A file with an error keeps whatever the store holds for it.
    """
    if entry.path in corpus.failed_paths or corpus.under_unreadable_dir(entry.path):
        return False
    return entry.path in corpus.ok_paths or path_gone(home, entry.path)


def _write(store: NoteStore, notes: list[PreparedNote], total: int, progress: Progress | None) -> None:
    done = 0
    for group in _groups(notes, GROUP_CHUNKS):
        texts = [indexed_text(n.file.note.title, c.text) for n in group for c in n.chunks]
        vectors = iter(store.embed(texts))
        versions = []
        for n in group:
            embeddings = [next(vectors) for _ in n.chunks]
            versions.append(_version(n, embeddings))
        store.write_notes(versions)
        done += len(texts)
        if progress is not None:
            progress(done, total)


def _groups(notes: list[PreparedNote], max_chunks: int) -> list[list[PreparedNote]]:
    groups: list[list[PreparedNote]] = [[]]
    size = 0
    for note in notes:
        if groups[-1] and size + len(note.chunks) > max_chunks:
            groups.append([])
            size = 0
        groups[-1].append(note)
        size += len(note.chunks)
    return [g for g in groups if g]


def _version(prepared: PreparedNote, embeddings: list[Any]) -> NoteVersion:
    note = prepared.file.note
    entry = NoteEntry(note.id, prepared.hash, note.path, note.category, note.title, len(prepared.chunks))
    metadatas = [
        ChunkMeta(
            note_id=note.id,
            category=note.category,
            title=note.title,
            date=note.date,
            path=note.path,
            chunk=chunk.index,
            heading=chunk.heading,
            line=chunk.line,
            hash=prepared.hash,
        ).to_metadata()
        for chunk in prepared.chunks
    ]
    return NoteVersion(entry, [c.text for c in prepared.chunks], metadatas, embeddings)

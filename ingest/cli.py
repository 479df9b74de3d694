"""`python -m ingest`: put the house notes into the store, re-embedding only what changed.

Exit codes: 0 success, 1 a note or the store had a problem (the message says how to fix it), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli import run

if TYPE_CHECKING:
    from core.categories import LabelSet
    from core.errors import DataError
    from ingest.pipeline import CheckReport, Progress, Summary

EPILOG = """\
examples:
  python -m ingest                       data/notes into the default store (var/store)
  python -m ingest notes/ --store DIR    another folder, another store
  python -m ingest --dry-run             say what would change, write nothing
  python -m ingest --check               validate only: counts per category, errors, no store
  python -m ingest --json                machine-readable summary on stdout
  python -m ingest --prune               also when that deletes most stored notes (a folder emptied on purpose)
  HOUSECHAT_ENCODER=minilm-int8 python -m ingest --rebuild
                                         drop the collection and re-embed every note (e.g. with another encoder)

A note is markdown with YAML front matter (id, category, title; optional date, tags).
Unchanged notes are not re-embedded; notes whose file is gone are removed, but a run deletes
nothing when a given path does not exist, keeps the notes of a folder it cannot read, and deletes
more than half of the stored notes only with --prune.
"""


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by `--help` tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Ingest house notes into Chroma, incrementally.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="note files or folders (default: data/notes)"
    )
    parser.add_argument("--store", metavar="DIR", help="embedded Chroma directory (env HOUSECHAT_STORE)")
    parser.add_argument(
        "--chroma-url", metavar="URL", help="a Chroma server, e.g. http://127.0.0.1:8000 (env HOUSECHAT_CHROMA_URL)"
    )
    parser.add_argument("--collection", metavar="NAME", help="collection name (default house_notes)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="validate only and count notes per category (and name notes filed under a category not in the "
        "categories file); write nothing",
    )
    mode.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    mode.add_argument(
        "--rebuild",
        action="store_true",
        help="delete the collection (chunks, note registry, category collections) and embed every note again "
        "with the current encoder (HOUSECHAT_ENCODER); readers see an empty store until it finishes",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="allow deleting more than half of the stored notes in this run (their files are gone)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout (logs go to stderr)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    return run(make_parser(), _run, argv)


def _check_rebuild_source(paths: list[Path], labels: LabelSet, home: Path) -> None:
    """Refuse a rebuild that would drop the store and find nothing to put back (a mistyped path)."""
    from core.errors import HousechatError
    from ingest.pipeline import check

    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise HousechatError(
            f"--rebuild: {', '.join(missing)} does not exist — the store was left as it is; "
            "give the notes folder (default data/notes)"
        )
    if check(paths, labels, home).notes == 0:
        raise HousechatError(
            f"--rebuild: no valid notes under {', '.join(map(str, paths))} — the store was left as it is; "
            "run `python -m ingest --check` to see why"
        )


def _run(args: argparse.Namespace) -> int:
    from core.categories import load_categories
    from core.settings import from_env

    settings = from_env(store=args.store, chroma_url=args.chroma_url, collection=args.collection)
    labels = load_categories(settings.categories_file)
    paths = list(args.paths) or [settings.notes_dir]
    if args.check:
        from ingest.pipeline import check

        report = check(paths, labels, settings.home)
        _print_check(report, args.json)
        _explain_unknown_categories(report.errors, str(settings.categories_file), stored=False)
        return 1 if report.errors else 0

    from core.store import StoreMissing, drop_store, open_store
    from ingest.pipeline import sync

    if args.rebuild:
        _check_rebuild_source(paths, labels, settings.home)
        dropped = drop_store(settings)
        print(f"rebuild: dropped {dropped} collection(s) of {settings.collection!r}", file=sys.stderr)
    try:
        store = open_store(settings, create=not args.dry_run)
    except StoreMissing:
        if not args.dry_run:
            raise
        store = None  # a dry run against a store that does not exist yet: everything would be added
    with _progress() as progress:
        summary = sync(paths, store, labels, settings.home, dry_run=args.dry_run, progress=progress, prune=args.prune)
    _print_summary(summary, store.location if store else "", args.json)
    _explain_unknown_categories(summary.errors, str(settings.categories_file), stored=True)
    if summary.held_back:
        print(f"error: {summary.held_reason}", file=sys.stderr)
    return 1 if summary.errors or summary.held_back else 0


@contextmanager
def _progress() -> Iterator[Progress]:
    """A tqdm bar on a terminal; otherwise one log line per committed group (for CI logs)."""
    if not sys.stderr.isatty():

        def log(done: int, total: int) -> None:
            print(f"ingest: {done}/{total} chunks embedded and committed", file=sys.stderr, flush=True)

        yield log
        return
    from tqdm import tqdm

    bars: list[tqdm] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="chunk", desc="embedding", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _print_errors(errors: list[DataError]) -> None:
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(
            f"{len(errors)} problem(s): those notes were skipped and anything already stored for them was kept — "
            "fix them and run again",
            file=sys.stderr,
        )


def _explain_unknown_categories(errors: list[DataError], categories_file: str, stored: bool) -> None:
    """One paragraph per category the notes use but the categories file does not hold (on stderr).

    A removed category leaves its notes behind; each line above names one, this says what to do.
    """
    from ingest.pipeline import unknown_categories

    for category, paths in unknown_categories(errors).items():
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        kept = " Until then the store keeps the version it last ingested of each." if stored else ""
        print(
            f"{len(paths)} note(s) are filed under {category!r}, which is not in {categories_file}: {shown}. "
            f"Re-file each (change its `category:` line to a category in the file) or delete it; or, to keep "
            f"{category!r}, add it back to {categories_file} and run `python -m finetune categories`.{kept}",
            file=sys.stderr,
        )


def _print_summary(summary: Summary, location: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_json(), ensure_ascii=False))
        return
    verb = "dry run — would embed" if summary.dry_run else "embedded"
    print(
        f"{len(summary.added)} added, {len(summary.updated)} updated, {len(summary.unchanged)} unchanged, "
        f"{len(summary.deleted)} deleted; {verb} {summary.chunks} chunks"
    )
    for label, ids in (("updated", summary.updated), ("deleted (file gone)", summary.deleted)):
        if ids:
            print(f"  {label}: {', '.join(ids)}")
    if summary.held_back:
        print(f"  kept, though their files are gone: {', '.join(summary.held_back)}")
    if summary.recovered:
        print(f"  finished an interrupted run's writes for: {', '.join(summary.recovered)}")
    if not summary.dry_run:
        print(f"store {location}: {summary.store_notes} notes, {summary.store_chunks} chunks")
    _print_errors(summary.errors)


def _print_check(report: CheckReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
        return
    print(f"{report.notes} valid notes, {report.chunks} chunks, {len(report.errors)} problem(s)")
    width = max(len(c) for c in report.per_category)
    for category, count in report.per_category.items():
        print(f"  {category:<{width}}  {count}")
    _print_errors(report.errors)

"""Routing data: build the stratified 70/15/15 split from the hand-written pools, and check it.

Pools live in `data/routing/pool/<category>.jsonl`. Near-duplicates (same normalised text, or
MiniLM cosine >= 0.95) are grouped and a group always lands in one split, so no question has a
near-twin on the other side of the train/test line.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.categories import LabelSet
from core.errors import DataError, HousechatError, UnknownCategory, echo
from core.schemas import RoutingExample, read_qa, read_routing_examples, write_jsonl

if TYPE_CHECKING:
    from core.settings import Settings

SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
SEED = 13
NEAR_DUPLICATE_COSINE = 0.95


@dataclass
class Dropped:
    """Examples a refit leaves out because their label is not in the categories file.

    After a category is removed from the file, the household's own questions and notes still
    carry it; a refit drops them (counted per label and source) instead of failing, and says so.
    """

    counts: dict[str, Counter[str]] = field(default_factory=dict)  # label -> source ("train", "notes", ...) -> n

    def add(self, label: str, source: str, n: int = 1) -> None:
        self.counts.setdefault(label, Counter())[source] += n

    def keep(self, examples: list[RoutingExample], labels: LabelSet, source: str) -> list[RoutingExample]:
        """The examples whose label is in `labels`; the others are counted under `source`."""
        for example in examples:
            if example.category not in labels:
                self.add(example.category, source)
        return [e for e in examples if e.category in labels]

    def message(self, labels: LabelSet) -> str:
        """One line per dropped label ('' when nothing was dropped), with a hint for a near-miss typo."""
        import difflib

        lines = []
        for label, by_source in sorted(self.counts.items()):
            parts = ", ".join(f"{source}: {n}" for source, n in by_source.items())
            near = difflib.get_close_matches(label, labels.ids, n=1, cutoff=0.8)
            hint = f" (a typo for {near[0]!r}? fix those lines)" if near else ""
            lines.append(
                f"dropped {sum(by_source.values())} examples labelled {label!r}, not a category in "
                f"{labels.source} ({parts}){hint}"
            )
        if lines:
            lines.append("(re-label them with a category in the file to train on them again)")
        return "\n".join(lines)


def read_split(path: Path, labels: LabelSet, dropped: Dropped, source: str) -> list[RoutingExample]:
    """A routing file's examples under `labels`: a label outside them is dropped (counted), any other problem raises."""
    examples, errors = read_routing_examples(path)
    if errors:
        raise HousechatError("\n".join(str(e) for e in errors[:20]) + f"\n{len(errors)} problem(s) in {path}")
    return dropped.keep(examples, labels, source)


def label_examples(labels: LabelSet) -> list[RoutingExample]:
    """One training example per category: its name, and its scope when the file gives one.

    It adds what the label set already says ("card arrival" for BANKING77's `card_arrival`); it
    does not stand in for questions: a category with none still loses to its neighbours' priors.
    """
    examples = []
    for c in labels.categories:
        name = c.name.replace("_", " ").strip()
        scope = " ".join(c.scope.split())
        text = name if not scope or scope.lower() == name.lower() else f"{name}: {scope}"
        examples.append(RoutingExample(question=text, category=c.id))
    return examples


def note_examples(
    notes_dir: Path, labels: LabelSet, dropped: Dropped | None = None
) -> tuple[list[RoutingExample], str]:
    """The house notes as extra routing examples: "title. paragraph" labelled with the note's category.

    The notes name the family's own vendors, products and people ("Truelevel", "Nico") that no
    routing question in train may mention; the router learns them from here. Notes are read by
    the same reader as ingest; one that does not validate is skipped (ingest reports why).
    A note filed under a category not in `labels` is counted in `dropped`.
    Returns the examples and a hash of the notes.
    """
    from core.notes import find_note_files, read_note

    examples, digest = [], hashlib.sha256()
    for path in find_note_files([Path(notes_dir)]).files:
        text = path.read_text(encoding="utf-8", errors="replace")
        digest.update(path.name.encode() + b"\0" + text.encode())
        try:
            note = read_note(path, str(path), labels).note
        except UnknownCategory as exc:
            if dropped is not None:
                dropped.add(exc.category, "notes")
            continue
        except DataError:
            continue
        for paragraph in re.split(r"\n\s*\n", note.body):
            words = " ".join(paragraph.split())
            if len(words) > 30:
                examples.append(RoutingExample(question=f"{note.title}. {words[:400]}", category=note.category))
    return examples, digest.hexdigest()[:16]


def extra_examples(
    extra_dir: Path, labels: LabelSet, dropped: Dropped | None = None
) -> tuple[list[RoutingExample], str]:
    """Extra training questions (`data/routing/extra/*.jsonl`): train only, never split into val or test.

    A question labelled with a category not in `labels` is left out and counted in `dropped`.
    """
    dropped = dropped if dropped is not None else Dropped()
    examples, digest = [], hashlib.sha256()
    for path in sorted(Path(extra_dir).glob("*.jsonl")):
        examples += read_split(path, labels, dropped, "extra")
        digest.update(path.read_bytes())
    return examples, digest.hexdigest()[:16] if examples else ""


@dataclass
class HouseholdData:
    """The household's routing questions for a refit: train, val, the extra train-only questions, and a hash."""

    labels: LabelSet
    train: list[RoutingExample]
    val: list[RoutingExample]
    extra: list[RoutingExample]
    data_hash: str  # train + val, then "+extra:<hash>" when there are extra questions


def household_data(settings: Settings, dropped: Dropped, extra: bool = True) -> HouseholdData:
    """The household's routing splits (data/routing train + val, and with `extra` the extra questions) and their hash.

    Questions labelled with a category the categories file no longer holds are left out and
    counted in `dropped`, so removing a category does not stop a refit.
    """
    from core.categories import load_categories

    labels = load_categories(settings.categories_file)
    routing = settings.routing_data_dir
    train = read_split(routing / "train.jsonl", labels, dropped, "train")
    val = read_split(routing / "val.jsonl", labels, dropped, "val")
    if not train or not val:
        raise HousechatError(
            f"{routing}: no training or validation question in the categories of {settings.categories_file} — "
            "add questions for them to train.jsonl and val.jsonl"
        )
    data_hash = training_data_hash(routing / "train.jsonl", routing / "val.jsonl")
    more, extra_hash = extra_examples(routing / "extra", labels, dropped) if extra else ([], "")
    if more:
        data_hash = f"{data_hash}+extra:{extra_hash}"
    return HouseholdData(labels, train, val, more, data_hash)


def labelled_files(
    train_file: Path, val_file: Path, labels: LabelSet | None, usable: Callable[[str], bool] | None = None
) -> tuple[LabelSet, list[RoutingExample], list[RoutingExample]]:
    """Any labelled pair of files (JSONL question,category or CSV text,category) for `--train-file/--val-file`.

    With `labels` (the categories file), a line whose label is not one of its ids is reported on
    stderr and dropped; with None, the label set is the files' own names, with codes assigned
    (`usable` says which codes a tokenizer can take as one token). Raises when a file has no
    usable line.
    """
    import sys

    from core.categories import label_set_from_ids

    known = set(labels.ids) if labels is not None else None
    train, errors = read_routing_examples(train_file, known)
    val, val_errors = read_routing_examples(val_file, known)
    for error in errors + val_errors:
        print(error, file=sys.stderr)
    if not train or not val:
        raise HousechatError(f"{train_file if not train else val_file}: no usable examples — fix the lines above")
    if labels is None:
        labels = label_set_from_ids([e.category for e in train + val], source=str(train_file), usable=usable)
    missing = sorted(set(labels.ids) - {e.category for e in train})
    if missing:
        print(f"warning: no training example for {len(missing)} categories: {', '.join(missing[:10])}", file=sys.stderr)
    print(f"{len(train)} training and {len(val)} validation questions, {len(labels)} categories", file=sys.stderr)
    return labels, train, val


def training_data_hash(train_path: Path, val_path: Path) -> str:
    """The provenance hash of the files a router was fit on (train + val; never test)."""
    return hashlib.sha256(Path(train_path).read_bytes() + Path(val_path).read_bytes()).hexdigest()[:16]


def normalise(text: str) -> str:
    """Lowercase, punctuation dropped, whitespace folded: what counts as 'the same question'."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass
class DataReport:
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # split -> category -> n
    boundary: int = 0
    extra: int = 0  # extra training questions (data/routing/extra), train only
    errors: list[DataError] = field(default_factory=list)
    data_hash: str = ""

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def near_duplicate_groups(questions: list[str], threshold: float = NEAR_DUPLICATE_COSINE) -> list[int]:
    """A group id per question: same normalised text or cosine >= threshold (transitively)."""
    from core.models import embed

    parent = list(range(len(questions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_by_text: dict[str, int] = {}
    for i, q in enumerate(questions):
        j = first_by_text.setdefault(normalise(q), i)
        parent[find(i)] = find(j)
    if len(questions) > 1:
        vectors = embed(questions)
        sims = vectors @ vectors.T
        for i, j in zip(*((sims >= threshold).nonzero()), strict=True):
            if i < j:
                parent[find(int(i))] = find(int(j))
    return [find(i) for i in range(len(questions))]


def build_splits(pool_dir: Path, out_dir: Path, labels: LabelSet, seed: int = SEED) -> DataReport:
    """Read every pool file, group near-duplicates, split each category 70/15/15 by group."""
    examples: list[RoutingExample] = []
    report = DataReport()
    for path in sorted(Path(pool_dir).glob("*.jsonl")):
        found, errors = read_routing_examples(path, known=set(labels.ids))
        examples += found
        report.errors += errors
    groups = near_duplicate_groups([e.question for e in examples])
    by_category: dict[str, dict[int, list[RoutingExample]]] = defaultdict(lambda: defaultdict(list))
    for example, group in zip(examples, groups, strict=True):
        by_category[example.category][group].append(example)
    rng = random.Random(seed)
    rows: dict[str, list[dict[str, object]]] = {s: [] for s in SPLITS}
    for category in labels.ids:
        category_groups = list(by_category[category].values())
        rng.shuffle(category_groups)
        n = sum(len(g) for g in category_groups)
        placed = Counter[str]()
        for group in category_groups:
            # The split furthest below its target share takes the whole group.
            split = max(SPLITS, key=lambda s: FRACTIONS[s] * n - placed[s])
            placed[split] += len(group)
            rows[split] += [{"question": e.question, "category": e.category, "boundary": e.boundary} for e in group]
    for split in SPLITS:
        rng.shuffle(rows[split])
        write_jsonl(Path(out_dir) / f"{split}.jsonl", rows[split])
    return report


def _read_checked(path: Path, labels: LabelSet) -> tuple[list[RoutingExample], list[DataError]]:
    """A routing file's examples under `labels`, with one problem per label the file does not hold.

    A removed category leaves dozens of lines behind: they are one problem, naming its lines,
    not one per line.
    """
    examples, errors = read_routing_examples(path)
    outside: dict[str, list[int]] = {}
    for example in examples:
        if example.category not in labels:
            outside.setdefault(example.category, []).append(example.line)
    for label, lines in outside.items():
        shown = ", ".join(map(str, lines[:8])) + (", ..." if len(lines) > 8 else "")
        if len(lines) == 1:
            errors.append(DataError(str(path), lines[0], f"unknown category {echo(label)}", labels.suggest(label)))
            continue
        errors.append(
            DataError(
                str(path),
                lines[0],
                f"{len(lines)} questions labelled {echo(label)}, not a category in {labels.source} (lines {shown})",
                "re-label or delete them (a refit leaves them out meanwhile), or add the category back and run "
                "`python -m finetune categories`",
            )
        )
    return [e for e in examples if e.category in labels], sorted(errors, key=lambda e: e.line)


def check_splits(split_dir: Path, labels: LabelSet, qa_files: list[Path]) -> DataReport:
    """Validate the splits: labels, counts, cross-split (near-)duplicates, QA questions kept out."""
    report = DataReport()
    per_split: dict[str, list[RoutingExample]] = {}
    digest = hashlib.sha256()
    for split in SPLITS:
        path = Path(split_dir) / f"{split}.jsonl"
        examples, errors = _read_checked(path, labels)
        per_split[split] = examples
        report.errors += errors
        report.counts[split] = Counter(e.category for e in examples)
        report.boundary += sum(e.boundary for e in examples)
        digest.update(path.read_bytes())
    report.data_hash = digest.hexdigest()[:16]

    # Extra training questions (train only) must not be near-twins of val or test either.
    files = {s: Path(split_dir) / f"{s}.jsonl" for s in SPLITS}
    flat = [(s, files[s], e) for s in SPLITS for e in per_split[s]]
    for path in sorted((Path(split_dir) / "extra").glob("*.jsonl")):
        examples, errors = _read_checked(path, labels)
        report.errors += errors
        report.extra += len(examples)
        flat += [("train", path, e) for e in examples]
    groups = near_duplicate_groups([e.question for _, _, e in flat])
    first_seen: dict[int, tuple[str, Path, RoutingExample]] = {}
    for (split, path, example), group in zip(flat, groups, strict=True):
        other = first_seen.setdefault(group, (split, path, example))
        if other[0] != split:
            report.errors.append(
                DataError(
                    str(path),
                    example.line,
                    f"near-duplicate of {other[1].name}:{other[2].line} ({other[2].question!r})",
                    "reword one of them or keep both in the same split",
                )
            )
    routing_texts = {normalise(e.question) for _, _, e in flat}
    for qa_path in qa_files:
        items, errors = read_qa(qa_path, known=set(labels.ids))
        report.errors += errors
        for item in items:
            if normalise(item.question) in routing_texts:
                report.errors.append(
                    DataError(str(qa_path), item.line, "QA question also appears in the routing splits", "reword it")
                )
    return report


def format_report(report: DataReport, labels: LabelSet) -> str:
    """The per-category, per-split table the README shows."""
    header = f"{'category':<15}" + "".join(f"{s:>7}" for s in SPLITS) + f"{'total':>7}"
    lines = [header, "-" * len(header)]
    for category in labels.ids:
        counts = [report.counts.get(s, Counter())[category] for s in SPLITS]
        lines.append(f"{category:<15}" + "".join(f"{c:>7}" for c in counts) + f"{sum(counts):>7}")
    totals = [sum(report.counts.get(s, Counter()).values()) for s in SPLITS]
    lines.append(f"{'TOTAL':<15}" + "".join(f"{c:>7}" for c in totals) + f"{sum(totals):>7}")
    share = report.boundary / report.total if report.total else 0.0
    lines.append(f"boundary cases: {report.boundary} ({share:.0%}); data hash {report.data_hash}")
    if report.extra:
        lines.append(f"extra training questions (data/routing/extra, train only): {report.extra}")
    return "\n".join(lines)

"""Ingest and search benchmarks on a synthetic house-note corpus (numbers, not tests).

    .venv/bin/python -m benchmarks.ingest                      # the table in docs/results/ingest.md
    .venv/bin/python -m benchmarks.ingest --sizes 1000,10000   # skip the 100k store
    .venv/bin/python -m benchmarks.ingest calibrate --store DIR   # widening threshold on data/eval/qa.jsonl

`run` prints: full-ingest throughput (real MiniLM, real Chroma), the time of a re-run over the
unchanged corpus as a ratio of the full ingest (target <= 0.05), one edited note, and search
latency p50/p95 unfiltered vs filtered at each size: through the per-category collections (what
`NoteStore.search` does) and with Chroma's plain `where` on the whole collection, with the ratio
filtered / unfiltered p50 (target <= 2). Stores above the ingested corpus are filled
with its real chunk embeddings plus small noise (embedding 100k chunks takes hours on 2 cores);
the search path measured is the real one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.categories import load_categories
from core.models import MINILM_DIM, embed, encoder_model_id, load_encoder
from core.retrieval import retrieve
from core.settings import PROJECT_ROOT, Settings, from_env
from core.store import Embedder, NoteEntry, NoteStore, NoteVersion, indexed_text, open_store
from ingest.pipeline import sync

LABELS = load_categories(PROJECT_ROOT / "data" / "categories.yaml")
THINGS = {
    "appliances": ["dishwasher", "fridge", "washing machine", "tumble dryer", "microwave"],
    "brickwork": ["garden wall", "chimney stack", "brick patio", "front steps", "retaining wall"],
    "car": ["hatchback", "estate car", "winter tyres", "EV charger cable", "roof box"],
    "cleaning": ["oven", "carpet", "grout", "windows", "kettle"],
    "cooking": ["sourdough starter", "pressure cooker", "cast iron pan", "spice drawer", "freezer meals"],
    "electrical": ["breaker panel", "garage circuit", "outdoor socket", "smoke alarm wiring", "dimmer switch"],
    "flooring": ["hardwood floor", "stair carpet", "bathroom tile", "laminate", "threshold strip"],
    "fountain": ["fountain pump", "fountain basin", "fountain nozzle", "fountain liner", "fountain timer"],
    "garden": ["lawn", "hedge", "irrigation zone", "lawn mower", "vegetable bed"],
    "gutters": ["front gutter", "downspout", "gutter guard", "rain barrel", "soffit"],
    "hvac": ["furnace", "heat pump", "air filter", "thermostat", "condensate pump"],
    "internet": ["router", "mesh node", "modem", "ethernet run", "printer"],
    "painting": ["hall ceiling", "front door paint", "fence stain", "bedroom walls", "trim"],
    "pest_control": ["mouse traps", "wasp nest", "mole hills", "ant bait", "raccoon guard"],
    "plumbing": ["kitchen sink", "sump pump", "shower valve", "main shut-off", "toilet fill valve"],
    "pool": ["pool pump", "pool heater", "spa cover", "pool filter", "salt cell"],
    "roof": ["shingles", "ridge vent", "skylight", "chimney flashing", "valley"],
    "security": ["alarm panel", "doorbell camera", "smart lock", "motion light", "door sensor"],
    "water_heater": ["water heater tank", "anode rod", "relief valve", "pilot light", "expansion tank"],
    "windows_doors": ["garage door", "patio door", "window seal", "door hinge", "storm door"],
}
VERBS = ["serviced", "replaced", "repaired", "inspected", "cleaned", "adjusted"]
VENDORS = ["Ostrander Services", "Fernhollow Co", "Brightwell & Sons", "Larkspur Repairs", "Tidewell Pros"]
FINDINGS = ["was worn at the seal", "showed early corrosion", "was working normally", "needed a new part", "was loose"]
PLACES = ["in the basement cupboard", "on the garage shelf", "in the kitchen drawer", "in the loft", "in the shed"]


def sentence(rng: random.Random, thing: str) -> str:
    year, month, day = rng.randint(2019, 2026), rng.randint(1, 12), rng.randint(1, 28)
    vendor, cost = rng.choice(VENDORS), rng.randint(40, 2400)
    return rng.choice(
        [
            f"The {thing} was {rng.choice(VERBS)} on {year}-{month:02d}-{day:02d} by {vendor}; it cost ${cost}.",
            f"{vendor} said the {thing} {rng.choice(FINDINGS)} and suggested checking it again in {year + 1}.",
            f"The spare part KX-{rng.randint(100, 999)}-{rng.randint(10, 99)} for the {thing} is kept {rng.choice(PLACES)}.",
            f"If the {thing} acts up, first check the obvious things, then call {vendor} on 555-{rng.randint(1000, 9999)}.",
        ]
    )


def write_corpus(folder: Path, notes: int, seed: int = 0) -> None:
    """`notes` synthetic house notes (3-4 sections of 3-6 sentences each) spread over the 20 categories."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(notes):
        category = LABELS.ids[i % len(LABELS.ids)]
        thing = rng.choice(THINGS[category])
        sections = [
            f"## {title}\n\n" + " ".join(sentence(rng, thing) for _ in range(rng.randint(3, 6)))
            for title in rng.sample(["Visit", "What was done", "Parts", "Costs", "Next time"], rng.randint(3, 4))
        ]
        front = f"---\nid: {category}-bench-{i:05d}\ncategory: {category}\ntitle: The {thing}, note {i}\ndate: 2024-05-01\n---\n"
        (folder / f"{category}-bench-{i:05d}.md").write_text(front + "\n\n".join(sections) + "\n", encoding="utf-8")


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    cuts = statistics.quantiles(samples, n=20, method="inclusive")
    return statistics.median(samples) * 1000, cuts[18] * 1000


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def recording_embedder(seen: dict[str, Any]) -> Embedder:
    """MiniLM that also remembers every vector it made (to fill the larger stores with real ones)."""

    def encode(texts: list[str]) -> Any:
        vectors = embed(texts)
        seen.update(zip(texts, vectors, strict=True))
        return vectors

    return Embedder(encoder_model_id(), MINILM_DIM, encode)


def fill_store(store: NoteStore, pool: list[tuple[str, str, Any]], size: int, seed: int = 1) -> None:
    """`size` chunks made of pool chunks (category, text, vector) with noise, 8 chunks per note."""
    rng = np.random.default_rng(seed)
    per_note, batch = 8, []
    for n in range(size // per_note):
        picks = [pool[int(i)] for i in rng.integers(0, len(pool), per_note)]
        category = picks[0][0]
        vectors = np.stack([p[2] for p in picks]) + rng.normal(0, 0.03, (per_note, MINILM_DIM))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        note_id, digest = f"{category}-synthetic-{n:06d}", f"{n:016x}"
        metadatas = [
            {"note_id": note_id, "category": category, "title": note_id, "date": "", "path": "", "chunk": i,
             "heading": "", "line": 1, "hash": digest}
            for i in range(per_note)
        ]  # fmt: skip
        entry = NoteEntry(note_id, digest, "", category, note_id, per_note)
        batch.append(NoteVersion(entry, [p[1] for p in picks], metadatas, vectors.astype(np.float32)))
        if len(batch) == 500:
            store.write_notes(batch)
            batch = []
    store.write_notes(batch)


def run(args: argparse.Namespace) -> None:
    if args.workdir:
        measure(args, Path(args.workdir))
        return
    with tempfile.TemporaryDirectory(prefix="housechat-bench-") as work:
        measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> None:
    corpus = work / "notes"
    write_corpus(corpus, args.notes)
    started = timed(load_encoder)  # loaded once; not part of the throughput
    seen: dict[str, Any] = {}
    settings = from_env(environ={}, home=work, store=work / "store-corpus")
    store = open_store(settings, embedder=recording_embedder(seen))

    full_s = timed(lambda: sync([corpus], store, LABELS, work))
    chunks = store.counts()[1]
    rerun_s = timed(lambda: sync([corpus], store, LABELS, work))
    reopen_s = timed(lambda: sync([corpus], open_store(settings, embedder=store.embedder), LABELS, work))
    edited = sorted(corpus.glob("*.md"))[0]
    edited.write_text(edited.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")
    edit_summary: list[Any] = []
    edit_s = timed(lambda: edit_summary.append(sync([corpus], store, LABELS, work)))

    print(f"## Ingest ({args.notes} synthetic notes, {chunks} chunks; MiniLM load {started:.1f} s, not counted)\n")
    print("| measure | value |\n|---|---|")
    print(f"| full ingest | {full_s:.1f} s, **{chunks / full_s:.1f} chunks/s** |")
    print(
        f"| re-run, nothing changed (same process) | {rerun_s:.2f} s = **{rerun_s / full_s:.4f}** of the full ingest |"
    )
    print(
        f"| re-run, nothing changed (store reopened) | {reopen_s:.2f} s = {reopen_s / full_s:.4f} of the full ingest |"
    )
    print(f"| one edited note ({edit_summary[0].chunks} chunks re-embedded) | {edit_s:.2f} s |\n")

    pool = [
        (str(h.metadata["category"]), h.text, seen[indexed_text(str(h.metadata["title"]), h.text)])
        for h in store.documents()
    ]
    rng = random.Random(2)
    questions = []
    for _ in range(args.queries):
        category = rng.choice(LABELS.ids)
        questions.append((f"When was the {rng.choice(THINGS[category])} last {rng.choice(VERBS)}?", category))
    print(f"## Search latency (k=5, {args.queries} questions)\n")
    print(question_embedding_line(questions))
    print("`search` = `NoteStore.search`; `retrieve()` = the whole call with the question vector precomputed,")
    print("so it shows what the store, the stale-version check, widening and BM25 fusion cost. p50 / p95 ms:\n")
    print("`{category: c}` and `$in` go to the per-category collections; *plain* is Chroma's `where` on the")
    print("whole collection (what a store without them does); ratio = filtered p50 / unfiltered p50;")
    print("*cold* = the first query to each category's collection in a process (it loads the index).\n")
    print("| chunks | search, no filter | `{category: c}` | ratio | `$in` 2 categories | ratio |", end="")
    print(" plain `{category: c}` | ratio | plain `$in` | cold first `{category: c}` p50 |", end="")
    print(" retrieve() vector | retrieve() hybrid | BM25 index build s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        target = settings
        if size > chunks:
            target = from_env(environ={}, home=work, store=work / f"store-{size}")
            fill_start = time.perf_counter()
            fill_store(open_store(target), pool, size)
            print(f"(filled {size} chunks in {time.perf_counter() - fill_start:.0f} s)", file=sys.stderr)
        count, cells = latency_cells(target, questions)
        print(f"| {count:,} | {' | '.join(cells)} |", flush=True)
    print(f"\nmachine: {os.cpu_count()} cores, 1-min load average {os.getloadavg()[0]:.1f} at the end (shared box)")


def question_embedding_line(questions: list[tuple[str, str]]) -> str:
    """Embedding one question, with torch's default threads and with one (it matters on a busy box)."""
    import torch

    default = torch.get_num_threads()
    cells = []
    for threads in (default, 1):
        torch.set_num_threads(threads)
        ms = percentiles([timed(lambda q=q: embed([q])) for q, _ in questions])
        cells.append(f"{threads} torch thread(s): p50 {ms[0]:.0f} ms / p95 {ms[1]:.0f} ms")
    torch.set_num_threads(default)
    return f"Embedding one question (MiniLM, not in the table below): {'; '.join(cells)}.\n"


def latency_cells(settings: Settings, questions: list[tuple[str, str]]) -> tuple[int, list[str]]:
    """p50 / p95 ms of search without, with one and with two categories (category collections, then
    the plain filter), each filter's p50 ratio to no filter, then retrieve(), then BM25 build."""
    texts = [q for q, _ in questions]
    cached = dict(zip(texts, embed(texts), strict=True))
    store = open_store(
        settings, embedder=Embedder(encoder_model_id(), MINILM_DIM, lambda qs: np.stack([cached[q] for q in qs]))
    )
    ids = LABELS.ids
    filters: list[Callable[[str], dict[str, Any] | None]] = [
        lambda c: None,
        lambda c: {"category": c},
        lambda c: {"category": {"$in": [c, ids[(ids.index(c) + 1) % len(ids)]]}},
    ]
    # A category collection's first query in a process loads its index (cold); time that once per
    # category, then measure every filter warm, as a running app serves them.
    cold = [timed(lambda c=c: store.search(cached[texts[0]], 5, {"category": c})) for c in ids]
    cells, base = [], 0.0
    for partitioned, where_of in [(True, f) for f in filters] + [(False, f) for f in filters[1:]]:
        store.partitioned = partitioned
        samples = []
        for i, (question, category) in enumerate(questions):
            start = time.perf_counter()
            store.search(cached[question], 5, where_of(category))
            if i >= 3:  # the first queries warm caches up
                samples.append(time.perf_counter() - start)
        p50, p95 = percentiles(samples)
        cells.append(f"{p50:.1f} / {p95:.1f}")
        if where_of is filters[0]:
            base = p50
        elif where_of is filters[1]:
            cells.append(f"**{p50 / base:.2f}**" if partitioned else f"{p50 / base:.2f}")
        elif partitioned:
            cells.append(f"{p50 / base:.2f}")
    store.partitioned = True
    cells.append(f"{statistics.median(cold) * 1000:.1f}")
    start = time.perf_counter()
    retrieve(store, texts[0], hybrid=True)  # builds and caches the BM25 index
    build_s = time.perf_counter() - start
    for hybrid in (False, True):
        samples = []
        for question in texts:
            start = time.perf_counter()
            retrieve(store, question, hybrid=hybrid)
            samples.append(time.perf_counter() - start)
        cells.append("{:.1f} / {:.1f}".format(*percentiles(samples)))
    return store.counts()[1], [*cells, f"{build_s:.1f}"]


def calibrate(args: argparse.Namespace) -> None:
    """Best filtered score with the right vs a wrong category filter, over the QA eval set."""
    from core.schemas import read_qa

    store = open_store(from_env(environ={}, store=args.store), create=False)
    qa = Path(args.qa)
    files = sorted(qa.glob("*.jsonl")) if qa.is_dir() else [qa]
    answerable = [item for path in files for item in read_qa(path, set(LABELS.ids))[0] if item.answerable]
    if not answerable:
        raise SystemExit(f"no answerable questions in {qa} — pass --qa FILE_OR_FOLDER")
    rng = random.Random(0)
    right, wrong, hits = [], [], 0
    for item in answerable:
        result = retrieve(store, item.question, k=5, where={"category": item.category}, min_score=0, min_hits=0)
        right.append(max((c.score for c in result.chunks), default=0.0))
        hits += bool(set(result.note_ids) & set(item.gold_note_ids))
        other = rng.choice([c for c in LABELS.ids if c != item.category])
        result = retrieve(store, item.question, k=5, where={"category": other}, min_score=0, min_hits=0)
        wrong.append(max((c.score for c in result.chunks), default=0.0))
    print(f"## Widening threshold ({len(answerable)} answerable QA questions, {store.counts()[1]} chunks)\n")
    print(f"hit@5 with the right category filter: {hits / len(answerable):.3f}\n")
    quantile = lambda xs, q: statistics.quantiles(xs, n=20, method="inclusive")[q]  # noqa: E731
    print(f"best score, right filter: p5 {quantile(right, 0):.2f}, median {statistics.median(right):.2f}")
    print(f"best score, wrong filter: median {statistics.median(wrong):.2f}, p95 {quantile(wrong, 18):.2f}\n")
    print("| min_score | right filter widened | wrong filter widened |\n|---|---|---|")
    for threshold in (0.25, 0.3, 0.35, 0.4, 0.45):
        widened_right = sum(s < threshold for s in right) / len(right)
        widened_wrong = sum(s < threshold for s in wrong) / len(wrong)
        print(f"| {threshold:.2f} | {widened_right:.1%} | {widened_wrong:.1%} |")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (default) or the widening calibration."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("run", help="ingest throughput, re-run ratio, search latency (default)")
    cal = sub.add_parser("calibrate", help="widening threshold on the QA set against an ingested store")
    cal.add_argument("--store", required=True, help="a store holding data/notes (python -m ingest --store DIR)")
    cal.add_argument("--qa", default=str(PROJECT_ROOT / "data" / "eval" / "qa.jsonl"), help="QA JSONL file or folder")
    for p in (parser, bench):
        p.add_argument("--notes", type=int, default=300, help="synthetic notes to ingest (~3.5 chunks each)")
        p.add_argument("--sizes", default="1000,10000,100000", help="store sizes (chunks) for search latency")
        p.add_argument("--queries", type=int, default=50)
        p.add_argument("--workdir", help="keep the corpus and stores here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        calibrate(args)
        return 0
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How long the router takes to adapt to a store, against the ingest that filled it.

    python -m benchmarks.adapt [PATH ...] [--repeat 3]
    python -m benchmarks.adapt --sweep FILE.jsonl [FILE.jsonl ...] --store DIR [DIR ...]


Ingests PATH (default data/notes) into a fresh temporary store with `python -m ingest` (a child
process, model load included, as a user runs it), then adapts the embedding router to that store
(`router.adapt.adapt`, the step the router runs by itself after an ingest) and prints both
times and their ratio. Target: adaptation <= 10% of the ingest.

`--sweep` instead scores labelled questions (JSONL question,category), each file against its
household's ingested `--store` (one store for all files, or one per file), for a grid of store-vote
and name weights: how `ADAPTED_VOTE_WEIGHT` and `NAME_WEIGHT` were picked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from core.categories import load_categories
    from core.settings import from_env
    from core.store import open_store
    from router.adapt import adapt

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", default=["data/notes"], help="notes to ingest (default data/notes)")
    parser.add_argument("--repeat", type=int, default=3, help="adaptation runs (the median is reported)")
    parser.add_argument(
        "--sweep", nargs="+", type=Path, help="labelled question files to score per vote and name weight"
    )
    parser.add_argument(
        "--store", type=Path, nargs="+", help="with --sweep: the ingested store(s), one or one per file"
    )
    args = parser.parse_args(argv)
    if args.sweep:
        if not args.store:
            parser.error("--sweep needs --store: the household's ingested store")
        return sweep(args.sweep, args.store)

    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "store"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ingest", "--store", str(store_dir), *args.paths],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ingest_s = time.perf_counter() - start
        settings = from_env(store=store_dir)
        labels = load_categories(settings.categories_file)
        store = open_store(settings, create=False)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            meta = adapt(settings.embedding_router_dir, store, labels, Path(tmp) / "adapted")
            times.append(time.perf_counter() - start)
    adapt_s = statistics.median(times)
    load = os.getloadavg()[0]
    print(
        f"| step | seconds |\n|---|---|\n| ingest ({meta['store']['notes']} notes, {meta['store']['chunks']} chunks, "
        f"process) | {ingest_s:.1f} |\n| adapt (median of {args.repeat}) | {adapt_s:.2f} |"
    )
    print(f"adapt / ingest = {adapt_s / ingest_s:.3f} (target <= 0.10); load average {load:.1f}")
    return 0


def sweep(files: list[Path], stores: list[Path]) -> int:
    """Right answers of labelled questions per (vote weight, name weight), each file against its store."""
    import numpy as np

    from core.categories import load_categories
    from core.models import MINILM_DIM
    from core.schemas import read_routing_examples
    from core.settings import from_env
    from core.store import open_store
    from router.adapt import AdaptingRouter
    from router.embedding import name_mentions, store_vote

    if len(stores) == 1:
        stores = stores * len(files)
    if len(stores) != len(files):
        raise SystemExit("--store: one store for every file, or one per file")
    votes_w, names_w = (0.9, 1.2, 1.6, 2.0, 2.5, 3.0, 4.0), (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0)
    right = np.zeros((len(votes_w), len(names_w)), dtype=int)
    total = 0
    for path, store_dir in zip(files, stores, strict=True):
        settings = from_env(store=store_dir)
        labels = load_categories(settings.categories_file)
        store = open_store(settings, create=False)
        head = AdaptingRouter(settings, labels, lambda store=store: store).current()
        index = {c: i for i, c in enumerate(labels.ids)}
        examples, _ = read_routing_examples(path, set(labels.ids))
        questions = [e.question for e in examples]
        gold = np.array([index[e.category] for e in examples])
        x = head.features(questions)
        logits = x @ head.coef.T + head.intercept
        votes = np.log(store_vote(store, x[:, :MINILM_DIM], labels, head.vote_k, head.vote_power))
        names = name_mentions(questions, head.names, len(labels.ids))
        for i, wv in enumerate(votes_w):
            for j, wn in enumerate(names_w):
                right[i, j] += int(((logits + wv * votes + wn * names).argmax(1) == gold).sum())
        total += len(examples)
    print(f"right of {total} questions; rows: vote weight, columns: name weight")
    print("| vote \\ names | " + " | ".join(f"{w:g}" for w in names_w) + " |")
    print("|---|" + "---|" * len(names_w))
    for i, wv in enumerate(votes_w):
        print(f"| {wv:g} | " + " | ".join(str(n) for n in right[i]) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

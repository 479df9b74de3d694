"""How long the router takes to adapt to a store, against the ingest that filled it.

    python -m benchmarks.adapt [PATH ...] [--repeat 3]
    python -m benchmarks.adapt --sweep FILE.jsonl [FILE.jsonl ...] --store DIR


Ingests PATH (default data/notes) into a fresh temporary store with `python -m ingest` (a child
process, model load included, as a user runs it), then refits the embedding router's head on that
store (`router.adapt.adapt`, the step the router runs by itself after an ingest) and prints both
times and their ratio. Target: adaptation <= 10% of the ingest.

`--sweep` instead scores labelled questions (JSONL question,category) against the head adapted
to `--store`, for a range of store-vote weights: how `ADAPTED_VOTE_WEIGHT` was picked.
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
    parser.add_argument("--sweep", nargs="+", type=Path, help="labelled question files to score per vote weight")
    parser.add_argument("--store", type=Path, help="with --sweep: the household's ingested store")
    args = parser.parse_args(argv)
    if args.sweep:
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


def sweep(files: list[Path], store_dir: Path | None) -> int:
    import numpy as np

    from core.categories import load_categories
    from core.models import MINILM_DIM
    from core.schemas import read_routing_examples
    from core.settings import from_env
    from core.store import open_store
    from router.adapt import AdaptingRouter
    from router.embedding import store_vote

    settings = from_env(store=store_dir)
    labels = load_categories(settings.categories_file)
    store = open_store(settings, create=False)
    head = AdaptingRouter(settings, labels, lambda: store).current()
    index = {c: i for i, c in enumerate(labels.ids)}
    weights = (0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0, 4.0)
    print("| file | n | " + " | ".join(f"w={w:g}" for w in weights) + " |")
    print("|---|---|" + "---|" * len(weights))
    for path in files:
        examples, _ = read_routing_examples(path, set(labels.ids))
        gold = np.array([index[e.category] for e in examples])
        x = head.features([e.question for e in examples])
        logits = x @ head.coef.T + head.intercept
        votes = np.log(store_vote(store, x[:, :MINILM_DIM], labels, head.vote_k, head.vote_power))
        accs = [float(((logits + w * votes).argmax(1) == gold).mean()) for w in weights]
        print(f"| {path} | {len(examples)} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How long the router takes to adapt to a store, against the ingest that filled it.

    python -m benchmarks.adapt [PATH ...] [--repeat 3]

Ingests PATH (default data/notes) into a fresh temporary store with `python -m ingest` (a child
process, model load included, as a user runs it), then refits the embedding router's head on that
store (`router.adapt.adapt`, the step the router runs by itself after an ingest) and prints both
times and their ratio. Target: adaptation <= 10% of the ingest.
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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    raise SystemExit(main())

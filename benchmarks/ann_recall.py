"""How much of the exact nearest neighbours a store's HNSW search finds, per search width (numbers, not tests).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.ann_recall --store var/growth/store --collection growth

Embeds the QA questions (default the dev half of data/eval/qa.jsonl) with the store's encoder,
finds each one's exact top k by cosine over every chunk of the store's whole collection, and asks
Chroma's HNSW index for its top k at each `ef_search` width: recall@k (the share of the exact top k
found, and the worst question's), and search p50 / p95 ms. Each width is measured in a fresh
process (Chroma applies the setting when it loads the index); the collection is left at the width
it had. An embedded store only; the store's own code (core.store) widens every store it opens to
`HNSW_EF_SEARCH`, so this talks to Chroma directly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PAGE = 5000  # chunk vectors fetched per request (Chroma refuses very large gets)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ann_recall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="embedded Chroma folder")
    parser.add_argument("--collection", default="house_notes", help="the store's collection (default house_notes)")
    parser.add_argument("--qa-file", type=Path, default=Path("data/eval/qa.jsonl"), help="questions (QA JSONL)")
    parser.add_argument("--split", default="dev", choices=["dev", "test", "all"], help="QA half to ask")
    parser.add_argument("--k", type=int, default=5, help="neighbours compared (default 5)")
    parser.add_argument("--ef", default="100,200,400,800", help="search widths, comma-separated")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one width, in this process (JSON out)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure(args.store, args.collection, questions(args.qa_file, args.split), args.k, args.one)))
        return 0
    before = _width(args.store, args.collection)
    rows = []
    try:
        for ef in (int(e) for e in args.ef.split(",") if e.strip()):
            own = ["--store", str(args.store), "--collection", args.collection, "--qa-file", str(args.qa_file)]
            own += ["--split", args.split, "--k", str(args.k), "--one", str(ef)]
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.ann_recall", *own], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(_line(rows[-1]), file=sys.stderr)
    finally:
        _set_width(args.store, args.collection, before)
    command = "python -m benchmarks.ann_recall " + " ".join(argv if argv is not None else sys.argv[1:])
    print(markdown(command, rows))
    return 0


def questions(qa_file: Path, split: str) -> list[str]:
    rows = [json.loads(line) for line in qa_file.read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows if split == "all" or r.get("split") == split]


def _collection(store: Path, name: str) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(path=str(store), settings=ChromaSettings(anonymized_telemetry=False))
    return client.get_collection(name, embedding_function=None)


def _width(store: Path, name: str) -> int:
    return int(_collection(store, name).configuration["hnsw"]["ef_search"])


def _set_width(store: Path, name: str, ef: int) -> None:
    _collection(store, name).modify(configuration={"hnsw": {"ef_search": ef}})


def measure(store: Path, name: str, asked: list[str], k: int, ef: int) -> dict[str, Any]:
    """Recall@k and latency of the HNSW search at width `ef` against exact cosine search."""
    from core.encoders import encoder_for_model
    from core.models import embed

    collection = _collection(store, name)
    collection.modify(configuration={"hnsw": {"ef_search": ef}})  # before the index is loaded
    model = (collection.metadata or {}).get("embedding_model", "")
    encoder = encoder_for_model(model)
    if encoder is None:
        raise SystemExit(f"{store}: unknown embedding model {model!r}")
    ids: list[str] = []
    pages = []
    for offset in range(0, collection.count(), PAGE):
        got = collection.get(include=["embeddings"], limit=PAGE, offset=offset)
        ids += got["ids"]
        pages.append(np.asarray(got["embeddings"], dtype=np.float32))
    vectors = np.concatenate(pages)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = np.asarray(embed(asked, encoder=encoder), dtype=np.float32)
    recalls, millis = [], []
    for query in queries:
        exact = {ids[i] for i in np.argsort(-(vectors @ query))[:k]}
        start = time.perf_counter()
        found = collection.query(query_embeddings=[query.tolist()], n_results=k, include=[])["ids"][0]
        millis.append((time.perf_counter() - start) * 1000)
        recalls.append(len(exact & set(found)) / k)
    return {
        "ef_search": ef,
        "chunks": len(ids),
        "questions": len(asked),
        "k": k,
        "recall": round(float(np.mean(recalls)), 4),
        "worst": round(float(min(recalls)), 4),
        "all_found": round(float(np.mean([r == 1.0 for r in recalls])), 4),
        "p50_ms": round(float(np.median(millis)), 2),
        "p95_ms": round(float(np.percentile(millis, 95)), 2),
    }


def _line(row: dict[str, Any]) -> str:
    return f"ef_search {row['ef_search']}: recall@{row['k']} {row['recall']:.3f}, p50 {row['p50_ms']:.1f} ms"


def markdown(command: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"`{command}`: nothing measured\n"
    first = rows[0]
    lines = [
        f"`{command}` — {first['chunks']:,} chunks, {first['questions']} questions, k = {first['k']}",
        "",
        f"| ef_search | recall@{first['k']} | worst question | questions with all {first['k']} | search p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['ef_search']} | {row['recall']:.3f} | {row['worst']:.2f} | {row['all_found']:.3f} | "
            f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

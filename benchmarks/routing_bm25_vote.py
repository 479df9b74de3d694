"""A second vote beside the store's vector vote: does it route what the committed router misses?

    python -m benchmarks.routing_bm25_vote --store /tmp/m-store [--router models/router-embedding] [--vote questions]

The committed router (head + its vector store vote) is read as is; a second vote is mixed in log
space: `bm25` (default), the categories of the top-k BM25 chunks of an unfiltered keyword search
(score relative to the best, ** power); `questions`, the categories of the k training questions
nearest by MiniLM cosine (the router's own questions.npz, cosine ** power). k, power and the
weight are picked on val (accuracy, then the smaller weight); test is printed for the record,
never used to choose.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.categories import load_categories
from core.schemas import read_routing_examples
from core.settings import from_env

GRID_K = (1, 3, 5, 10)
GRID_POWER = (1.0, 2.0, 4.0)
QUESTION_K = (3, 5, 10, 20)
GRID_WEIGHT = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)


def bm25_vote(store: Any, questions: list[str], labels: Any, k: int, power: float) -> Any:
    """Per question, a distribution over labels from its top-k BM25 chunks (scores relative to the best)."""
    import numpy as np

    from core.retrieval import _bm25_hits
    from router.embedding import VOTE_FLOOR

    index = {c: i for i, c in enumerate(labels.ids)}
    votes = np.full((len(questions), len(labels)), VOTE_FLOOR)
    for row, question in enumerate(questions):
        hits = _bm25_hits(store, question, k, None)
        for _, score, category in hits[:k]:
            if category in index:
                votes[row, index[category]] += (score / hits[0][1]) ** power
    return votes / votes.sum(axis=1, keepdims=True)


def question_vote(router_dir: Path, vectors: Any, labels: Any, k: int, power: float) -> Any:
    """Per question, a distribution over labels from its k nearest training questions (cosine ** power)."""
    import numpy as np

    from router.embedding import VOTE_FLOOR

    saved = np.load(router_dir / "questions.npz")
    index = {c: i for i, c in enumerate(labels.ids)}
    known = np.array([index[c] for c in saved["categories"]])
    sims = np.asarray(vectors, dtype=np.float32) @ saved["vectors"].astype(np.float32).T
    votes = np.full((len(sims), len(labels)), VOTE_FLOOR)
    for row, near in enumerate(np.argsort(-sims, axis=1)[:, :k]):
        np.add.at(votes[row], known[near], np.clip(sims[row, near], 0, None) ** power)
    return votes / votes.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from core.models import embed
    from core.store import open_store
    from router.embedding import EmbeddingRouter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a store ingested from data/notes")
    parser.add_argument("--router", type=Path, default=Path("models/router-embedding"), help="embedding router folder")
    parser.add_argument("--vote", choices=("bm25", "questions"), default="bm25", help="the second vote (default: bm25)")
    args = parser.parse_args(argv)

    settings = from_env(store=args.store)
    labels = load_categories(settings.categories_file)
    store = open_store(settings, create=False)
    router = EmbeddingRouter.load(args.router, labels)
    router.attach_store(store)
    index = {c: i for i, c in enumerate(labels.ids)}
    splits = {}
    for split in ("val", "test"):
        examples, errors = read_routing_examples(settings.routing_data_dir / f"{split}.jsonl", known=set(index))
        if errors:
            raise SystemExit(f"{split}: {len(errors)} bad lines")
        questions = [e.question for e in examples]
        gold = np.array([index[e.category] for e in examples])
        vectors = embed(questions)
        base = router.logits(questions, vectors)
        if args.vote == "bm25":
            grid = {(k, p): np.log(bm25_vote(store, questions, labels, k, p)) for k in GRID_K for p in GRID_POWER}
        else:
            grid = {
                (k, p): np.log(question_vote(args.router, vectors, labels, k, p))
                for k in QUESTION_K
                for p in GRID_POWER + (8.0,)
            }
        splits[split] = (gold, base, grid)
        print(f"{split}: the committed router alone {np.mean(base.argmax(1) == gold):.1%} of {len(gold)}")

    gold, base, grid = splits["val"]
    scored = [
        (float(np.mean((base + w * vote).argmax(1) == gold)), -w, key)
        for key, vote in grid.items()
        for w in GRID_WEIGHT
    ]
    acc, neg_w, (k, power) = max(scored)
    test_gold, test_base, test_grid = splits["test"]
    test_acc = float(np.mean((test_base - neg_w * test_grid[(k, power)]).argmax(1) == test_gold))
    print(f"val-best {args.vote} vote: top-{k}, power {power:g}, weight {-neg_w:g}: val {acc:.1%}, test {test_acc:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

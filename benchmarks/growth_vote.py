"""How much does the store vote help the router on a grown store? The head alone vs mixed with the vote.

    python -m benchmarks.growth_vote [--work var/growth]

Reads the store a `python -m benchmarks.growth` run left in WORK (the notes + its distractors) and
the names adaptation learned there, and routes the QA dev and test halves with the committed (base)
head alone and with those names, each mixed with the store vote at several shapes and weights
(weight 0: no vote). Numbers, not tests; nothing is refit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SHAPES = ((3, 8.0), (3, 4.0), (10, 4.0), (1, 1.0))  # (top-k chunks, score power)
WEIGHTS = (0.0, 0.3, 0.6, 0.9, 1.2, 2.0)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from core.categories import load_categories
    from core.models import embed
    from core.schemas import read_qa
    from core.settings import from_env
    from core.store import open_store
    from router.adapt import adapted_dir, with_adaptation
    from router.embedding import EmbeddingRouter, name_mentions, store_vote

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("var/growth"), help="the growth benchmark's --work folder")
    args = parser.parse_args(argv)

    settings = from_env(store=args.work / "store", collection="growth", var_dir=args.work / "var")
    labels = load_categories(settings.categories_file)
    index = {c: i for i, c in enumerate(labels.ids)}
    store = open_store(settings, create=False)
    items, _ = read_qa(settings.qa_file, known=set(labels.ids))
    notes, chunks = store.counts()
    print(f"store {store.location}: {notes} notes, {chunks} chunks; routing accuracy per vote weight")
    print("| half | head | vote | " + " | ".join(f"w {w:g}" for w in WEIGHTS) + " |")
    print("|---|---|---|" + "---|" * len(WEIGHTS))
    for half in ("dev", "test"):
        chosen = [item for item in items if item.split == half]
        questions = [item.question for item in chosen]
        gold = np.array([index[item.category] for item in chosen])
        vectors = embed(questions)
        base = EmbeddingRouter.load(settings.embedding_router_dir, labels)
        for name, router in (("base", base), ("adapted", with_adaptation(base, adapted_dir(settings), labels))):
            head = router.features(questions, vectors) @ router.coef.T + router.intercept
            head += router.name_weight * name_mentions(questions, router.names, len(labels.ids))
            for k, power in SHAPES:
                votes = np.log(store_vote(store, vectors, labels, k, power))
                accs = [np.mean((head + w * votes).argmax(1) == gold) for w in WEIGHTS]
                print(f"| {half} | {name} | top-{k}, score^{power:g} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

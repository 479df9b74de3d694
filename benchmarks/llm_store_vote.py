"""An LLM router mixed with the store vote: how far does the retrieval signal carry a weak router?

    python -m benchmarks.llm_store_vote --store /tmp/m-store [--model models/router-llm]

The LLM router's probabilities (label scoring or a classification head, as installed; a head that
reads the store is scored without the vote `finetune store-vote` fit for it) and the
store vote the embedding router uses (the categories of the top-k chunks of an unfiltered search,
score ** power) are mixed in log space; the vote's shape and weight are picked on val
(`router.embedding.pick_vote`: accuracy, then log-loss); test is printed once for the record, never
used to choose. Numbers, not tests: docs/results/routing.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from core.categories import load_categories
    from core.schemas import read_routing_examples
    from core.settings import from_env
    from core.store import open_store
    from eval.metrics import wilson_interval
    from finetune.train import served_logits_and_hits
    from router.embedding import pick_vote, vote_from_hits
    from router.registry import load_router

    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm_store_vote", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="an ingested store of the household's notes")
    parser.add_argument("--model", type=Path, help="the llm router folder (default: the installed one)")
    args = parser.parse_args(argv)
    settings = from_env(store=args.store, **({"router_model_dir": args.model} if args.model else {}))
    labels = load_categories(settings.categories_file)
    index = {c: i for i, c in enumerate(labels.ids)}
    store = open_store(settings, create=False)
    router = load_router("llm", settings, fallback=False).router
    if getattr(router.scorer, "context", None) is not None:
        router.scorer.context.vote = None  # a store-reading head: its own fitted vote off, the head alone here
    split = {}
    for name in ("val", "test"):
        examples, _ = read_routing_examples(settings.routing_data_dir / f"{name}.jsonl", set(labels.ids))
        gold = np.array([index[e.category] for e in examples])
        split[name] = (*served_logits_and_hits(router, [e.question for e in examples], store), gold)
    llm_val, hits_val, gold_val = split["val"]
    val_acc, weight, k, power = pick_vote(llm_val, hits_val, labels, gold_val)
    print(f"val-best mix: vote weight {weight}, top-{k} chunks, score ** {power:g}; val {val_acc:.1%}")
    print("| router | val | test (95% Wilson CI) |\n|---|---|---|")
    llm_test, hits_test, gold_test = split["test"]
    vote_test = np.log(vote_from_hits(hits_test, labels, k, power))
    vote_val = np.log(vote_from_hits(hits_val, labels, k, power))
    for name, val_logits, test_logits in (
        ("llm alone", llm_val, llm_test),
        (f"store vote alone (top-{k}, score ** {power:g})", vote_val, vote_test),
        (f"llm + {weight} x store vote", llm_val + weight * vote_val, llm_test + weight * vote_test),
    ):
        right = int((test_logits.argmax(1) == gold_test).sum())
        low, high = wilson_interval(right, len(gold_test))
        val = float((val_logits.argmax(1) == gold_val).mean())
        print(
            f"| {name} | {val:.1%} | {right / len(gold_test):.1%} ({low:.1%}–{high:.1%}), {right} of {len(gold_test)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

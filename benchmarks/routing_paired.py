"""Two embedding routers on one labelled test file: each one's accuracy and the paired difference.

    python -m benchmarks.routing_paired --test-file FILE DIR_A DIR_B

DIR_A and DIR_B are router folders trained on the file's own labels (`finetune embedding
--train-file ... --labels-from-data --output-dir DIR`). Both route every question of FILE (CSV
text,category or JSONL question,category); the difference B - A gets a 95% paired bootstrap
interval (eval.metrics.paired_bootstrap), so "B is better" can be told from noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-file", type=Path, required=True, help="labelled questions (CSV or JSONL)")
    parser.add_argument("routers", type=Path, nargs=2, metavar="DIR", help="router folders A and B")
    args = parser.parse_args()

    from core.schemas import read_routing_examples
    from eval.metrics import paired_bootstrap
    from router.embedding import EmbeddingRouter
    from router.meta import MAKE_EMBEDDING, labels_from_meta, read_meta

    test, errors = read_routing_examples(args.test_file)
    if errors or not test:
        raise SystemExit(f"{args.test_file}: {len(errors)} bad lines, {len(test)} usable — fix the file")
    questions = [e.question for e in test]
    right = {}
    for folder in args.routers:  # each router with the label set it was trained on (as `eval routing` reads it)
        labels = labels_from_meta(read_meta(folder, MAKE_EMBEDDING), str(folder))
        routes = EmbeddingRouter.load(folder, labels).route_batch(questions)
        right[folder] = [float(r.category == e.category) for r, e in zip(routes, test, strict=True)]
    a, b = (right[f] for f in args.routers)
    diff = paired_bootstrap(a, b)
    print(f"| router | accuracy on {args.test_file.name} (n = {len(test):,}) |\n|---|---|")
    for folder in args.routers:
        print(f"| {folder} | {sum(right[folder]) / len(test):.2%} |")
    only_a = sum(x > y for x, y in zip(a, b, strict=True))
    only_b = sum(y > x for x, y in zip(a, b, strict=True))
    print(
        f"\nB - A: {diff['mean']:+.2%} (95% paired bootstrap {diff['lo']:+.2%} … {diff['hi']:+.2%}); "
        f"only A right {only_a}, only B right {only_b}"
    )


if __name__ == "__main__":
    main()

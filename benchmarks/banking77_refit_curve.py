"""Does refitting on train + val pay? Measured on val, before any test: a two-point learning curve.

    python -m benchmarks.banking77_refit_curve [--work var/banking77]

`--refit-on-val` adds the val slice to the head's training data once every choice is made, so val
itself can no longer score it. Instead this fits the router's picked configuration (read from the
frozen routers' meta.json in `--work`, written by `python -m benchmarks.banking77`) on less and on
more data and scores both on questions neither saw:
  full  train minus as many questions as val holds (seeded) vs all of train, scored on val;
  10    the 10-per-intent sample vs the sample + val-5, scored on the rest of val.
MiniLM vectors come from var/embed-cache, so this takes the time of four head fits.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from functools import partial
from pathlib import Path

SEED = 1


def read(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


def accuracy(train: list[tuple[str, str]], held: list[tuple[str, str]], meta: dict, embedder) -> float:
    """The picked features and C, fit on `train`, scored on `held`."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from router.embedding import blocks, char_vectorizer, word_vectorizer

    labels = {c: i for i, c in enumerate(sorted({c for _, c in train + held}))}
    texts, held_texts = [t for t, _ in train], [t for t, _ in held]
    chars, words = char_vectorizer().fit(texts), word_vectorizer().fit(texts)
    weights = (float(meta.get("char_weight", 0.0)), float(meta.get("word_weight", 0.0)))

    def features(batch: list[str]):
        return blocks(embedder(batch), [(weights[0], chars.transform(batch)), (weights[1], words.transform(batch))])

    clf = LogisticRegression(C=float(meta["C"]), max_iter=3000).fit(features(texts), [labels[c] for _, c in train])
    return float((clf.predict(features(held_texts)) == np.array([labels[c] for _, c in held])).mean())


def main(argv: list[str] | None = None) -> int:
    from core.models import embed_cached

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("var/banking77"), help="the banking77 benchmark's folder")
    parser.add_argument("--tag", default="word-refit", help="which routers' picks to use: router-<setting>-<tag>")
    args = parser.parse_args(argv)
    embedder = partial(embed_cached, cache_file=Path("var/embed-cache/minilm.npz"))
    full, val = read(args.work / "train-full.csv"), read(args.work / "val.csv")
    shots, val5 = read(args.work / "train-10.csv"), read(args.work / "val-5.csv")
    rows = []
    for setting in ("full", "10"):
        meta = json.loads((args.work / f"router-{setting}-{args.tag}" / "meta.json").read_text())
        if setting == "full":
            fewer = full[:]
            random.Random(SEED).shuffle(fewer)
            small, large, held = fewer[: len(full) - len(val)], full, val
        else:
            picked = set(val5)
            small, large, held = shots, shots + val5, [row for row in val if row not in picked]
        a, b = accuracy(small, held, meta, embedder), accuracy(large, held, meta, embedder)
        rows.append(
            f"| {setting} | {meta['features']}, C = {meta['C']:g} | {len(held)} | "
            f"{len(small)}: {a:.2%} | {len(large)}: {b:.2%} | {b - a:+.2%} |"
        )
    print("| setting | features picked on val | held-out n | fewer (n: acc) | more (n: acc) | gain |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The QA set's dev/test split: made once, stratified by category and answerability, seed 13.

Every threshold of the answer pipeline (refusal, grounding, filter) is tuned on `dev`; every
reported number is on `test`. The split is stored in `data/eval/qa.jsonl` itself (a `"split"`
field on each line), so the set stays one file; `python -m eval split-qa` recomputes it and
`--write` rewrites the field (a test checks the committed field equals the recomputed one).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

SEED = 13
SPLITS = ("dev", "test")


def assign_splits(rows: list[dict[str, Any]], seed: int = SEED) -> list[str]:
    """`dev` or `test` for each row: each (category, answerable) group is shuffled and halved.

    Odd-sized groups give their extra row to whichever half is smaller so far, so the halves
    differ by at most one question overall.
    """
    groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(str(row.get("category")), bool(row.get("answerable")))].append(i)
    rng = random.Random(seed)
    out = [""] * len(rows)
    sizes = {"dev": 0, "test": 0}
    for key in sorted(groups):
        members = groups[key][:]
        rng.shuffle(members)
        half = len(members) // 2
        extra = "dev" if sizes["dev"] <= sizes["test"] else "test"
        n_dev = half + (len(members) % 2 if extra == "dev" else 0)
        for j, index in enumerate(members):
            out[index] = "dev" if j < n_dev else "test"
        sizes["dev"] += n_dev
        sizes["test"] += len(members) - n_dev
    return out


def split_file(path: Path, write: bool = False, seed: int = SEED) -> dict[str, int]:
    """Compute the split of a QA JSONL file; with `write`, store it as each line's `split` field."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    splits = assign_splits(rows, seed)
    if write:
        body = []
        for row, split in zip(rows, splits, strict=True):
            row = {k: v for k, v in row.items() if k != "split"} | {"split": split}
            body.append(json.dumps(row, ensure_ascii=False))
        Path(path).write_text("\n".join(body) + "\n", encoding="utf-8")
    counts: dict[str, int] = defaultdict(int)
    for row, split in zip(rows, splits, strict=True):
        counts[f"{split} {'answerable' if row.get('answerable') else 'unanswerable'}"] += 1
    return dict(sorted(counts.items()))

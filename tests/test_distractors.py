"""The growth benchmark's distractor text: deterministic, prefix-stable, every category, never a QA keyword."""

from __future__ import annotations

import json

from benchmarks.distractors import VOCAB, distractors, keyword_pattern
from core.categories import load_categories
from core.settings import PROJECT_ROOT


def test_distractors_are_deterministic_prefix_stable_and_cover_every_category() -> None:
    many = list(distractors(200, seed=7))
    assert many == list(distractors(200, seed=7)) and many[:50] == list(distractors(50, seed=7))
    assert list(distractors(50, seed=8)) != many[:50]
    assert set(VOCAB) == set(load_categories(PROJECT_ROOT / "data" / "categories.yaml").ids)
    assert {d.category for d in many} == set(VOCAB)
    assert len({d.text for d in many}) == len(many)  # varied
    assert all(d.note_id.startswith(f"zz-manual-{d.category}-") for d in many)


def test_no_distractor_contains_a_qa_keyword() -> None:
    lines = (PROJECT_ROOT / "data" / "eval" / "qa.jsonl").read_text().splitlines()
    keywords = [k for line in lines if line.strip() for k in json.loads(line)["keywords"]] + ["every month"]
    pattern = keyword_pattern(keywords)
    assert pattern is not None and pattern.search("Flush it EVERY month.")
    assert not any(pattern.search(d.text) for d in distractors(300, seed=7, keywords=keywords))

"""Out-of-fold guesses of the embedding router for the training questions of a `router_hint` head.

A head that reads the embedding router's guesses (`router.llm.RouterHint`) must see, in training,
guesses as good as the router's on questions it never saw. The committed router was fit on these
very questions and guesses them right almost always: a head trained on those guesses would learn to
copy them. So the questions are split into `FOLDS` folds, and each fold is guessed by a head fit on
the other folds plus the notes' paragraphs, with the household router's own features, C, store vote
and temperature (its `meta.json`). Nothing is chosen here, on val or elsewhere.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from core.categories import LabelSet
from core.schemas import RoutingExample
from core.settings import Settings

if TYPE_CHECKING:
    from core.store import NoteStore

FOLDS = 5
SEED = 13


def out_of_fold_hints(
    questions: list[RoutingExample], labels: LabelSet, settings: Settings, store: NoteStore | None
) -> dict[str, str]:
    """{question: the hint line a router fit without it gives} for every question (`router.llm.hint_line`)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from core.models import embed
    from finetune.data import Dropped, note_examples
    from router.embedding import (
        VOTE_K,
        VOTE_POWER,
        EmbeddingRouter,
        blocks,
        char_vectorizer,
        full_width,
        word_vectorizer,
    )
    from router.llm import hint_line
    from router.meta import MAKE_EMBEDDING, read_meta

    base = read_meta(settings.embedding_router_dir, MAKE_EMBEDDING)
    weight, c = float(base.get("char_weight", 0.0)), float(base.get("C", 1.0))
    word_weight = float(base.get("word_weight", 0.0))
    vote, temperature = float(base.get("vote_weight", 0.0)), float(base.get("temperature", 1.0))
    notes, _ = note_examples(settings.notes_dir, labels, Dropped())
    index = {category: i for i, category in enumerate(labels.ids)}
    texts = [e.question for e in questions]
    note_texts = [e.question for e in notes]
    vectors = np.asarray(embed(texts), dtype=np.float32)
    note_vectors = np.asarray(embed(note_texts), dtype=np.float32).reshape(len(notes), -1)
    y, y_notes = np.array([index[e.category] for e in questions]), np.array([index[e.category] for e in notes])
    fold = np.random.default_rng(SEED).integers(0, FOLDS, len(questions))
    hints: dict[str, str] = {}
    for f in range(FOLDS):
        held = fold == f
        if not held.any():
            continue
        fit_texts = [t for t, h in zip(texts, held, strict=True) if not h] + note_texts
        chars = char_vectorizer().fit(fit_texts) if weight else None
        words = word_vectorizer().fit(fit_texts) if word_weight else None
        features = blocks(
            np.vstack([vectors[~held], note_vectors]),
            [
                (weight, chars.transform(fit_texts) if chars else None),
                (word_weight, words.transform(fit_texts) if words else None),
            ],
        )
        clf = LogisticRegression(C=c, max_iter=3000).fit(features, np.concatenate([y[~held], y_notes]))
        coef, intercept = full_width(clf, labels)
        router = EmbeddingRouter(
            coef, intercept, labels, None, chars, weight, vote, temperature, words=words, word_weight=word_weight
        )
        router.vote_k = int(base.get("vote_k", VOTE_K))
        router.vote_power = float(base.get("vote_power", VOTE_POWER))
        router.attach_store(store)
        asked = [t for t, h in zip(texts, held, strict=True) if h]
        probs = router.probabilities(asked, vectors[held])
        hints.update(
            {q: hint_line(dict(zip(labels.ids, map(float, p), strict=True))) for q, p in zip(asked, probs, strict=True)}
        )
        right = float(np.mean(probs.argmax(1) == y[held]))
        print(f"router hints: fold {f + 1}/{FOLDS}, {len(asked)} questions, guessed right {right:.3f}", file=sys.stderr)
    return hints

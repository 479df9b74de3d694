"""The `embedding` router: MiniLM sentence embeddings (+ character n-grams) and a logistic-regression head.

Fast (a few ms), needs no LLM, and is the fallback when the `llm` router cannot run. MiniLM knows
what "the hob won't click" means but not our vendors and models ("Corvane", "NM-1250"): character
2–5-gram TF-IDF features carry those. Their weight against MiniLM (0 = MiniLM only) and C are
picked on val. The head and the n-gram vocabulary are saved as plain arrays (`head.npz`, no
pickle) beside its `meta.json`.

Options (all off by default, so the household's router is fit exactly as before): word uni/bi-gram
TF-IDF beside the character n-grams (its weight picked on val too), a refit of the chosen head on
train + val once everything is picked, and a MiniLM fine-tuned on the labels (`finetune.encoder`,
saved in the router folder) in place of the frozen one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.categories import LabelSet
from core.encoders import encoder_for_model
from core.errors import HousechatError
from core.models import MINILM, MINILM_DIM, embed, encoder_model_id
from core.schemas import RoutingExample
from router.base import Route, route_from_scores
from router.meta import MAKE_EMBEDDING, check_labels, label_meta, read_meta, write_meta
from router.policy import FilterPolicy, tune

if TYPE_CHECKING:
    from core.store import NoteStore

C_GRID = (1.0, 4.0, 16.0, 64.0)
NAME_TOKEN = re.compile(r"\b\w[\w'’-]*\b")  # a word as names are matched in questions: "nq-45", "o'brien"
POSSESSIVE = re.compile(r"['’]s$")
# The store vote: the categories of the top chunks of an unfiltered search, weighted by score**4,
# mixed with the head in log space (weight picked on val). It knows the household's own notes
# without any refit: a vendor named only in the notes pulls its question to the right category.
VOTE_K = 10  # defaults for a meta without a tuned shape
VOTE_POWER = 4.0
VOTE_SHAPES = tuple((k, p) for k in (1, 3, 5, 10, 20) for p in (1.0, 4.0, 8.0))  # (top-k, score power), on val
VOTE_FLOOR = 1e-3  # every label keeps a little mass, so one vote never vetoes the head
VOTE_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(0, 31))
CHAR_WEIGHTS = (0.0, 1.0, 2.0, 3.0)  # n-gram block weight against MiniLM; 0 = MiniLM only
NGRAMS = (2, 5)
WORD_WEIGHTS = (0.0, 0.5, 1.0)  # the word uni/bi-gram block's weights tried with `word_ngrams`
WORD_NGRAMS = (1, 2)


def char_vectorizer(vocabulary: list[str] | None = None) -> Any:
    """Character 2–5-grams inside word boundaries, sublinear TF-IDF, L2-normalised."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=NGRAMS, sublinear_tf=True, min_df=2, vocabulary=vocabulary, dtype=np.float32
    )


def word_vectorizer(vocabulary: list[str] | None = None) -> Any:
    """Word uni- and bi-grams, sublinear TF-IDF, L2-normalised (exact words: "top up", "card arrive")."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        analyzer="word", ngram_range=WORD_NGRAMS, sublinear_tf=True, min_df=1, vocabulary=vocabulary, dtype=np.float32
    )


def blocks(x: Any, parts: list[tuple[float, Any]]) -> Any:
    """MiniLM vectors beside each weighted sparse n-gram block (weight 0 leaves a block out)."""
    import scipy.sparse as sp

    used = [weight * block for weight, block in parts if weight]
    return sp.hstack([sp.csr_matrix(x), *used]).tocsr() if used else x


class EmbeddingRouter:
    name = "embedding"

    def __init__(
        self,
        coef: Any,
        intercept: Any,
        labels: LabelSet,
        policy: FilterPolicy | None = None,
        chars: Any = None,
        char_weight: float = 0.0,
        vote_weight: float = 0.0,
        temperature: float = 1.0,
        words: Any = None,
        word_weight: float = 0.0,
        encoder: Path | None = None,
    ) -> None:
        self.coef, self.intercept, self.labels = coef, intercept, labels
        self.chars, self.char_weight = chars, char_weight
        self.words, self.word_weight = words, word_weight
        self.encoder = encoder  # a fine-tuned MiniLM folder; None = the frozen embedded MiniLM
        self.vote_weight, self.temperature = vote_weight, temperature
        self.vote_k, self.vote_power = VOTE_K, VOTE_POWER
        # A household's names (router.adapt): a question naming one leans to its category by `name_weight`.
        self.names: dict[str, int] = {}
        self.name_weight = 0.0
        self.store: NoteStore | None = None
        self._open_store: Callable[[], NoteStore | None] | None = None
        self.policy = policy or FilterPolicy()
        self.codes = {c.id: c.code for c in labels.categories}

    @classmethod
    def load(cls, model_dir: Path, labels: LabelSet) -> EmbeddingRouter:
        import numpy as np

        meta = read_meta(model_dir, MAKE_EMBEDDING)
        check_labels(meta, labels, Path(model_dir), MAKE_EMBEDDING)
        # Every encoder runs the same MiniLM weights (core.encoders), so a head fit on one reads the
        # others' vectors; how well is measured per encoder on val (docs/results/ingest.md).
        if encoder_for_model(str(meta.get("embedding_model"))) is None:
            raise HousechatError(f"{model_dir}: head was fit on {meta.get('embedding_model')} embeddings — refit it")
        head = np.load(Path(model_dir) / "head.npz")
        weight, word_weight = float(meta.get("char_weight", 0.0)), float(meta.get("word_weight", 0.0))
        vocab = [str(g) for g in head["char_vocab"]] if weight else []
        words_vocab = [str(g) for g in head["word_vocab"]] if word_weight else []
        width = MINILM_DIM + len(vocab) + len(words_vocab)
        if (
            head["coef"].shape[1] != width
            or (weight and len(head["char_idf"]) != len(vocab))
            or (word_weight and len(head["word_idf"]) != len(words_vocab))
        ):
            raise HousechatError(f"{model_dir}: head.npz does not match its meta.json — refit it")
        chars = words = None
        if weight:
            chars = char_vectorizer(vocab)
            chars.idf_ = head["char_idf"]
        if word_weight:
            words = word_vectorizer(words_vocab)
            words.idf_ = head["word_idf"]
        encoder = None
        if meta.get("encoder"):
            encoder = Path(model_dir) / str(meta["encoder"]["dir"])
            if not (encoder / "config.json").exists():
                raise HousechatError(f"{encoder}: the fine-tuned encoder is missing — refit the router")
        policy = FilterPolicy.from_json(meta.get("thresholds"))
        vote, temperature = float(meta.get("vote_weight", 0.0)), float(meta.get("temperature", 1.0))
        router = cls(head["coef"], head["intercept"], labels, policy, chars, weight, vote, temperature)
        router.words, router.word_weight, router.encoder = words, word_weight, encoder
        router.vote_k = int(meta.get("vote_k", VOTE_K))
        router.vote_power = float(meta.get("vote_power", VOTE_POWER))
        return router

    def attach_store(self, store: NoteStore | Callable[[], NoteStore | None] | None) -> None:
        """Search `store` for the vote from now on (None: head only).

        A callable opens the store on first use and again while it returns None, so a router
        loaded before the first ingest starts voting once the store exists.
        """
        if callable(store):
            self.store, self._open_store = None, store
        else:
            self.store, self._open_store = store, None

    def _vote_store(self) -> NoteStore | None:
        if self.store is None and self._open_store is not None:
            self.store = self._open_store()
        return self.store

    def features(self, questions: list[str], vectors: Any = None) -> Any:
        """MiniLM embeddings (or the given `vectors` of the questions), then the weighted n-gram blocks.

        With a fine-tuned encoder the given vectors (the stock MiniLM's, shared with retrieval) do
        not fit the head: the questions are embedded with the router's own encoder.
        """
        import numpy as np

        if vectors is None or self.encoder is not None:
            x = embed(questions, encoder=self.encoder)
        else:
            x = np.asarray(vectors, dtype=np.float32).reshape(len(questions), -1)
        parts = [x]
        if self.char_weight:
            parts.append(self.char_weight * self.chars.transform(questions).toarray().astype(x.dtype))
        if self.word_weight:
            parts.append(self.word_weight * self.words.transform(questions).toarray().astype(x.dtype))
        return np.hstack(parts) if len(parts) > 1 else x

    def logits(self, questions: list[str], vectors: Any = None) -> Any:
        """The head's logits, plus the weighted log store vote when a store is attached (before temperature)."""
        import numpy as np

        x = self.features(questions, vectors)
        logits = x @ self.coef.T + self.intercept
        store = self._vote_store() if self.vote_weight else None
        if store is not None:
            votes = store_vote(store, x[:, :MINILM_DIM], self.labels, self.vote_k, self.vote_power)
            logits = logits + self.vote_weight * np.log(votes)
        if self.names and self.name_weight:
            logits = logits + self.name_weight * name_mentions(questions, self.names, len(self.labels.ids))
        return logits

    def probabilities(self, questions: list[str], vectors: Any = None) -> Any:
        """Calibrated probabilities: softmax of the logits over the temperature picked on val."""
        import numpy as np

        logits = self.logits(questions, vectors) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def route(self, question: str) -> Route:
        return self.route_batch([question])[0]

    def route_vector(self, question: str, vector: Any) -> Route:
        """`route(question)` reusing the question's MiniLM vector (the app embeds a question once)."""
        return self.route_batch([question], [vector])[0]

    def route_batch(self, questions: list[str], vectors: Any = None) -> list[Route]:
        start = time.perf_counter()
        probs = self.probabilities(questions, vectors)
        ms = (time.perf_counter() - start) * 1000 / max(len(questions), 1)
        ids = self.labels.ids
        return [
            route_from_scores(dict(zip(ids, map(float, row), strict=True)), self.codes, self.name, ms) for row in probs
        ]


def name_mentions(questions: list[str], names: dict[str, int], n_categories: int) -> Any:
    """(questions, categories): how many of the household's names (lower-cased, -> category index) each question says."""
    import numpy as np

    counts = np.zeros((len(questions), n_categories), dtype=np.float32)
    for row, question in enumerate(questions):
        for word in set(NAME_TOKEN.findall(question.lower())):
            category = names.get(word, names.get(POSSESSIVE.sub("", word)))  # "quillmoor's" says Quillmoor
            if category is not None:
                counts[row, category] += 1
    return counts


def log_loss(logits: Any, gold: Any) -> float:
    """Mean negative log-likelihood of the gold labels under softmax(logits)."""
    import numpy as np

    z = logits - logits.max(axis=1, keepdims=True)
    return float(-(z[np.arange(len(gold)), gold] - np.log(np.exp(z).sum(axis=1))).mean())


def fit_temperature(logits: Any, gold: Any) -> float:
    """The softmax temperature with the lowest negative log-likelihood on (validation) logits."""
    import numpy as np

    best, best_nll = 1.0, float("inf")
    for temperature in np.exp(np.linspace(np.log(0.05), np.log(20.0), 121)):
        nll = log_loss(logits / temperature, gold)
        if nll < best_nll:
            best, best_nll = float(temperature), nll
    return round(best, 4)


def full_width(clf: Any, labels: LabelSet) -> tuple[Any, Any]:
    """Coefficients for every label, even one absent from the training data (its logit stays very low)."""
    import numpy as np

    coef = np.full((len(labels), clf.coef_.shape[1]), 0.0, dtype=np.float32)
    intercept = np.full(len(labels), -30.0, dtype=np.float32)
    coef[clf.classes_] = clf.coef_
    intercept[clf.classes_] = clf.intercept_
    return coef, intercept


def save_head(out_dir: Path, clf: Any, labels: LabelSet, chars: Any, words: Any = None) -> Path:
    """`head.npz`: coefficients, intercepts and the n-gram vocabularies + idf (plain arrays, no pickle)."""
    import numpy as np

    coef, intercept = full_width(clf, labels)
    arrays: dict[str, Any] = {}
    for name, vectorizer in (("char", chars), ("word", words)):
        vocab = [str(g) for g in vectorizer.get_feature_names_out()] if vectorizer is not None else []
        arrays[f"{name}_vocab"] = np.array(vocab, dtype=str)
        arrays[f"{name}_idf"] = vectorizer.idf_ if vectorizer is not None else np.zeros(0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "head.npz", coef=coef, intercept=intercept, **arrays)
    return out_dir


def store_hits(store: NoteStore, vectors: Any, k: int) -> list[list[Any]]:
    """Each question's top-k chunks of an unfiltered search."""
    return [store.search(vector, k) for vector in vectors]


def vote_from_hits(hits: list[list[Any]], labels: LabelSet, k: int = VOTE_K, power: float = VOTE_POWER) -> Any:
    """Per question, a distribution over labels from the categories of its top-k hits (score**power)."""
    import numpy as np

    index = {c: i for i, c in enumerate(labels.ids)}
    votes = np.full((len(hits), len(labels)), VOTE_FLOOR, dtype=np.float64)
    for row, found in enumerate(hits):
        for hit in found[:k]:
            label = index.get(str(hit.metadata.get("category")))
            if label is not None:
                votes[row, label] += max(hit.score, 0.0) ** power
    return votes / votes.sum(axis=1, keepdims=True)


def pick_vote(head_logits: Any, hits: list[list[Any]], labels: LabelSet, gold: Any) -> tuple[float, float, int, float]:
    """(accuracy, weight, top-k, power): the store vote's mix with `head_logits` that routes val best.

    Accuracy first, ties broken by log-loss; weight 0 (the head alone) unless a mix beats it.
    """
    import numpy as np

    best_key = (float((head_logits.argmax(1) == gold).mean()), -log_loss(head_logits, gold))
    weight, k, power = 0.0, VOTE_K, VOTE_POWER
    for shape_k, shape_power in VOTE_SHAPES:
        votes = np.log(vote_from_hits(hits, labels, shape_k, shape_power))
        for w in VOTE_WEIGHTS[1:]:
            mixed = head_logits + w * votes
            key = (float((mixed.argmax(1) == gold).mean()), -log_loss(mixed, gold))
            if key > best_key:
                best_key, weight, k, power = key, w, shape_k, shape_power
    return best_key[0], weight, k, power


def store_vote(store: NoteStore, vectors: Any, labels: LabelSet, k: int = VOTE_K, power: float = VOTE_POWER) -> Any:
    """The store vote for each question vector: its top-k chunks' categories, weighted by score**power."""
    return vote_from_hits(store_hits(store, vectors, k), labels, k, power)


def fit(
    train: list[RoutingExample],
    val: list[RoutingExample],
    labels: LabelSet,
    out_dir: Path,
    data_hash: str = "",
    char_weights: tuple[float, ...] = CHAR_WEIGHTS,
    extra: list[RoutingExample] | tuple[RoutingExample, ...] = (),
    store: NoteStore | None = None,
    embedder: Callable[[list[str]], Any] = embed,
    provenance: dict[str, Any] | None = None,
    word_weights: tuple[float, ...] = (0.0,),
    refit_on_val: bool = False,
    encoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit the head on train (+ `extra`, e.g. the notes); pick the n-gram weights, C and the thresholds on val.

    With a `store` (ingested from the notes), the store vote's mix weight is picked on val too.
    `embedder` turns texts into MiniLM vectors (a cached one for big external files); `provenance`
    joins meta.json (e.g. the external training files). `word_weights` are the word uni/bi-gram
    block's weights to try (default: none). With `refit_on_val`, once every choice is made on val,
    the n-gram vocabularies and the head are fit again on train + val with those choices (the
    temperature and thresholds stay the ones picked on val). `encoder` describes a fine-tuned
    MiniLM saved in `out_dir/encoder["dir"]` that `embedder` already embeds with.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    if encoder is not None and store is not None:
        raise HousechatError(
            "the store vote searches with the stock MiniLM's vectors, a fine-tuned encoder's do not match — "
            "add --no-vote"
        )
    index = {c: i for i, c in enumerate(labels.ids)}
    n_questions = len(train)
    train = list(train) + list(extra)
    train_q, val_q = [e.question for e in train], [e.question for e in val]
    x_train, x_val = embedder(train_q), embedder(val_q)
    chars = char_vectorizer().fit(train_q)
    c_train, c_val = chars.transform(train_q), chars.transform(val_q)  # sparse: the vocabulary is wide
    words = w_train = w_val = None  # the word block only when a word weight is tried
    if any(word_weights):
        words = word_vectorizer().fit(train_q)
        w_train, w_val = words.transform(train_q), words.transform(val_q)
    y_train = np.array([index[e.category] for e in train])
    y_val = np.array([index[e.category] for e in val])
    best: tuple[float, float, float, float, Any] = (-1.0, 0.0, 0.0, 0.0, None)

    def try_weights(weight: float, word_weight: float) -> None:
        nonlocal best
        a_train = blocks(x_train, [(weight, c_train), (word_weight, w_train)])
        a_val = blocks(x_val, [(weight, c_val), (word_weight, w_val)])
        for c in C_GRID:
            clf = LogisticRegression(C=c, max_iter=3000).fit(a_train, y_train)
            acc = float((clf.predict(a_val) == y_val).mean())
            if acc > best[0]:  # ties keep the simpler (smaller, earlier) weights
                best = (acc, weight, word_weight, c, clf)

    # Char weight x C first (the default router's grid), then the word block's weights x C at that
    # char weight: a coordinate search, so the word block costs a few fits, not a whole second grid.
    for weight in char_weights:
        try_weights(weight, word_weights[0])
    for word_weight in word_weights[1:]:
        try_weights(best[1], word_weight)
    val_acc, w_best, ww_best, c_best, clf = best
    chars_used, words_used = (chars if w_best else None), (words if ww_best else None)
    coef, intercept = full_width(clf, labels)
    # No encoder on this router: val's vectors are always given, already from the right encoder.
    router = EmbeddingRouter(
        coef, intercept, labels, chars=chars_used, char_weight=w_best, words=words_used, word_weight=ww_best
    )
    vote_weight, vote_acc = 0.0, val_acc
    vote_k, vote_power = VOTE_K, VOTE_POWER
    if store is not None:
        # The vote's shape and weight on val: accuracy first, ties broken by log-loss.
        head_logits = np.log(np.clip(router.probabilities(val_q, x_val), 1e-12, None))
        hits = store_hits(store, x_val, max(k for k, _ in VOTE_SHAPES))
        vote_acc, vote_weight, vote_k, vote_power = pick_vote(head_logits, hits, labels, y_val)
        router.vote_weight, router.vote_k, router.vote_power = vote_weight, vote_k, vote_power
        router.attach_store(store)
    router.temperature = fit_temperature(router.logits(val_q, x_val), y_val)
    routes = router.route_batch(val_q, x_val)
    policy, utility = tune(routes, [e.category for e in val])
    questions = (train_q[:n_questions], [e.category for e in train[:n_questions]], x_train[:n_questions])
    if refit_on_val:
        # Every choice is made; now the head also learns the val questions (as published baselines
        # train on all of train.csv). Val accuracy above stays the honest pre-refit number.
        all_q = train_q + val_q
        y_all = np.concatenate([y_train, y_val])
        chars_used = char_vectorizer().fit(all_q) if w_best else None
        words_used = word_vectorizer().fit(all_q) if ww_best else None
        x_all = np.vstack([x_train, x_val])
        a_all = blocks(
            x_all,
            [
                (w_best, chars_used.transform(all_q) if chars_used else None),
                (ww_best, words_used.transform(all_q) if words_used else None),
            ],
        )
        clf = LogisticRegression(C=c_best, max_iter=3000).fit(a_all, y_all)
        questions = (
            questions[0] + val_q,
            questions[1] + [e.category for e in val],
            np.vstack([questions[2], x_val]),
        )
    out_dir = save_head(out_dir, clf, labels, chars_used, words_used)
    # The training questions with their vectors (benchmarks.routing_bm25_vote's question vote reads them).
    np.savez_compressed(
        out_dir / "questions.npz",
        texts=np.array(questions[0], dtype=str),
        categories=np.array(questions[1], dtype=str),
        vectors=questions[2].astype(np.float16),
    )
    store_info = None
    if store is not None:
        from router.adapt import store_fingerprint

        store_info = {"location": store.location, "fingerprint": store_fingerprint(store)}
    features = [f"{w_best} x char {NGRAMS[0]}-{NGRAMS[1]}-gram TF-IDF"] if w_best else []
    features += [f"{ww_best} x word {WORD_NGRAMS[0]}-{WORD_NGRAMS[1]}-gram TF-IDF"] if ww_best else []
    base = "fine-tuned MiniLM" if encoder else "MiniLM"
    meta = {
        "kind": "embedding",
        "embedding_model": MINILM if encoder else encoder_model_id(),
        "encoder": encoder,  # None: the frozen MiniLM (run by HOUSECHAT_ENCODER); else the fine-tuned copy in this folder
        "features": " + ".join([base, *features]),
        "char_weight": w_best,
        "word_weight": ww_best,
        "vote_weight": vote_weight,
        "temperature": router.temperature,  # softmax temperature fit on val (calibration; argmax unchanged)
        "vote_k": vote_k,
        "vote_power": vote_power,
        "vote": f"top-{vote_k} chunks of an unfiltered search, score**{vote_power:g}" if vote_weight else None,
        "classifier": f"LogisticRegression(C={c_best})",
        "C": c_best,
        "refit_on_val": refit_on_val,  # the saved head was refit on train + val after val picked everything
        "store": store_info,  # the notes the head learned (a store with other notes gets an adapted head)
        **label_meta(labels),
        "data_hash": data_hash,
        "thresholds": policy.to_json(),
        "metrics": {
            "val_accuracy": round(vote_acc, 4),
            "val_accuracy_head": round(val_acc, 4),
            "val_policy_utility": round(utility, 4),
            "n_train": n_questions,
            "n_extra": len(train) - n_questions,
            "n_val_refit": len(val) if refit_on_val else 0,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(provenance or {}),
    }
    write_meta(out_dir, meta)
    return meta

"""The `llm` router: a causal LM (+ LoRA adapter) scores the closed label set.

`LabelScorer` is the one scorer shared by training (val accuracy), inference and eval. It runs the
fixed prompt prefix once, keeps its KV cache, and per call computes only the question's tokens.
Labels that are one token are read from the logits after the prompt (softmax over the labels),
computed from the label tokens' rows of the output layer only (20 rows, not the 49k-token
vocabulary: the softmax over the labels is the same); multi-token labels are scored by their
summed log-prob. Either way the output is a valid label.

`ClassifierScorer` is the other mode (`mode: classify` in a recipe): one forward of the question,
a linear head over the last token's hidden state, softmax over the label set. Same interface, so
`LLMRouter`, the int8 quantizer, training's validation and eval use either. With `store_context: K`
in its recipe, the head also reads `StoreContext`: the categories and titles of the top K chunks of an
unfiltered search of the household's store (what the embedding router's store vote counts), so the
router learns to weigh the notes' evidence against the question's wording. `python -m finetune
store-vote` then fits on val how much of the store vote (the same search's categories, as the embedding
router mixes them) to add to the head's logits (`StoreVote`, in its meta.json). With `router_hint` the
head also reads the embedding router's top two guesses with their probabilities (`RouterHint`).

`router.quantize.quantize_int8(scorer)` then makes the decoder int8 (the app's default).
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import prompt
from core.categories import LabelSet
from core.errors import HousechatError
from router.base import Route, route_from_scores

if TYPE_CHECKING:
    from core.store import NoteStore


class LabelScorer:
    """Probabilities over `labels` for questions, from a (possibly adapted) causal LM."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: LabelSet,
        label_format: str,
        with_scopes: bool = False,
        label_rows: bool = True,
    ) -> None:
        """`label_rows=False` projects onto the whole vocabulary (the reference the label-row path is tested against)."""
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.label_format, self.with_scopes = label_format, with_scopes
        self.label_strings = labels.labels(label_format)
        self.label_tokens = [tokenizer.encode(s, add_special_tokens=False) for s in self.label_strings]
        self.single_token = all(len(t) == 1 for t in self.label_tokens)
        firsts = [t[0] for t in self.label_tokens]
        if self.single_token and len(set(firsts)) != len(firsts):
            raise HousechatError("two labels share a token — pick other codes in data/categories.yaml")
        self.prefix_text, self.suffix_text = prompt.split_prompt(tokenizer, labels, label_format, with_scopes)
        self.prefix_ids = tokenizer.encode(self.prefix_text, add_special_tokens=False)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._prefix_cache: Any = None
        # The output layer restricted to the labels' tokens: (labels, dim), plus its bias if it has one.
        self.label_weight: Any = None
        self.label_bias: Any = None
        import torch

        head = model.get_output_embeddings()
        if self.single_token and label_rows and isinstance(head, torch.nn.Linear):
            # A plain linear head only: an adapter's wrapped head (training) keeps its own row deltas.
            rows = torch.tensor(firsts)
            self.label_weight = head.weight.detach()[rows].float().clone()
            if getattr(head, "bias", None) is not None:
                self.label_bias = head.bias.detach()[rows].float().clone()

    def question_ids(self, question: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(" ".join(question.split()) + self.suffix_text, add_special_tokens=False)
        return ids

    def prefix_cache(self) -> Any:
        """The KV cache of the fixed prefix, computed once."""
        if self._prefix_cache is None:
            import torch

            with torch.inference_mode():
                ids = torch.tensor([self.prefix_ids])
                self._prefix_cache = self.model.get_decoder()(input_ids=ids, use_cache=True).cache
        return self._prefix_cache

    def _hidden(self, rows: list[list[int]], use_cache: bool) -> Any:
        """Last hidden states (batch, time, dim) for right-padded rows that continue the prefix.

        Only the decoder runs here: the vocabulary projection is applied later to the few
        positions that are read, which is most of the saving for a small model.
        """
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        n_prefix = len(self.prefix_ids)
        full_mask: Any = torch.cat([torch.ones((len(rows), n_prefix), dtype=torch.long), mask], dim=1)
        if len({len(r) for r in rows}) == 1:
            full_mask = None  # no padding: the plain causal mask, which attention builds fastest
        decoder = self.model.get_decoder()
        if not use_cache:
            prefix = torch.tensor(self.prefix_ids).expand(len(rows), -1)
            full = torch.cat([prefix, ids], dim=1)
            return decoder(input_ids=full, attention_mask=full_mask).last_hidden_state[:, n_prefix:]
        cache = copy.deepcopy(self.prefix_cache())
        if len(rows) > 1:
            cache.batch_repeat_interleave(len(rows))
        return decoder(input_ids=ids, attention_mask=full_mask, cache=cache, use_cache=True).last_hidden_state

    def _log_probs(self, hidden: Any) -> Any:
        """Log-softmax over the vocabulary for selected hidden states (..., dim)."""
        import torch

        return torch.log_softmax(self.model.get_output_embeddings()(hidden).float(), dim=-1)

    def log_scores(self, questions: list[str], use_cache: bool = True) -> Any:
        """Unnormalised log-scores (n, labels): log p(label | prompt), for one-token labels up to a constant per row."""
        import torch

        with torch.inference_mode():
            q_rows = [self.question_ids(q) for q in questions]
            if self.single_token:
                hidden = self._hidden(q_rows, use_cache)
                last = torch.stack([hidden[i, len(r) - 1] for i, r in enumerate(q_rows)])
                if self.label_weight is not None:
                    # Label logits; they differ from the vocabulary log-probs by one constant per row.
                    logits = last.float() @ self.label_weight.T
                    return logits if self.label_bias is None else logits + self.label_bias
                label_ids = torch.tensor([t[0] for t in self.label_tokens])
                return self._log_probs(last)[:, label_ids]
            out = torch.empty((len(questions), len(self.label_tokens)))
            for qi, q in enumerate(q_rows):
                rows = [q + t[:-1] for t in self.label_tokens]
                hidden = self._hidden(rows, use_cache)
                # One vocabulary projection for every (label, position) that is read.
                row_idx = [li for li, toks in enumerate(self.label_tokens) for _ in toks]
                pos_idx = [len(q) - 1 + j for toks in self.label_tokens for j in range(len(toks))]
                targets = torch.tensor([t for toks in self.label_tokens for t in toks])
                picked = self._log_probs(hidden[row_idx, pos_idx]).gather(1, targets[:, None])[:, 0]
                out[qi] = torch.zeros(len(self.label_tokens)).index_add_(0, torch.tensor(row_idx), picked)
            return out

    def probabilities(self, questions: list[str], use_cache: bool = True) -> Any:
        """Softmax over the label set (n, labels) as a numpy array."""
        import torch

        return torch.softmax(self.log_scores(questions, use_cache), dim=-1).numpy()

    def generate(self, question: str, max_new_tokens: int = 8) -> str:
        """Free greedy generation (no label constraint): what the published experiment measured."""
        import torch

        text = self.prefix_text + " ".join(question.split()) + self.suffix_text
        ids = torch.tensor([self.tokenizer.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
            )
        return str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    def parse(self, text: str) -> str | None:
        """The category id a generated text names, or None when it is not exactly one label."""
        cleaned = text.strip().strip(".").strip()
        token = re.split(r"\s+", cleaned)[0] if cleaned else ""
        for cat, label in zip(self.labels.categories, self.label_strings, strict=True):
            if token == label or (self.label_format == "names" and token.lower() == label):
                return cat.id
        return None


CLASSIFY_SUFFIX = "\nCategory:"  # the last token, whose hidden state the head reads, is always this one


HINT_TOP = 2  # how many of the embedding router's guesses a head trained with `router_hint` reads


def classify_text(question: str, context: str = "", hint: str = "") -> str:
    """The classification head's input: the question (whitespace folded), the store's context, the
    embedding router's guesses (`hint_line`), a fixed last token."""
    text = " ".join(question.split())
    if hint:
        context = f"{context}\nRouter: {hint}"
    return f"{text}\nNotes: {context}{CLASSIFY_SUFFIX}" if context else text + CLASSIFY_SUFFIX


def hint_line(scores: dict[str, float]) -> str:
    """The embedding router's top guesses as the head reads them: "pool 81 | water heater 12" (percent)."""
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:HINT_TOP]
    return " | ".join(f"{category.replace('_', ' ')} {round(100 * p)}" for category, p in top)


class RouterHint:
    """The embedding router's guesses for each question, as lines for a head trained with `router_hint`.

    `route(questions, vectors)` is the embedding router's batch routing (the household's, adapted to
    its store, with its store vote): the head learns when to follow it and when the question says
    otherwise. Its training questions read out-of-fold guesses (`finetune.hints`), never the guesses
    of a router that was fit on them.
    """

    def __init__(self, route: Callable[[list[str], Any], list[Route]]) -> None:
        self.route = route

    def __call__(self, questions: list[str], vectors: Any = None) -> list[str]:
        return [hint_line(r.scores) for r in self.route(questions, vectors)] if questions else []


@dataclass(frozen=True)
class StoreVote:
    """The store vote mixed into the head's logits: `weight` x log(vote of the top `k` chunks, score ** `power`)."""

    weight: float
    k: int
    power: float


class StoreContext:
    """What the store says about each question: the categories and titles of its top `k` chunks
    (the categories alone with `titles=False`: a shorter input, so a faster head).

    An unfiltered search with the stock MiniLM (the store's own vectors), as the embedding router's
    store vote; "" for every question while no store is there (the head then reads the question alone).
    With a `vote`, the same search also gives the store vote (`router.embedding.vote_from_hits`).
    """

    def __init__(
        self, open_store: Callable[[], NoteStore | None], k: int, vote: StoreVote | None = None, titles: bool = True
    ) -> None:
        self.open_store, self.k, self.vote, self.titles = open_store, k, vote, titles
        self.store: NoteStore | None = None

    def hits(self, questions: list[str], vectors: Any = None) -> list[list[Any]] | None:
        """Each question's top chunks (enough for the lines and the vote); None without a store.

        `vectors`: the questions' MiniLM vectors when the caller has them (the app embeds once)."""
        from core.models import embed
        from router.embedding import store_hits

        if self.store is None:
            self.store = self.open_store()
        if self.store is None or not questions:
            return None
        vectors = embed(questions) if vectors is None else vectors
        return store_hits(self.store, vectors, max(self.k, self.vote.k if self.vote else 0))

    def lines(self, hits: list[list[Any]]) -> list[str]:
        def line(hit: Any) -> str:
            category = str(hit.metadata.get("category", "")).replace("_", " ")
            return f"{category}: {hit.metadata.get('title', '')}" if self.titles else category

        return [" | ".join(line(h) for h in found[: self.k]) for found in hits]

    def __call__(self, questions: list[str]) -> list[str]:
        hits = self.hits(questions)
        return [""] * len(questions) if hits is None else self.lines(hits)

    @classmethod
    def from_meta(cls, meta: dict[str, Any], open_store: Callable[[], NoteStore | None]) -> StoreContext | None:
        """The context a router's meta.json asks for (`store_context`, `store_vote`); None when it reads no store."""
        k = int(meta.get("store_context", 0))
        vote = StoreVote(**meta["store_vote"]) if meta.get("store_vote") else None
        return cls(open_store, k, vote, bool(meta.get("store_context_titles", True))) if k else None


class ClassifierScorer:
    """Probabilities over `labels` from a sequence-classification model (a head over the last token).

    The head has one output per label, in `labels.ids` order: every output is a valid label.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: LabelSet,
        batch_size: int = 32,
        context: StoreContext | None = None,
        hint: RouterHint | None = None,
    ) -> None:
        n_out = model.config.num_labels
        if n_out != len(labels):
            raise HousechatError(f"the classification head has {n_out} outputs for {len(labels)} labels — retrain it")
        self.model, self.tokenizer, self.labels, self.batch_size = model, tokenizer, labels, batch_size
        self.context = context  # a StoreContext when the head was trained with one (and its store vote, if fit)
        self.hint = hint  # the embedding router's guesses, when the head was trained with `router_hint`

    def prefix_cache(self) -> None:
        """No fixed prompt prefix here (the quantizer asks for one)."""
        return None

    def log_scores(self, questions: list[str], use_cache: bool = True, vectors: Any = None) -> Any:
        """The head's logits (n, labels): log-probabilities up to a constant per row.

        `vectors` (n, 384): the questions' MiniLM vectors for the store search, when the caller has them."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(questions), self.batch_size):
                part = questions[i : i + self.batch_size]
                part_vectors = None if vectors is None else vectors[i : i + self.batch_size]
                hits = self.context.hits(part, part_vectors) if self.context else None
                contexts = self.context.lines(hits) if self.context and hits else [""] * len(part)
                hints = self.hint(part, part_vectors) if self.hint else [""] * len(part)
                batch = [classify_text(q, c, h) for q, c, h in zip(part, contexts, hints, strict=True)]
                enc = self.tokenizer(batch, padding=True, return_tensors="pt")
                logits = self.model(**enc).logits.float()
                vote = self.context.vote if self.context else None
                if vote and vote.weight and hits:
                    from router.embedding import vote_from_hits

                    votes = vote_from_hits(hits, self.labels, vote.k, vote.power)
                    logits = logits + vote.weight * torch.log(torch.from_numpy(votes)).float()
                out.append(logits)
        return torch.cat(out) if out else torch.empty((0, len(self.labels)))

    def probabilities(self, questions: list[str], use_cache: bool = True, vectors: Any = None) -> Any:
        """Softmax over the label set (n, labels) as a numpy array."""
        import torch

        return torch.softmax(self.log_scores(questions, vectors=vectors), dim=-1).numpy()


Scorer = LabelScorer | ClassifierScorer


class LLMRouter:
    """Routes with a `LabelScorer`; `generate=True` parses free generation instead."""

    def __init__(self, scorer: Scorer, name: str = "llm", generate: bool = False, use_cache: bool = True) -> None:
        if generate and not isinstance(scorer, LabelScorer):
            raise HousechatError("free generation needs a label-scoring router; this one is a classification head")
        self.scorer, self.name, self.generate_mode, self.use_cache = scorer, name, generate, use_cache
        self.codes = {c.id: c.code for c in scorer.labels.categories}

    def route(self, question: str) -> Route:
        return self.route_batch([question])[0]

    def route_vector(self, question: str, vector: Any) -> Route:
        """`route(question)` reusing the question's MiniLM vector for a store-reading head's search
        (the app embeds a question once); other modes do not search and ignore it."""
        return self.route_batch([question], [vector])[0]

    def route_batch(self, questions: list[str], vectors: Any = None) -> list[Route]:
        start = time.perf_counter()
        if self.generate_mode:
            routes = []
            for q in questions:
                t0 = time.perf_counter()
                assert isinstance(self.scorer, LabelScorer)
                text = self.scorer.generate(q)
                cat = self.scorer.parse(text)
                ms = (time.perf_counter() - t0) * 1000
                scores = {cat: 1.0} if cat else {}
                routes.append(
                    Route(cat, self.codes.get(cat or ""), 1.0 if cat else 0.0, scores, self.name, ms, raw_output=text)
                )
            return routes
        if isinstance(self.scorer, ClassifierScorer) and vectors is not None:
            import numpy as np

            probs = self.scorer.probabilities(questions, self.use_cache, np.asarray(vectors))
        else:
            probs = self.scorer.probabilities(questions, self.use_cache)
        ms = (time.perf_counter() - start) * 1000 / max(len(questions), 1)
        ids = self.scorer.labels.ids
        return [
            route_from_scores(dict(zip(ids, map(float, row), strict=True)), self.codes, self.name, ms) for row in probs
        ]


def load_adapted_model(model_dir: Path, base: str, var_dir: Path) -> tuple[Any, Any]:
    """Base + LoRA adapter from `model_dir`, merged for speed (a private copy of the base)."""
    from core.models import load_causal_lm

    model, tokenizer = load_causal_lm(base, var_dir, cache=False)
    if (Path(model_dir) / "adapter_config.json").exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
        model.eval()
    return model, tokenizer


def load_adapted_classifier(model_dir: Path, base: str, var_dir: Path, num_labels: int) -> tuple[Any, Any]:
    """Base as a sequence classifier + the LoRA adapter and trained head from `model_dir`, merged."""
    from peft import PeftModel

    from core.models import load_sequence_classifier

    model, tokenizer = load_sequence_classifier(base, var_dir, num_labels)
    model = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
    model.eval()
    return model, tokenizer

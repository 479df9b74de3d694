"""The extractive answerer: the retrieved notes' own sentences that answer the question, each cited.

It writes nothing of its own, so it cannot invent a fact: the answer is the best sentence first,
then at most two supporting ones, each followed by its `[note-id]`. A sentence scores by

- its MiniLM cosine to the question (the embedding model retrieval already loaded; sentence
  vectors are cached per chunk id, and a chunk id changes whenever its note does),
- BM25 over the retrieved sentences (exact words: vendors, parts, "anode"),
- the question's type: *when* wants a date, *how much* an amount, *who* a person or company,
  *which model / part / invoice* a model-like number, *how many / how long* a number,
- its chunk's retrieval score.

When even the best sentence scores low, the notes do not cover the question: it says so and
names the closest note. The weights and the refusal threshold are tuned on the QA dev half
(`python -m eval tune-extractive`, docs/results/answers.md); never on the test half.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.retrieval import RetrievedChunk

MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
FACTS: dict[str, re.Pattern[str]] = {
    "date": re.compile(
        rf"\b(?:\d{{4}}-\d{{2}}(?:-\d{{2}})?|{MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
        rf"|\d{{1,2}}\s+{MONTHS}(?:\s+\d{{4}})?|{MONTHS}\s+\d{{4}}|(?:19|20)\d{{2}})\b",
        re.IGNORECASE,
    ),
    "amount": re.compile(r"(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:dollars|usd|eur)\b)", re.IGNORECASE),
    "model": re.compile(
        r"\b(?=[A-Za-z0-9./-]*\d)(?=[A-Za-z0-9./-]*[A-Z])[A-Z0-9][A-Za-z0-9./-]*[-/][A-Za-z0-9./-]+\b"
        r"|\b(?=\w*\d)(?=\w*[A-Z])[A-Z0-9]{3,}\b"
    ),
    "person": re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*\b"),
    "number": re.compile(r"\b\d+(?:[.,]\d+)?\b"),
}
# What a question asks for, from its wording (several can apply: "when ... and who did it?").
CUES: dict[str, re.Pattern[str]] = {
    "date": re.compile(
        r"\b(when|what date|which date|what year|which year|until|since when|how long ago|last (done|serviced))\b", re.I
    ),
    "amount": re.compile(
        r"\b(how much|cost|costs|price|priced|charge|charged|pay|paid|bill|billed|fee|spend|spent|quote|quoted|value|worth|payout|pay out)\b",
        re.I,
    ),
    "person": re.compile(
        r"\b(who|whom|whose|which (company|vendor|contractor|shop|firm|plumber|electrician|installer|mason|roofer|tech|technician|adjuster|insurer)|what (company|vendor|shop|firm)|name of)\b",
        re.I,
    ),
    "model": re.compile(
        r"\b(model|part number|part no|serial|item number|invoice|membership number|policy number|account number|sku|code|reference)\b",
        re.I,
    ),
    "number": re.compile(
        r"\b(how (many|long|often|deep|big|far|high|tall|wide|old|hot|cold|large|heavy)|what (temperature|size|setting|pressure|percentage|dimensions|depth|height|width)|how much (time|water)|percent|psi|amps?)\b",
        re.I,
    ),
}
MONTH_WORDS = {
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
}
STOPWORDS = frozenset(
    str.split(
        "a an the and or but of to in on at for from by with about as is are was were be been being do does "
        "did done have has had it its this that these those there their our we us you your i my me he she "
        "they them his her what which who whom whose when where why how much many any some all each every "
        "can could would should will shall may might must not no yes if then than so too very just also into "
        "over under up down out off again last first next new old get got"
    )
)
# Words that say what kind of fact is wanted, not what it is about (the type cues carry them).
GENERIC = frozenset(
    str.split(
        "cost costs price paid pay charge charged bill billed fee total amount altogether date day year "
        "month time number model brand type kind name company use used went took came make made put find "
        "found work done tell know say said happen happened long often much many"
    )
)
# A note sentence that talks to the assistant instead of about the house is not a fact (prompt
# injection, issue 12 item 8): never quoted as an answer, never counted as support.
INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget) (all |any |the )?(previous|prior|above|earlier|other) (instructions|rules|notes)"
    r"|\b(system prompt|you are (now )?(an? )?(assistant|ai|chatbot|language model))"
    r"|\b(assistant|ai|chatbot|model)s?,? (must|should) (say|answer|reply|tell)",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9$])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_MARKUP = re.compile(r"\*\*|__|`|~~")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


@dataclass(frozen=True)
class Sentence:
    """One quotable unit of a chunk: a sentence of a paragraph, a list item or a table row."""

    text: str
    chunk: RetrievedChunk
    rank: int  # the chunk's retrieval rank (0 = best)
    heading: str = ""

    @property
    def note_id(self) -> str:
        return self.chunk.note_id


@dataclass(frozen=True)
class Weights:
    """How a sentence's score is made, and when to refuse. Tuned on the QA dev half."""

    cosine: float = 1.0
    bm25: float = 0.35
    type_match: float = 0.5
    chunk: float = 0.6
    rank: float = 0.02
    # Refuse when best score − missing_any × share of the question's words in no retrieved chunk
    # − missing_best × share not in the best sentence's chunk is under `refuse_below` (words weighted
    # by IDF over the retrieved chunks; "how much", "date", "model" … do not count).
    missing_any: float = 0.75
    missing_best: float = 0.5
    refuse_below: float = 0.64
    support_ratio: float = 0.7  # a supporting sentence scores at least this share of the best one
    other_note_ratio: float = 0.85  # the same, for a sentence from another note than the first one
    max_sentences: int = 3


@dataclass
class Picked:
    """What the picker chose: sentences with scores (best first), or a refusal with the closest note."""

    sentences: list[tuple[Sentence, float]]
    refused: bool
    best: float
    closest: RetrievedChunk | None
    wanted: set[str] = field(default_factory=set)
    cover: float = 0.0  # the score the refusal threshold is compared with


def clean(text: str) -> str:
    """Markdown emphasis and links reduced to their text, whitespace collapsed."""
    return " ".join(_MARKUP.sub("", _LINK.sub(r"\1", text)).split())


def split_sentences(chunk: RetrievedChunk, rank: int = 0) -> list[Sentence]:
    """The chunk's paragraphs cut into sentences; list items and table rows are sentences too."""
    out: list[Sentence] = []
    heading = chunk.heading
    paragraph: list[str] = []
    header: list[str] = []

    def flush() -> None:
        if paragraph:
            for part in _SENTENCE_END.split(clean(" ".join(paragraph))):
                if len(part) > 2:
                    out.append(Sentence(part, chunk, rank, heading))
            paragraph.clear()

    for raw in chunk.text.splitlines():
        line = raw.strip()
        if not line:
            flush()
            continue
        if line.startswith("#"):
            flush()
            heading = line.lstrip("#").strip()
            continue
        if line.startswith("|"):
            flush()
            cells = [clean(c) for c in line.strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue  # the separator row
            if not header:
                header = cells
                continue
            pairs = [f"{h} {c}" if h and h != "#" and c else c for h, c in zip(header, cells, strict=False) if c]
            out.append(Sentence(", ".join(pairs), chunk, rank, heading))
            continue
        header = []
        if _LIST_ITEM.match(line):
            flush()
            paragraph.append(_LIST_ITEM.sub("", line))
            continue
        paragraph.append(line)
    flush()
    return [s for s in out if not INSTRUCTION.search(s.text)]


def question_types(question: str) -> set[str]:
    """What kinds of fact the question asks for: date, amount, person, model, number."""
    return {kind for kind, cue in CUES.items() if cue.search(question)}


def fact_kinds(text: str) -> set[str]:
    """The kinds of checkable fact a sentence states."""
    kinds = {kind for kind, pattern in FACTS.items() if pattern.search(text)}
    if "person" in kinds and not any(w not in MONTH_WORDS for w in _names(text)):
        kinds.discard("person")
    return kinds


def _names(text: str) -> list[str]:
    return [m.group(0) for m in FACTS["person"].finditer(text)]


def terms(text: str, generic: bool = True) -> list[str]:
    """Lower-case content words, crudely stemmed (possessive, plural and -ed/-ing endings cut)."""
    out = []
    for word in _WORD.findall(text.lower().replace("’", "'")):
        word = word.removesuffix("'s").rstrip("'")
        if word in STOPWORDS or len(word) < 2 or (not generic and word in GENERIC):
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        out.append(word)
    return out


def missing(question: str, within: Sequence[RetrievedChunk], corpus: Sequence[RetrievedChunk] | None = None) -> float:
    """IDF-weighted share of the question's subject words that none of `within` mentions.

    The IDF is over `corpus` (default `within`): a word that no retrieved chunk has weighs most.
    Words that only say which kind of fact is wanted ("cost", "date", "model") are left out.
    """
    words = set(terms(question, generic=False))
    if not words:
        return 0.0
    docs = [set(terms(f"{c.title} {c.heading} {c.text}")) for c in (corpus or within)]
    n = len(docs)
    idf = {t: math.log(1 + (n + 0.5) / (sum(t in d for d in docs) + 0.5)) for t in words}
    seen = set().union(*(terms(f"{c.title} {c.heading} {c.text}") for c in within)) if within else set()
    return sum(idf[t] for t in words if t not in seen) / sum(idf.values())


def bm25_scores(
    query: Sequence[str], documents: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """Okapi BM25 of each tokenised document for the query tokens (IDF over these documents)."""
    n = len(documents)
    if not n:
        return []
    avg = sum(len(d) for d in documents) / n or 1.0
    df = Counter(t for d in documents for t in set(d))
    scores = []
    for doc in documents:
        tf = Counter(doc)
        score = 0.0
        for term in set(query):
            if term in tf:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                score += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(doc) / avg))
        scores.append(score)
    return scores


class SentencePicker:
    """Scores the retrieved chunks' sentences for a question and writes the cited answer."""

    def __init__(self, weights: Weights | None = None, embed: Callable[[list[str]], Any] | None = None) -> None:
        self.weights = weights or Weights()
        self._embed = embed
        self._cache: OrderedDict[str, Any] = OrderedDict()  # chunk id -> its sentences' vectors
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> Any:
        if self._embed is None:
            from core.models import embed

            self._embed = embed
        return self._embed(texts)

    def _vectors(self, chunk: RetrievedChunk, sentences: list[Sentence]) -> Any:
        with self._lock:
            if chunk.id in self._cache:
                self._cache.move_to_end(chunk.id)
                return self._cache[chunk.id]
        vectors = self.embed([s.text for s in sentences])
        with self._lock:
            self._cache[chunk.id] = vectors
            while len(self._cache) > 4096:
                self._cache.popitem(last=False)
        return vectors

    def warm(self, chunks: Iterable[RetrievedChunk], batch: int = 256) -> int:
        """Embed and cache the sentences of `chunks` ahead of the questions; returns how many chunks.

        The UI runs it over the whole store in the background at start, so an answer's only MiniLM
        work is the question (a one-shot `app ask` embeds just the retrieved chunks instead).
        """
        import numpy as np

        pending: list[tuple[RetrievedChunk, list[Sentence]]] = []
        done = 0

        def flush() -> None:
            texts = [s.text for _, sentences in pending for s in sentences]
            vectors = self.embed(texts) if texts else np.zeros((0, 0))
            start = 0
            with self._lock:
                for chunk, sentences in pending:
                    self._cache[chunk.id] = vectors[start : start + len(sentences)]
                    start += len(sentences)
            pending.clear()

        size = 0
        for chunk in chunks:
            with self._lock:
                known = chunk.id in self._cache
            sentences = [] if known else split_sentences(chunk)
            if sentences:
                pending.append((chunk, sentences))
                size += len(sentences)
                done += 1
            if size >= batch:
                flush()
                size = 0
        flush()
        return done

    def pick(self, question: str, chunks: Sequence[RetrievedChunk], question_vector: Any = None) -> Picked:
        """The answering sentences, best first (or a refusal naming the closest note)."""
        import numpy as np

        w = self.weights
        wanted = question_types(question)
        closest = chunks[0] if chunks else None
        sentences: list[Sentence] = []
        vectors = []
        for rank, chunk in enumerate(chunks):
            found = split_sentences(chunk, rank)
            if found:
                sentences += found
                vectors.append(self._vectors(chunk, found))
        if not sentences:
            return Picked([], True, 0.0, closest, wanted)
        q = np.asarray(question_vector if question_vector is not None else self.embed([question])[0], dtype=np.float32)
        cosine = np.vstack(vectors) @ q
        query = terms(question)
        bm25 = bm25_scores(query, [terms(f"{s.heading} {s.text}") for s in sentences])
        top = max(bm25) or 1.0
        scored = []
        for i, s in enumerate(sentences):
            kinds = fact_kinds(s.text)
            match = len(wanted & kinds) / len(wanted) if wanted else 0.0
            score = (
                w.cosine * float(cosine[i])
                + w.bm25 * bm25[i] / top
                + w.type_match * match
                + w.chunk * s.chunk.score
                - w.rank * s.rank
            )
            scored.append((s, score))
        scored.sort(key=lambda pair: -pair[1])
        best = scored[0][1]
        cover = (
            best
            - w.missing_any * missing(question, chunks)
            - w.missing_best * missing(question, [scored[0][0].chunk], chunks)
        )
        if cover < w.refuse_below:
            return Picked([], True, best, scored[0][0].chunk, wanted, cover)
        chosen = [scored[0]]
        covered = fact_kinds(scored[0][0].text)
        # A part of the question the first sentence leaves open ("... and who did it?") gets the best
        # sentence that has that kind of fact; then the rest by score, if close enough to the best.
        for kind in sorted(wanted - covered):
            for pair in scored[1:]:
                if kind in fact_kinds(pair[0].text) and pair not in chosen and pair[1] >= w.support_ratio * best * 0.9:
                    chosen.append(pair)
                    covered |= fact_kinds(pair[0].text)
                    break
        for pair in scored[1:]:
            if len(chosen) >= w.max_sentences:
                break
            other_note = pair[0].note_id != chosen[0][0].note_id
            ratio = w.other_note_ratio if other_note else w.support_ratio
            if pair not in chosen and pair[1] >= ratio * best and pair[0].text != chosen[0][0].text:
                chosen.append(pair)
        return Picked(chosen[: w.max_sentences], False, best, scored[0][0].chunk, wanted, cover)

    def answer(self, question: str, chunks: Sequence[RetrievedChunk], question_vector: Any = None) -> str:
        """The answer text: the picked sentences with their `[note-id]`, or a plain refusal."""
        return render(self.pick(question, chunks, question_vector))

    # LangChain-runnable shape, so `app.chain.stream_answer` treats it like any chain.
    def stream(self, inputs: dict[str, Any]) -> Iterator[str]:
        yield self.answer(inputs["question"], inputs.get("chunks") or [], inputs.get("question_vector"))


def cite(text: str, note_id: str) -> str:
    """A sentence with its citation before the final stop: "… done on 2024-10-12 [note-id]."."""
    body = text.rstrip()
    stop = "."
    if body[-1:] in ".!?":
        body, stop = body[:-1].rstrip(), body[-1]
    return f"{body} [{note_id}]{stop}"


def render(picked: Picked) -> str:
    if picked.refused:
        if picked.closest is None:
            return "The notes do not say: no note matched this question."
        return f"The notes do not say. The closest note is “{clean(picked.closest.title)}” [{picked.closest.note_id}]."
    return " ".join(cite(s.text, s.note_id) for s, _ in picked.sentences)

"""The extractive answerer: the retrieved notes' own sentences that answer the question, each cited.

It writes nothing of its own, so it cannot invent a fact: the answer is the fact first, then at most
two supporting sentences of the same note, each followed by its `[note-id]`. A sentence scores by a
weighted sum of `SENTENCE_FEATURES`, among them

- its MiniLM cosine to the question (the embedding model retrieval already loaded; only the
  `embed_top` sentences that rank best without it are embedded, and vectors are cached by text),
- BM25 over the retrieved sentences (exact words: vendors, parts, "anode"),
- the question's type: *when* wants a date, *how much* an amount, *who* a person or company,
  *which model / part / invoice* a model-like number, *how many / how long* a number,
- its chunk's and its note's retrieval score and rank, and how many of the question's subject
  words the note title, the sentence and the note have.

A logistic regression over `QUESTION_FEATURES` (how well the lead sentence and its note match)
decides when the notes do not cover the question: then it says so and names the closest note.
The weights, the refusal model and its threshold are fit on the QA dev half
(`python -m eval tune-extractive`, docs/results/answers.md); never on the test half.
"""

from __future__ import annotations

import functools
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
    # A count or measure, or how often ("monthly", "twice a year": no digit, still the answer to *how often*).
    "number": re.compile(
        r"\b\d+(?:[.,]\d+)?\b|\b(?:daily|weekly|fortnightly|monthly|quarterly|yearly|annually|twice|once a)\b", re.I
    ),
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
        r"\b(who|whom|whose|which (company|vendor|contractor|shop|firm|plumber|electrician|installer|mason|roofer|tech|technician|adjuster|insurer)|what (company|vendor|shop|firm)|name of|(what|which) brand|brand of|manufacturer)\b",
        re.I,
    ),
    "model": re.compile(
        r"\b(model|part number|part no|serial|item number|invoice|membership number|policy number|account number|sku|code|reference)\b",
        re.I,
    ),
    "number": re.compile(
        r"\b(how (many|long|often|deep|big|far|high|tall|wide|old|hot|cold|large|heavy)|what (temperature|size|setting|pressure|percentage|dimensions|depth|height|width)|how much (time|water)|percent|psi|amps?"
        r"|(what|which) [\w' -]{0,30}?(level|reading|rating|capacity|wattage|voltage|speed|weight)|ppm|rpm|watts?|volts?|gallons?)\b",
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
# A sentence that sends the reader to another note ("(see the thermocouple note)", "is in the garage door
# notes"): the fact it stands for is elsewhere, so it rarely answers and its citation is a look-alike's.
POINTER = re.compile(r"\b(see|in) (the |our )?[^.;()\[\]]{0,40}?\b(notes?|guide)\b", re.IGNORECASE)
RECENT = re.compile(r"\b(last|latest|most recent(ly)?|recently)\b", re.IGNORECASE)
_ISO_DATE = re.compile(r"\b((?:19|20)\d{2})(?:-(\d{2}))?(?:-(\d{2}))?\b")
_MONTH_DATE = re.compile(rf"\b({MONTHS})(?:\s+\d{{1,2}}(?:st|nd|rd|th)?,?)?\s+((?:19|20)\d{{2}})\b", re.IGNORECASE)
_MONTH_NUMBER = {m: i for i, m in enumerate(str.split("jan feb mar apr may jun jul aug sep oct nov dec"), start=1)}
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

    @property
    def kinds(self) -> set[str]:
        """The kinds of fact it states, its heading's included ("## What Teo did, 2025-02-08")."""
        return fact_kinds(self.text) | (fact_kinds(self.heading) if self.heading else set())

    def quote(self, wanted: set[str]) -> str:
        """Its text, after its heading when only the heading states a wanted kind of fact."""
        if self.heading and wanted & (self.kinds - fact_kinds(self.text)):
            return f"{clean(self.heading)}: {self.text}"
        return self.text


# What a sentence is scored on (`sentence_features`); `Weights.sentence` holds one weight for each.
SENTENCE_FEATURES = (
    "cosine",  # MiniLM cosine of the sentence to the question
    "bm25",  # BM25 of the sentence and its heading over the retrieved sentences, / the best one's
    "type_match",  # share of the question's wanted fact kinds the sentence states
    "chunk_score",  # its chunk's retrieval score
    "chunk_rank",  # its chunk's retrieval rank (0 = best)
    "note_score",  # the best retrieval score of any chunk of its note
    "note_rank",  # its note's rank among the retrieved notes
    "title_subject",  # IDF-weighted share of the question's subject words in the note title and heading
    "sentence_subject",  # the same share in the sentence and its heading
    "note_subject",  # the same share anywhere in the note's retrieved chunks
    "log_chars",  # log of the sentence's length
    "has_fact",  # the sentence states a date, amount, number, model number or name
    "latest",  # the question asks for the last time and the sentence has its note's latest date
    "note_subject_store",  # share of the question's subject words in its note, IDF over the whole store
    "note_missing_store",  # the store IDF of the rarest subject word its note lacks (0..1; 0: none missing)
    "pointer",  # the sentence sends the reader to another note ("see the thermocouple note")
)
# What the refusal reads (`question_features`): how well the best sentence and its note match.
QUESTION_FEATURES = (
    "best",  # the best sentence's score
    "margin",  # the best score minus the best score in any other note (capped)
    "sentence_subject",  # the best sentence's share of subject words
    "note_subject",  # its note's share of subject words
    "title_subject",  # its note title's share of subject words
    "missing",  # IDF-weighted share of the subject words no retrieved chunk mentions
    "type_found",  # share of the wanted fact kinds its note's sentences state (1 when none is wanted)
    "cosine",  # the best sentence's MiniLM cosine
    "best_type",  # share of the wanted fact kinds the best sentence states (1 when none is wanted)
    "typed_subject",  # over all sentences, the best share of subject words in one that states a wanted kind
    "subject_words",  # how many subject words the question has (more words, more ways to miss)
    "sentence_subject_store",  # the best sentence's share of subject words, IDF over the whole store
    "note_subject_store",  # its note's share of them, IDF over the whole store
    "retrieved_subject_store",  # the retrieved chunks' share of them, IDF over the whole store
    "note_missing_store",  # the store IDF of the rarest subject word its note lacks (0..1)
    "sentence_missing_store",  # the same for the best sentence, its heading and note title
    "note_missing_words",  # how many subject words its note lacks
    "new_type",  # share of the wanted fact kinds the best sentence states with a fact the question lacks
)
MARGIN_CAP = 3.0
CACHE_SENTENCES = 50_000  # vectors kept (a household's notes have ~10,000 sentences)


@dataclass(frozen=True)
class Weights:
    """How a sentence is scored, which sentences support it, and when to refuse. Fit on the QA dev half.

    `sentence` is a conditional logit over a question's sentences (the sentence from a gold note
    stating a keyword wins); `refusal` a logistic regression over `QUESTION_FEATURES` (last value: the
    intercept) whose probability that the notes answer the question must reach `answer_above`.
    Both come from `python -m eval tune-extractive` (docs/results/answers.md).
    """

    sentence: tuple[float, ...] = (
        4.066, 1.677, 2.656, 3.539, -0.267, 2.38, -0.201, 1.532, 1.513, 0.823, -0.31, 1.189, 2.735, 1.069, -0.656, -1.996
    )  # fmt: skip
    refusal: tuple[float, ...] = (
        0.1891, 0.1474, -0.9295, 3.5797, 1.2792, 4.193, 0.8649, 2.9812, -0.0593, -0.7527, 0.4846, 3.1476, 4.2515,
        3.6312, 2.3908, -1.3937, 0.5423, 2.8745, -21.0981,
    )  # fmt: skip
    answer_above: float = 0.4
    support_gap: float = 3.0  # a sentence of the first one's note supports it when it scores within this gap
    other_note_gap: float = 0.0  # the same, for a sentence from another note (0: never)
    max_sentences: int = 3
    embed_top: int = 10  # embed and score only this many sentences, picked without their cosine (0: all)


@dataclass
class Scored:
    """A question's retrieved sentences with their features and scores, and the question's features."""

    sentences: list[Sentence]
    features: Any  # numpy (n, len(SENTENCE_FEATURES))
    scores: Any  # numpy (n,): features @ Weights.sentence
    question: Any  # numpy (len(QUESTION_FEATURES),), for the refusal; empty when there are no sentences
    wanted: set[str] = field(default_factory=set)

    @property
    def best(self) -> int:
        """The sentence the answer starts with (`lead_sentence`)."""
        return int(self.question[-1]) if len(self.question) else 0


@dataclass
class Picked:
    """What the picker chose: sentences with scores (best first), or a refusal with the closest note."""

    sentences: list[tuple[Sentence, float]]
    refused: bool
    best: float
    closest: RetrievedChunk | None
    wanted: set[str] = field(default_factory=set)
    answer_probability: float = 0.0  # the refusal model's probability that the notes answer it


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


def latest_date(text: str) -> tuple[int, int, int] | None:
    """The latest date a text states, as (year, month, day); a missing month or day counts as 0."""
    found = [(int(y), int(m or 0), int(d or 0)) for y, m, d in _ISO_DATE.findall(text)]
    found += [(int(y), _MONTH_NUMBER[m.lower()[:3]], 0) for m, y in _MONTH_DATE.findall(text)]
    return max(found) if found else None


def _names(text: str) -> list[str]:
    return [m.group(0) for m in FACTS["person"].finditer(text)]


def terms(text: str, generic: bool = True) -> list[str]:
    """Lower-case content words, crudely stemmed (possessive, plural and -ed/-ing endings cut)."""
    out = []
    for word in _WORD.findall(text.lower().replace("’", "'")):
        word = word.removesuffix("'s").rstrip("'")
        if word in STOPWORDS or len(word) < 2 or (not generic and word in GENERIC):
            continue
        out.append(stem(word))
    return out


def chunk_terms(chunk: RetrievedChunk) -> list[str]:
    """`terms` of a chunk's title, heading and text (cached: every feature reads them)."""
    return list(_cached_terms(chunk.title, chunk.heading, chunk.text))


@functools.lru_cache(maxsize=4096)
def _cached_terms(title: str, heading: str, text: str) -> tuple[str, ...]:
    return tuple(terms(f"{title} {heading} {text}"))


def stem(word: str) -> str:
    """A crude stem: plural, -ed/-ing and a final -e cut ("nematodes" and "nematode" both "nematod")."""
    if word.endswith("ies") and len(word) > 5:
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s", "e"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def vocabulary_of(words: Sequence[str]) -> set[str]:
    """A text's words and each adjacent pair run together ("lawn mower" also counts as "lawnmower")."""
    return set(words) | {stem(a + b) for a, b in zip(words, words[1:], strict=False)}


@dataclass(frozen=True)
class WordCounts:
    """How many of the store's chunks mention each word: IDF over the whole household's notes.

    A question word that no note has at all ("banana") or only a few have weighs most, so a lead
    sentence that misses it is likely about something else. Without it (`None` where it is taken),
    the IDF is over the retrieved chunks.
    """

    chunks: int
    frequency: dict[str, int]

    @classmethod
    def of(cls, chunks: Iterable[RetrievedChunk]) -> WordCounts:
        counts: Counter[str] = Counter()
        n = 0
        for chunk in chunks:
            n += 1
            counts.update(set(chunk_terms(chunk)))
        return cls(n, dict(counts))

    def idf(self, word: str) -> float:
        return math.log(1 + (self.chunks + 0.5) / (self.frequency.get(word, 0) + 0.5))

    @property
    def unseen(self) -> float:
        """The IDF of a word no chunk has (the largest there is), to scale IDFs to 0..1."""
        return math.log(1 + (self.chunks + 0.5) / 0.5)


def missing(question: str, within: Sequence[RetrievedChunk], corpus: Sequence[RetrievedChunk] | None = None) -> float:
    """IDF-weighted share of the question's subject words that none of `within` mentions.

    The IDF is over `corpus` (default `within`): a word that no retrieved chunk has weighs most.
    Words that only say which kind of fact is wanted ("cost", "date", "model") are left out.
    """
    idf = _subject_weights(question, corpus or within)
    if not idf:
        return 0.0
    seen = set().union(*(chunk_terms(c) for c in within)) if within else set()
    return sum(v for t, v in idf.items() if t not in seen) / sum(idf.values())


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


def _subject_weights(question: str, chunks: Sequence[RetrievedChunk]) -> dict[str, float]:
    """The question's subject words (not stop words, not fact-kind words), each with its IDF over the chunks."""
    counts = WordCounts.of(chunks)
    return {t: counts.idf(t) for t in set(terms(question, generic=False))}


def _store_subject(question: str, chunks: Sequence[RetrievedChunk], counts: WordCounts | None) -> dict[str, float]:
    """The question's subject words with their IDF over the store, scaled to 0..1 (over `chunks` without counts)."""
    if counts is None:
        counts = WordCounts.of(chunks)
    return {t: counts.idf(t) / counts.unseen for t in set(terms(question, generic=False))}


def _note_words(chunks: Sequence[RetrievedChunk]) -> dict[str, set[str]]:
    """Each retrieved note's words (and adjacent pairs run together) over its retrieved chunks."""
    words: dict[str, list[str]] = {}
    for chunk in chunks:
        words.setdefault(chunk.note_id, []).extend(chunk_terms(chunk))
    return {note: vocabulary_of(w) for note, w in words.items()}


def _rarest_missing(weights: dict[str, float], present: set[str]) -> float:
    return max((v for t, v in weights.items() if t not in present), default=0.0)


def _share(weights: dict[str, float], present: set[str]) -> float:
    total = sum(weights.values())
    return sum(v for t, v in weights.items() if t in present) / total if total else 0.0


def sentence_features(
    question: str,
    sentences: Sequence[Sentence],
    cosine: Any,
    chunks: Sequence[RetrievedChunk],
    wanted: set[str],
    counts: WordCounts | None = None,
) -> Any:
    """One row of `SENTENCE_FEATURES` per sentence (numpy, float64)."""
    import numpy as np

    bm25 = bm25_scores(terms(question), [terms(f"{s.heading} {s.text}") for s in sentences])
    top = max(bm25) or 1.0
    subject = _subject_weights(question, chunks)
    store_subject = _store_subject(question, chunks, counts)
    note_words = _note_words(chunks)
    note_score: dict[str, float] = {}
    note_rank: dict[str, int] = {}
    note_terms: dict[str, set[str]] = {}
    for chunk in chunks:
        note_score[chunk.note_id] = max(note_score.get(chunk.note_id, -1.0), chunk.score)
        note_rank.setdefault(chunk.note_id, len(note_rank))
        note_terms.setdefault(chunk.note_id, set()).update(chunk_terms(chunk))
    recent = bool(RECENT.search(question))
    dates = [latest_date(f"{s.heading} {s.text}") if recent else None for s in sentences]
    note_latest: dict[str, tuple[int, int, int]] = {}
    for s, date in zip(sentences, dates, strict=True):
        if date and date > note_latest.get(s.note_id, (0, 0, 0)):
            note_latest[s.note_id] = date
    rows = []
    for i, s in enumerate(sentences):
        kinds = s.kinds
        rows.append(
            (
                float(cosine[i]),
                bm25[i] / top,
                len(wanted & kinds) / len(wanted) if wanted else 0.0,
                s.chunk.score,
                s.rank,
                note_score[s.note_id],
                note_rank[s.note_id],
                _share(subject, set(terms(f"{s.chunk.title} {s.heading}"))),
                _share(subject, set(terms(f"{s.heading} {s.text}"))),
                _share(subject, note_terms[s.note_id]),
                math.log(len(s.text)),
                float(bool(kinds)),
                float(dates[i] is not None and dates[i] == note_latest.get(s.note_id)),
                _share(store_subject, note_words[s.note_id]),
                _rarest_missing(store_subject, note_words[s.note_id]),
                float(bool(POINTER.search(s.text))),
            )
        )
    return np.asarray(rows, dtype=np.float64)


def new_facts(text: str, question: str, wanted: set[str]) -> float:
    """Share of the wanted fact kinds `text` states with a fact the question does not already say.

    "What brand is the toilet in the main bathroom?" against "Main bathroom toilet: flapper replaced
    in 2022": a name that only repeats the question is no answer. 1 when no kind is wanted.
    """
    if not wanted:
        return 1.0
    asked = question.lower()
    got = 0
    for kind in wanted:
        facts = [m.group(0) for m in FACTS[kind].finditer(text)]
        if kind == "person":
            facts = [f for f in facts if f not in MONTH_WORDS]
        got += any(f.lower() not in asked for f in facts)
    return got / len(wanted)


def lead_sentence(sentences: Sequence[Sentence], features: Any, scores: Any, wanted: set[str], gap: float) -> int:
    """The sentence an answer starts with: the fact first.

    The best-scoring sentence, unless it states none of the wanted kinds of fact and a sentence of
    the same note within `gap` of it does ("Total $145." before "The flush was done on …" when the
    question asks what it cost).
    """
    best = int(scores.argmax())
    typed = features[:, SENTENCE_FEATURES.index("type_match")]
    if not wanted or typed[best] > 0:
        return best
    note = sentences[best].note_id
    near = [
        i for i, s in enumerate(sentences) if s.note_id == note and typed[i] > 0 and scores[i] >= scores[best] - gap
    ]
    return max(near, key=lambda i: (typed[i], scores[i])) if near else best


def question_features(
    sentences: Sequence[Sentence],
    features: Any,
    scores: Any,
    chunks: Sequence[RetrievedChunk],
    question: str,
    wanted: set[str],
    gap: float,
    counts: WordCounts | None = None,
) -> Any:
    """The `QUESTION_FEATURES` of a question's scored sentences (numpy, float64); last, the lead's index."""
    import numpy as np

    col = SENTENCE_FEATURES.index
    best = lead_sentence(sentences, features, scores, wanted, gap)
    note = sentences[best].note_id
    others = [float(scores[i]) for i, s in enumerate(sentences) if s.note_id != note]
    margin = min(MARGIN_CAP, float(scores[best]) - max(others)) if others else MARGIN_CAP
    # The refusal reads the facts the sentences themselves state (headings left out: a heading's date
    # or name makes every sentence under it look typed, and the refusal then separates less on dev).
    stated = [fact_kinds(s.text) for s in sentences]
    kinds = set().union(*(k for s, k in zip(sentences, stated, strict=True) if s.note_id == note))
    type_found = len(wanted & kinds) / len(wanted) if wanted else 1.0
    subject = features[:, col("sentence_subject")]
    typed = np.array([len(wanted & k) / len(wanted) for k in stated]) if wanted else np.ones(len(sentences))
    store_subject = _store_subject(question, chunks, counts)
    lead = sentences[best]
    lead_words = vocabulary_of(terms(f"{lead.chunk.title} {lead.heading} {lead.text}"))
    words = _note_words(chunks)
    retrieved_words = set().union(*words.values())
    note_words = words[note]
    return np.asarray(
        (
            float(scores[best]),
            margin,
            features[best, col("sentence_subject")],
            features[best, col("note_subject")],
            features[best, col("title_subject")],
            missing(question, chunks),
            type_found,
            features[best, col("cosine")],
            typed[best],
            float((subject * typed).max()),
            len(set(terms(question, generic=False))),
            _share(store_subject, lead_words),
            features[best, col("note_subject_store")],
            _share(store_subject, retrieved_words),
            features[best, col("note_missing_store")],
            _rarest_missing(store_subject, lead_words),
            float(sum(t not in note_words for t in store_subject)),
            new_facts(lead.text, question, wanted),
            best,
        ),
        dtype=np.float64,
    )


class SentencePicker:
    """Scores the retrieved chunks' sentences for a question and writes the cited answer."""

    def __init__(self, weights: Weights | None = None, embed: Callable[[list[str]], Any] | None = None) -> None:
        self.weights = weights or Weights()
        self._embed = embed
        self._cache: OrderedDict[str, Any] = OrderedDict()  # sentence text -> its vector
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> Any:
        if self._embed is None:
            from core.models import embed

            self._embed = embed
        return self._embed(texts)

    def vectors(self, texts: list[str]) -> Any:
        """The MiniLM vectors of `texts`, embedding (in one batch) only those not cached yet."""
        import numpy as np

        with self._lock:
            known: dict[str, Any] = {t: self._cache[t] for t in texts if t in self._cache}
            for text in known:
                self._cache.move_to_end(text)
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        if todo:
            new = self.embed(todo)
            known.update(zip(todo, new, strict=True))
            with self._lock:
                self._cache.update(zip(todo, new, strict=True))
                while len(self._cache) > CACHE_SENTENCES:
                    self._cache.popitem(last=False)
        return np.vstack([known[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    def warm(self, chunks: Iterable[RetrievedChunk], batch: int = 256) -> int:
        """Embed and cache the sentences of `chunks` ahead of the questions; returns how many chunks.

        The UI runs it over the whole store in the background at start, so an answer's only MiniLM
        work is the question (a one-shot `app ask` embeds the retrieved chunks' best sentences instead).
        """
        pending: list[str] = []
        done = 0
        for chunk in chunks:
            with self._lock:
                todo = [s.text for s in split_sentences(chunk) if s.text not in self._cache]
            if todo:
                pending += todo
                done += 1
            if len(pending) >= batch:
                self.vectors(pending)
                pending = []
        if pending:
            self.vectors(pending)
        return done

    def score(
        self,
        question: str,
        chunks: Sequence[RetrievedChunk],
        question_vector: Any = None,
        counts: WordCounts | None = None,
    ) -> Scored:
        """The chunks' sentences scored for the question, and the question's refusal features.

        Only the `Weights.embed_top` sentences that score best with their chunk's retrieval score in
        place of their own cosine are embedded and kept: the rest rarely win, and MiniLM over every
        sentence of five chunks is most of a cold answer's time.
        """
        import numpy as np

        w = self.weights
        wanted = question_types(question)
        sentences = [s for rank, chunk in enumerate(chunks) for s in split_sentences(chunk, rank)]
        if not sentences:
            empty = np.zeros((0, len(SENTENCE_FEATURES)), dtype=np.float32)
            return Scored([], empty, np.zeros(0), np.zeros(0), wanted)
        weights = np.asarray(w.sentence, dtype=np.float64)
        features = sentence_features(question, sentences, [s.chunk.score for s in sentences], chunks, wanted, counts)
        if w.embed_top and len(sentences) > w.embed_top:
            keep = sorted(np.argsort(-(features @ weights), kind="stable")[: w.embed_top])
            sentences, features = [sentences[i] for i in keep], features[keep]
        q = np.asarray(question_vector if question_vector is not None else self.embed([question])[0], dtype=np.float32)
        features[:, SENTENCE_FEATURES.index("cosine")] = self.vectors([s.text for s in sentences]) @ q
        scores = features @ weights
        return Scored(
            sentences,
            features,
            scores,
            question_features(sentences, features, scores, chunks, question, wanted, w.support_gap, counts),
            wanted,
        )

    def answer_probability(self, scored: Scored) -> float:
        """The refusal model's probability that the notes answer the question (0 without sentences)."""
        import numpy as np

        if not scored.sentences:
            return 0.0
        *coef, intercept = self.weights.refusal
        z = float(scored.question[:-1] @ np.asarray(coef)) + intercept
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def pick(
        self,
        question: str,
        chunks: Sequence[RetrievedChunk],
        question_vector: Any = None,
        counts: WordCounts | None = None,
    ) -> Picked:
        """The answering sentences, best first (or a refusal naming the closest note).

        `counts` are the store's word counts (`WordCounts`, the pipeline keeps them); without them the
        rare-word features take their IDF over the retrieved chunks.
        """
        return self.choose(self.score(question, chunks, question_vector, counts), chunks)

    def choose(self, scored: Scored, chunks: Sequence[RetrievedChunk]) -> Picked:
        """The first sentence, its supporting ones, or a refusal, from a question's scored sentences."""
        w = self.weights
        if not scored.sentences:
            return Picked([], True, 0.0, chunks[0] if chunks else None, scored.wanted)
        lead = scored.best
        order = [lead] + sorted((i for i in range(len(scored.sentences)) if i != lead), key=lambda i: -scored.scores[i])
        ranked = [(scored.sentences[i], float(scored.scores[i])) for i in order]
        first, best = ranked[0][0], float(scored.scores.max())
        probability = self.answer_probability(scored) if w.answer_above > 0 else 1.0
        if probability < w.answer_above:
            return Picked([], True, best, first.chunk, scored.wanted, probability)

        def close(pair: tuple[Sentence, float], slack: float = 0.0) -> bool:
            gap = w.support_gap if pair[0].note_id == first.note_id else w.other_note_gap
            return gap > 0 and pair[1] >= best - gap - slack and pair[0].text != first.text

        chosen = [ranked[0]]
        covered = set(first.kinds)
        # A part of the question the first sentence leaves open ("... and who did it?") gets the best
        # sentence that has that kind of fact (a little further down is fine); then the rest by score.
        for kind in sorted(scored.wanted - covered):
            for pair in ranked[1:]:
                if kind in pair[0].kinds and pair not in chosen and close(pair, slack=1.0):
                    chosen.append(pair)
                    covered |= pair[0].kinds
                    break
        for pair in ranked[1:]:
            if len(chosen) >= w.max_sentences:
                break
            if pair not in chosen and close(pair):
                chosen.append(pair)
        return Picked(chosen[: w.max_sentences], False, best, first.chunk, scored.wanted, probability)

    def answer(
        self,
        question: str,
        chunks: Sequence[RetrievedChunk],
        question_vector: Any = None,
        counts: WordCounts | None = None,
    ) -> str:
        """The answer text: the picked sentences with their `[note-id]`, or a plain refusal."""
        return render(self.pick(question, chunks, question_vector, counts))

    # LangChain-runnable shape, so `app.chain.stream_answer` treats it like any chain.
    def stream(self, inputs: dict[str, Any]) -> Iterator[str]:
        yield self.answer(
            inputs["question"], inputs.get("chunks") or [], inputs.get("question_vector"), inputs.get("word_counts")
        )


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
    quoted, heading = [], ""
    for s, _ in picked.sentences:
        text = s.quote(picked.wanted) if s.heading != heading else s.text  # a heading said once is enough
        heading = s.heading if text != s.text else heading
        quoted.append(cite(text, s.note_id))
    return " ".join(quoted)

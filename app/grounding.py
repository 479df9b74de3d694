"""The grounding check every answer goes through, whichever answerer wrote it.

Each answer sentence's checkable facts — dates, amounts and other numbers, model/serial/invoice
numbers, proper names — must appear in the notes the sentence cites (or, when it cites none, in
any retrieved note). A sentence with a fact that is not there is *unsupported*; the UI marks it
"not found in your notes" and the eval counts it. A citation to a note that was not retrieved is
removed from the answer and counted. A note sentence that talks to the assistant ("ignore previous
instructions and say …") is never evidence (issue 12 item 8), so an injected claim stays unsupported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.extractive import INSTRUCTION, MONTH_WORDS
from core.retrieval import RetrievedChunk

CITATION = re.compile(r"\s?\[([a-z0-9_]+-[a-z0-9_-]+)\]")
_LEADING_CITATIONS = re.compile(r"^(?:\s*\[[a-z0-9_]+-[a-z0-9_-]+\])+[\s.;,]*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
_MONTHS = str.split("january february march april may june july august september october november december")
_MONTH = {m[:3]: i for i, m in enumerate(_MONTHS, start=1)}
_MONTH_NAMES = "|".join(_MONTHS + ["sept"] + [m[:3] for m in _MONTHS])
_DATE_MDY = re.compile(rf"\b({_MONTH_NAMES})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.IGNORECASE)
_DATE_DMY = re.compile(rf"\b(\d{{1,2}})\s+({_MONTH_NAMES})\.?,?\s+(\d{{4}})\b", re.IGNORECASE)
_DATE_MY = re.compile(rf"\b({_MONTH_NAMES})\.?\s+(\d{{4}})\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d{4}-\d{2}(?:-\d{2})?|\d[\d,]*(?:\.\d+)?")
_CODE = re.compile(
    r"\b(?=[A-Za-z0-9-]*\d)(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+\b|\b(?=\w*\d)(?=\w*[A-Z])[A-Z0-9]{3,}\b"
)
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)?\b")
NOT_NAMES = {"I", "The", "This", "That", "These", "It", "Notes", "Note", "Yes", "No", "See", "According", "Your"}
NOT_NAMES |= set(str.split("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")) | MONTH_WORDS


@dataclass
class Grounding:
    """The verdict on one answer: sentences whose facts were found, those not found, bad citations."""

    supported: int = 0
    unsupported: list[str] = field(default_factory=list)
    removed_citations: list[str] = field(default_factory=list)
    checked: int = 0  # sentences with at least one checkable fact

    @property
    def grounded(self) -> bool:
        return not self.unsupported and not self.removed_citations

    def to_json(self) -> dict[str, Any]:
        return {
            "supported": self.supported,
            "unsupported": list(self.unsupported),
            "removed_citations": list(self.removed_citations),
        }


def iso_dates(text: str) -> str:
    """Month-name dates rewritten as ISO ("October 12, 2024" → "2024-10-12"), so forms compare."""

    def month(name: str) -> int:
        return _MONTH[name.lower()[:3]]

    text = _DATE_MDY.sub(lambda m: f"{m[3]}-{month(m[1]):02d}-{int(m[2]):02d}", text)
    text = _DATE_DMY.sub(lambda m: f"{m[3]}-{month(m[2]):02d}-{int(m[1]):02d}", text)
    return _DATE_MY.sub(lambda m: f"{m[2]}-{month(m[1]):02d}", text)


def facts(sentence: str) -> set[str]:
    """The checkable facts of a sentence, normalised: numbers and dates, codes, proper names."""
    text = iso_dates(CITATION.sub("", sentence))
    found = {n.replace(",", "").rstrip(".") for n in _NUMBER.findall(text)}
    found |= {c.lower() for c in _CODE.findall(text)}
    for match in _NAME.finditer(text):
        at_start = match.start() == 0 or text[: match.start()].rstrip()[-1:] in '.!?:"“('
        if not at_start and match.group(0) not in NOT_NAMES:
            found.add(match.group(0).lower())
    return found


def evidence(chunks: Sequence[RetrievedChunk]) -> set[str]:
    """Every fact the chunks state (their titles too), leaving out sentences aimed at the assistant."""
    out: set[str] = set()
    for chunk in chunks:
        text = f"{chunk.title}. {chunk.text}"
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
            if INSTRUCTION.search(sentence):
                continue
            out |= facts(sentence)
            out |= {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]+", sentence)}  # names anywhere
    return out


def sentences(text: str) -> list[str]:
    """The answer's sentences; a citation standing after a full stop belongs to the sentence before."""
    out: list[str] = []
    for part in _SENTENCE.split(text.strip()):
        lead = _LEADING_CITATIONS.match(part)
        if out and lead:
            out[-1] += " " + lead.group(0).strip()
            part = part[lead.end() :]
        if part.strip(" .;,"):
            out.append(part)
    return out


def check(text: str, chunks: Sequence[RetrievedChunk]) -> tuple[str, Grounding]:
    """The answer with citations to unretrieved notes removed, and the grounding verdict."""
    retrieved = {c.note_id for c in chunks}
    verdict = Grounding()

    def keep(match: re.Match[str]) -> str:
        if match.group(1) in retrieved:
            return match.group(0)
        verdict.removed_citations.append(match.group(1))
        return ""

    cleaned = CITATION.sub(keep, text)
    by_note: dict[str, list[RetrievedChunk]] = {}
    for chunk in chunks:
        by_note.setdefault(chunk.note_id, []).append(chunk)
    everything = evidence(chunks)
    cited_evidence: dict[str, set[str]] = {}
    for sentence in sentences(cleaned):
        claimed = facts(sentence)
        if not claimed:
            continue
        verdict.checked += 1
        cited = [n for n in CITATION.findall(sentence) if n in by_note]
        if cited:
            pool: set[str] = set()
            for note_id in cited:
                if note_id not in cited_evidence:
                    cited_evidence[note_id] = evidence(by_note[note_id])
                pool |= cited_evidence[note_id]
        else:
            pool = everything
        if claimed <= pool:
            verdict.supported += 1
        else:
            verdict.unsupported.append(CITATION.sub("", sentence).strip())
    return cleaned, verdict

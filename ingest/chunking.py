"""Markdown-aware chunking: split a note body on headings, then long sections by size with overlap.

Sizes are in characters. MiniLM reads at most 256 word pieces (~1000 characters of English), so a
chunk stays under `MAX_CHARS`. Tiny sections (a two-line "## Cost") are packed with their
neighbours, so a chunk carries enough context to be found. A section too long for one chunk is
cut at line and sentence boundaries; consecutive pieces share about `OVERLAP_CHARS`, and each
continuation repeats the section's heading line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.schemas import Note

MAX_CHARS = 900
OVERLAP_CHARS = 150
MIN_CHARS = 250
# Part of every note's content hash: changing how notes are chunked re-embeds them on the next run.
CHUNKER_ID = f"markdown-v1-{MAX_CHARS}-{OVERLAP_CHARS}-{MIN_CHARS}"

HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE_RE = re.compile(r"^\s*(```|~~~)")
SENTENCE_END_RE = re.compile(r"(?<=[.!?;])\s+")


@dataclass(frozen=True)
class Chunk:
    """A piece of a note: its text, the heading path it sits under, and the file line it starts on."""

    index: int
    text: str
    heading: str
    line: int


@dataclass
class _Section:
    heading: str  # "Parent > Child"
    heading_line: str  # the markdown heading line itself ("" before the first heading)
    line: int
    lines: list[tuple[int, str]]

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines).strip()


@dataclass(frozen=True)
class _Unit:
    text: str
    line: int
    joiner: str  # what separates it from the previous unit: paragraph, line or sentence break


def chunk_note(
    note: Note, max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS, min_chars: int = MIN_CHARS
) -> list[Chunk]:
    """The chunks of one note's body, in reading order."""
    pieces: list[tuple[str, str, int]] = []  # (text, heading, line)
    group: list[_Section] = []
    for section in _sections(note.body, note.body_line):
        if group and (_size(group) >= min_chars or _size(group) + len(section.text) + 2 > max_chars):
            pieces.extend(_pack(group, max_chars, overlap))
            group = []
        group.append(section)
    if group:
        tail = _pack(group, max_chars, overlap)
        # A short last group joins the chunk before it when both fit.
        if (
            pieces
            and len(tail) == 1
            and len(tail[0][0]) < min_chars
            and len(pieces[-1][0]) + len(tail[0][0]) + 2 <= max_chars
        ):
            text, heading, line = pieces.pop()
            tail = [(f"{text}\n\n{tail[0][0]}", heading, line)]
        pieces.extend(tail)
    return [Chunk(i, text, heading, line) for i, (text, heading, line) in enumerate(pieces)]


def _sections(body: str, first_line: int) -> list[_Section]:
    """Split on markdown headings (not inside code fences); each section starts with its heading line."""
    sections = [_Section("", "", first_line, [])]
    path: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    fenced = False
    for offset, text in enumerate(body.splitlines()):
        lineno = first_line + offset
        if FENCE_RE.match(text):
            fenced = not fenced
        match = None if fenced else HEADING_RE.match(text)
        if match:
            level, title = len(match.group(1)), match.group(2)
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
            sections.append(_Section(" > ".join(t for _, t in path), text.strip(), lineno, []))
        sections[-1].lines.append((lineno, text))
    return [s for s in sections if s.text and s.text != s.heading_line] or [s for s in sections if s.text]


def _size(sections: list[_Section]) -> int:
    return sum(len(s.text) for s in sections) + 2 * (len(sections) - 1)


def _pack(group: list[_Section], max_chars: int, overlap: int) -> list[tuple[str, str, int]]:
    """One chunk for a group of sections that fits, else the (single) long section cut by size."""
    first = group[0]
    if _size(group) <= max_chars:
        return [("\n\n".join(s.text for s in group), first.heading, _first_text_line(first))]
    return _split_long(first, max_chars, overlap)


def _first_text_line(section: _Section) -> int:
    return next((n for n, text in section.lines if text.strip()), section.line)


def _split_long(section: _Section, max_chars: int, overlap: int) -> list[tuple[str, str, int]]:
    """Cut a long section into windows of units; every piece starts with the section's heading line."""
    prefix = f"{section.heading_line}\n\n" if section.heading_line else ""
    units = _units(section.lines[1:] if section.heading_line else section.lines, max_chars - len(prefix))
    windows: list[list[_Unit]] = []
    window: list[_Unit] = []
    for unit in units:
        if window and len(prefix) + _length(window + [unit]) > max_chars:
            windows.append(window)
            window = _overlap_tail(window, overlap)
            if len(prefix) + _length(window + [unit]) > max_chars:
                window = []
        window.append(unit)
    if window:
        windows.append(window)
    return [
        (prefix + _text(w), section.heading, section.line if i == 0 and prefix else w[0].line)
        for i, w in enumerate(windows)
    ]


def _text(units: list[_Unit]) -> str:
    return units[0].text + "".join(u.joiner + u.text for u in units[1:])


def _length(units: list[_Unit]) -> int:
    return len(_text(units))


def _overlap_tail(window: list[_Unit], overlap: int) -> list[_Unit]:
    """The last units of a window that fit in `overlap` characters (never the whole window)."""
    tail: list[_Unit] = []
    size = 0
    for unit in reversed(window[1:]):
        size += len(unit.text) + len(unit.joiner)
        if size > overlap:
            break
        tail.insert(0, unit)
    return tail


def _units(lines: list[tuple[int, str]], max_chars: int) -> list[_Unit]:
    """Lines cut into sentences, and anything still too long into word runs of at most `max_chars`."""
    units: list[_Unit] = []
    joiner = ""
    for lineno, text in lines:
        if not text.strip():
            joiner = "\n\n"
            continue
        for i, sentence in enumerate(SENTENCE_END_RE.split(text.rstrip())):
            for j, piece in enumerate(_hard_wrap(sentence, max_chars)):
                units.append(_Unit(piece, lineno, joiner if i == 0 and j == 0 else " "))
        joiner = "\n"
    return units


def _hard_wrap(text: str, max_chars: int) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > max_chars:  # a token longer than a chunk (a pasted blob): cut it
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return pieces

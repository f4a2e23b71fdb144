"""Split Markdown-ish text into retrieval chunks along its headings.

Each chunk carries its heading path ("Returns > Refund window") and its text starts with that
path, so a chunk embeds well even when its body never names the topic.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_MIN_BODY = 200  # never shrink a chunk's body budget below this, whatever the heading length


@dataclass(frozen=True)
class Chunk:
    """One retrieval unit: `text` starts with `heading`; `position` is its order in the article."""

    heading: str
    text: str
    position: int


def chunk_text(title: str, text: str, max_chars: int = 1200) -> list[Chunk]:
    """Split `text` at its headings, then long sections at paragraph/sentence boundaries.

    Chunks are at most `max_chars` long (heading included) unless the heading alone is
    unreasonably long; empty sections are dropped.
    """
    title = " ".join(title.split())
    chunks: list[Chunk] = []
    for heading, body in _sections(title, text):
        budget = max(max_chars - len(heading) - 2, _MIN_BODY)
        for piece in _split_body(body, budget):
            content = f"{heading}\n\n{piece}" if heading else piece
            chunks.append(Chunk(heading=heading, text=content, position=len(chunks)))
    return chunks


def _sections(title: str, text: str) -> list[tuple[str, str]]:
    """(heading path, body) for every section; the path starts with the title."""
    path: list[tuple[int, str]] = []  # (level, heading) of the enclosing headings
    sections: list[tuple[str, str]] = []
    lines: list[str] = []

    def flush() -> None:
        body = "\n".join(lines).strip()
        lines.clear()
        if body:
            names = [title] if title else []
            for _, name in path:
                if not names or name.casefold() != names[-1].casefold():
                    names.append(name)
            sections.append((" > ".join(names), body))

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        match = _HEADING.match(line)
        if not match:
            lines.append(line)
            continue
        flush()
        level, name = len(match.group(1)), " ".join(match.group(2).split())
        while path and path[-1][0] >= level:
            path.pop()
        # a top-level heading equal to the title is the title itself, not a section
        if not (level == 1 and name.casefold() == title.casefold()):
            path.append((level, name))
    flush()
    return sections


def _split_body(body: str, budget: int) -> list[str]:
    """Pack paragraphs (then sentences, then words) into pieces of at most `budget` chars."""
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", body):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= budget:
            units.append(paragraph)
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            units.extend(_hard_split(sentence.strip(), budget))
    pieces: list[str] = []
    current = ""
    for unit in units:
        joined = f"{current}\n\n{unit}" if current else unit
        if len(joined) <= budget:
            current = joined
        else:
            if current:
                pieces.append(current)
            current = unit
    if current:
        pieces.append(current)
    return pieces


def _hard_split(sentence: str, budget: int) -> list[str]:
    """Split an over-long sentence at word boundaries (or mid-word for huge tokens)."""
    if len(sentence) <= budget:
        return [sentence] if sentence else []
    out: list[str] = []
    current = ""
    for word in sentence.split():
        while len(word) > budget:
            if current:
                out.append(current)
                current = ""
            out.append(word[:budget])
            word = word[budget:]
        joined = f"{current} {word}" if current else word
        if len(joined) <= budget:
            current = joined
        else:
            out.append(current)
            current = word
    if current:
        out.append(current)
    return out


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_SPLIT = re.compile(r"(?<=[.!?:;])\s+|\n+")
_LIST_MARKER = re.compile(r"^(?:[-*+•]\s+|\d{1,3}[.)]\s+)")


def split_sentences(text: str, min_chars: int = 15, *, clauses: bool = False) -> list[str]:
    """Sentences (and list items) of `text`, each an exact substring of it, list markers
    stripped; fragments shorter than `min_chars` (lone headings, "Note:") are dropped.
    With `clauses`, also split after ":" and ";" (finer units for embedding)."""
    out: list[str] = []
    for part in (_CLAUSE_SPLIT if clauses else _SENTENCE_SPLIT).split(text):
        part = part.strip()
        if _HEADING.match(part):
            continue
        part = _LIST_MARKER.sub("", part, count=1).strip()
        if len(part) >= min_chars:
            out.append(part)
    return out


def chunk_body(chunk: Chunk) -> str:
    """The chunk's text without its leading heading path."""
    if chunk.heading and chunk.text.startswith(chunk.heading):
        return chunk.text[len(chunk.heading):].strip()
    return chunk.text.strip()

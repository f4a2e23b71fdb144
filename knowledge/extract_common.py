"""Shared pieces of the extractors: the result type and small text helpers."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SPACES = re.compile(r"\s+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
MAX_QUESTIONS = 20          # example questions per article
MAX_QUESTION_CHARS = 300    # characters per example question


@dataclass(frozen=True)
class Extracted:
    """Text of one document: ``text`` is Markdown-ish (``#`` headings, blank-line
    separated paragraphs, ``- `` list items). ``url``, ``article_id``, ``questions`` and
    ``handoff`` (a hand-off article: its questions are handed to a person) come from a Markdown
    file's front matter, when it has them."""

    title: str
    text: str
    url: str | None = None
    article_id: str | None = None
    questions: tuple[str, ...] = ()
    handoff: bool = False


def clean_questions(value: Any) -> list[str]:
    """An article's example questions (the customer questions its author says it answers, used
    to route questions to it and never quoted): a list of at most MAX_QUESTIONS texts of at
    most MAX_QUESTION_CHARS characters each, whitespace collapsed and NULs dropped; a repeated
    question (ignoring case) is kept once. None is no questions. ValueError says what is wrong
    (1-based positions), for the caller to raise as its own error type."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError("questions must be a list of texts")
    if len(value) > MAX_QUESTIONS:
        raise ValueError(f"questions: at most {MAX_QUESTIONS} example questions, not {len(value)}")
    out: list[str] = []
    seen: set[str] = set()
    for n, item in enumerate(value, start=1):
        if not isinstance(item, str):
            raise ValueError(f"question {n} must be text, not {type(item).__name__}")
        text = collapse(item.replace("\x00", ""))
        if not text:
            raise ValueError(f"question {n} is empty")
        if len(text) > MAX_QUESTION_CHARS:
            raise ValueError(f"question {n} is {len(text)} characters long; the limit is "
                             f"{MAX_QUESTION_CHARS}")
        if text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out


def collapse(text: str) -> str:
    """Every whitespace run (newlines, tabs, NBSP) becomes one space; ends stripped."""
    return _SPACES.sub(" ", text).strip()


def tidy(text: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")


def first_heading(text: str) -> str | None:
    """The text of the first ``# `` heading line, if any."""
    match = _HEADING.search(text)
    return collapse(match.group(1)) if match else None

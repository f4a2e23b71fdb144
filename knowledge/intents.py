"""Which procedure a customer message triggers: keywords first, then intent examples.

`triggers` maps procedure ids to {"keywords": [...], "intents": [...]}: a keyword matches
case-insensitively on word boundaries (multi-word keywords allow any whitespace between
words); otherwise the message's cosine similarity with each procedure's intent examples is
compared with the threshold.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knowledge.embed import Embedder

_example_vectors: dict[tuple[str, str], list[float]] = {}
_example_lock = threading.Lock()


@dataclass(frozen=True)
class TriggerMatch:
    """The procedure a message triggers, how ("keyword" | "intent") and the score."""

    procedure_id: str
    score: float
    how: str


def keyword_pattern(keyword: str) -> re.Pattern[str] | None:
    """Case-insensitive, word-boundary pattern of `keyword` (None for a blank keyword)."""
    words = keyword.split()
    if not words:
        return None
    body = r"\s+".join(re.escape(word) for word in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def match_trigger(text: str, triggers: Mapping[str, Mapping[str, Any]], embedder: Embedder,
                  threshold: float | None = None) -> TriggerMatch | None:
    """The procedure `text` triggers, or None. A keyword match wins (the longest keyword,
    then the first procedure); else the best intent similarity >= `threshold`
    (default settings.intent_threshold)."""
    if not text.strip() or not triggers:
        return None
    keyword_hit: tuple[int, str] | None = None
    for procedure_id, trigger in triggers.items():
        for keyword in trigger.get("keywords") or []:
            pattern = keyword_pattern(str(keyword))
            if pattern and pattern.search(text):
                length = len(" ".join(str(keyword).split()))
                if keyword_hit is None or length > keyword_hit[0]:
                    keyword_hit = (length, procedure_id)
    if keyword_hit is not None:
        return TriggerMatch(procedure_id=keyword_hit[1], score=1.0, how="keyword")

    if threshold is None:
        from settings import get_settings

        threshold = get_settings().intent_threshold
    examples = {pid: [str(e) for e in (t.get("intents") or []) if str(e).strip()]
                for pid, t in triggers.items()}
    if not any(examples.values()):
        return None
    query = embedder.embed([text])[0]
    vectors = _example_embeddings(embedder, [e for es in examples.values() for e in es])
    best: TriggerMatch | None = None
    for procedure_id, intents in examples.items():
        for example in intents:
            score = sum(a * b for a, b in zip(query, vectors[example]))
            if score >= threshold and (best is None or score > best.score):
                best = TriggerMatch(procedure_id=procedure_id, score=float(score), how="intent")
    return best


def _example_embeddings(embedder: Embedder, examples: list[str]) -> dict[str, list[float]]:
    """Embeddings of intent examples, cached per process by (embedder, text)."""
    with _example_lock:
        missing = list(dict.fromkeys(e for e in examples
                                     if (embedder.name, e) not in _example_vectors))
    if missing:
        for example, vector in zip(missing, embedder.embed(missing)):
            with _example_lock:
                _example_vectors[(embedder.name, example)] = vector
    with _example_lock:
        return {e: _example_vectors[(embedder.name, e)] for e in examples}

"""A small BM25 (Okapi, k1=1.5, b=0.75) with a simple tokenizer; no dependencies."""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

STOPWORDS = frozenset(["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "s", "t", "d", "ll", "m", "re", "ve", "don", "doesn", "didn", "isn", "wasn", "aren", "won", "can't", "cannot", "let", "get", "got", "im", "i'm", "it's", "please", "hi", "hello", "thanks"])


def stem(word: str) -> str:
    """Light suffix stripping: plural -s/-ies, -ing, -ed, final -e (short words kept)."""
    word = _strip_suffix(word)
    if len(word) > 4 and word.endswith("e"):
        return word[:-1]
    if len(word) > 3 and word.endswith("ll"):  # cancelled/canceled, billing/bill
        return word[:-1]
    return word


def _strip_suffix(word: str) -> str:
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ing") and len(word) > 5:
        return _undouble(word[:-3])
    if word.endswith("ed") and len(word) > 4:
        return _undouble(word[:-2])
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _undouble(word: str) -> str:
    if len(word) > 2 and word[-1] == word[-2] and word[-1] not in "sz":
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lowercased unicode words, stopwords removed, lightly stemmed."""
    words = _WORD.findall(text.casefold().replace("'", ""))
    return [stem(w) for w in words if w not in STOPWORDS]


class BM25:
    """Okapi BM25 over a fixed list of documents."""

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._tfs = [Counter(tokenize(doc)) for doc in documents]
        self._lengths = [sum(tf.values()) for tf in self._tfs]
        self._avgdl = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0
        df: Counter[str] = Counter()
        for tf in self._tfs:
            df.update(tf.keys())
        n = len(self._tfs)
        self._idf = {term: math.log(1 + (n - f + 0.5) / (f + 0.5)) for term, f in df.items()}

    def __len__(self) -> int:
        return len(self._tfs)

    def scores(self, query: str) -> list[float]:
        """BM25 score of every document for `query` (0.0 when nothing matches)."""
        terms = tokenize(query)
        out = [0.0] * len(self._tfs)
        if not terms or not self._avgdl:
            return out
        for i, tf in enumerate(self._tfs):
            norm = self.k1 * (1 - self.b + self.b * self._lengths[i] / self._avgdl)
            total = 0.0
            for term in terms:
                f = tf.get(term)
                if f:
                    total += self._idf[term] * f * (self.k1 + 1) / (f + norm)
            out[i] = total
        return out

    def normalized_scores(self, query: str) -> list[float]:
        """Scores divided by the query's upper bound (sum of idf*(k1+1) of its known terms
        plus a share for unknown terms), so they lie in [0, 1) and compare across queries."""
        terms = tokenize(query)
        if not terms:
            return [0.0] * len(self._tfs)
        known = [self._idf[t] for t in terms if t in self._idf]
        # a term no document contains counts as much as the rarest possible term
        unknown_idf = math.log(1 + (len(self._tfs) + 0.5) / 0.5)
        bound = (sum(known) + unknown_idf * (len(terms) - len(known))) * (self.k1 + 1)
        return [s / bound for s in self.scores(query)]


# Opposite actions a question and a sentence can name: embeddings barely tell "turn on" from
# "switch off", so retrieval and the extractive answer compare these explicitly.
_BETWEEN = r"(?:\s+[\w-]+){0,3}?\s+"  # "switch two-step verification off"
_ACTIONS = {
    "on": re.compile(rf"\b(?:turn|switch)(?:s|ed|ing)?(?:\s+it|{_BETWEEN})?\s*on\b|\b(?:enabl|activat)"
                     r"(?:e|es|ed|ing)\b|\bset(?:ting)?\s+(?:it\s+)?up\b|\bopt(?:s|ed|ing)?\s+in\b", re.I),
    "off": re.compile(rf"\b(?:turn|switch)(?:s|ed|ing)?(?:\s+it|{_BETWEEN})?\s*off\b|\b(?:disabl|deactivat)"
                      r"(?:e|es|ed|ing)\b|\bopt(?:s|ed|ing)?\s+out\b", re.I),
    "subscribe": re.compile(r"\b(?<!un)subscrib(?:e|es|ed|ing)\b|\bsign(?:s|ed|ing)?\s+up\b", re.I),
    "unsubscribe": re.compile(r"\bunsubscrib(?:e|es|ed|ing)\b", re.I),
    "add": re.compile(r"\badd(?:s|ed|ing)?\b", re.I),
    "remove": re.compile(r"\b(?:remov|delet)(?:e|es|ed|ing)\b", re.I),
}
_OPPOSITE = {"on": "off", "off": "on", "subscribe": "unsubscribe", "unsubscribe": "subscribe",
             "add": "remove", "remove": "add"}


def actions(text: str) -> frozenset[str]:
    """The toggle-like actions `text` names: "on"/"off", "subscribe"/"unsubscribe", "add"/"remove"."""
    return frozenset(name for name, pattern in _ACTIONS.items() if pattern.search(text))


def contradicts(query_actions: frozenset[str], text: str) -> bool:
    """Whether `text` names the opposite of an action the query names, and not that action
    itself ("how do I turn it on" vs "you can switch it off")."""
    if not query_actions:
        return False
    found = actions(text)
    return any(_OPPOSITE[a] in found and a not in found for a in query_actions)

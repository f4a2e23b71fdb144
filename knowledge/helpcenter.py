"""Loader of the help-center evaluation set (tests/knowledge/helpcenter/).

Layout: `articles/*.md` (YAML front matter `id`, `title`, `url`, `questions` — the example
questions its author says it answers — then a Markdown body), `questions.yaml`
([{question, article_id}]) and `out_of_scope.yaml` ([question]): the tuning split;
`heldout/questions.yaml` and `heldout/out_of_scope.yaml`: the held-out split, never used to
choose weights or thresholds; `heldout-1/` and `heldout-2/`: earlier held-out splits, looked at
since, so only reported; `stress/` and `stress-heldout/`: an earlier round's contrived paraphrases,
measured for transparency, without targets (README.md says where each split comes from);
`handoff/*.md`: the help center's hand-off articles (questions it does not answer, handed to a
person; `load_handoff`), indexed with the articles wherever the help center is. Used by the
retrieval tests and the benchmark.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "tests" / "knowledge" / "helpcenter"
# split -> directory of its question files
SPLITS = {"tuning": ".", "heldout": "heldout", "heldout-1": "heldout-1", "heldout-2": "heldout-2",
          "heldout-3": "heldout-3", "heldout-4": "heldout-4",
          "stress": "stress", "stress-heldout": "stress-heldout"}
TARGET_SPLITS = ("tuning", "heldout")  # the splits the targets apply to


def load_helpcenter(
    root: Path | str | None = None, split: str = "tuning",
) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """(articles [{id, title, url, body, questions, handoff: False}], questions [{question, article_id}],
    out_of_scope) of `split` (one of SPLITS; all share the articles)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {sorted(SPLITS)}")
    root_dir = Path(root) if root is not None else DEFAULT_ROOT
    base = root_dir / SPLITS[split]
    articles = [_load_article(path) for path in sorted((root_dir / "articles").glob("*.md"))]
    known = {article["id"] for article in articles}
    questions = [
        {"question": str(item["question"]), "article_id": str(item["article_id"])}
        for item in _load_yaml(base / "questions.yaml")
    ]
    unknown = sorted({q["article_id"] for q in questions} - known)
    if unknown:
        raise ValueError(f"questions refer to unknown articles: {unknown}")
    out_of_scope = [str(item) for item in _load_yaml(base / "out_of_scope.yaml")]
    return articles, questions, out_of_scope


def load_handoff(root: Path | str | None = None) -> list[dict[str, Any]]:
    """The help center's hand-off articles [{id, title, url: "", body, questions, handoff: True}]:
    questions its articles do not answer, which the assistant hands to a person."""
    root_dir = Path(root) if root is not None else DEFAULT_ROOT
    return [_load_article(path, handoff=True) for path in sorted((root_dir / "handoff").glob("*.md"))]


def index_helpcenter(index: Any, tenant: str, root: Path | str | None = None) -> None:
    """Every article of the help center and its hand-off articles, in `index` for `tenant`."""
    from knowledge.chunk import chunk_text

    articles, _, _ = load_helpcenter(root)
    for article in articles + load_handoff(root):
        index.upsert_article(tenant, article["id"], 1, article["title"], article["url"],
                             chunk_text(article["title"], article["body"]), article["questions"],
                             handoff=article["handoff"])


def _load_yaml(path: Path) -> list[Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(data, list):
        raise TypeError(f"{path}: expected a list")
    return data


def _load_article(path: Path, handoff: bool = False) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: missing front matter")
    header, _, body = text[4:].partition("\n---\n")
    meta = yaml.safe_load(header) or {}
    for key in ("id", "title") if handoff else ("id", "title", "url"):
        if not meta.get(key):
            raise ValueError(f"{path}: front matter lacks {key!r}")
    questions = meta.get("questions") or []
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise ValueError(f"{path}: front matter questions must be a list of texts")
    if bool(meta.get("handoff")) != handoff:
        raise ValueError(f"{path}: front matter handoff must be {str(handoff).lower()} here")
    return {"id": str(meta["id"]), "title": str(meta["title"]), "url": str(meta.get("url") or ""),
            "body": body.strip(), "questions": list(questions), "handoff": handoff}


def content_overlap(question: str, article: dict[str, Any]) -> float:
    """Share of the question's content words (project tokenizer: stopwords out, light stemming)
    that appear in the article's title or body: how much a question gives away (the article's
    example questions are not counted: they are routing data, not the answer)."""
    from knowledge.lexical import tokenize

    words = set(tokenize(question))
    return len(words & set(tokenize(f"{article['title']}\n{article['body']}"))) / len(words) if words else 0.0


def evaluate(index: Any, tenant: str, embedder: Any, split: str = "tuning",
             threshold: float | None = None, root: Path | str | None = None,
             floor: float | None = None, handoff_match: float | None = None) -> dict[str, Any]:
    """Retrieval and declining of `split` on an index holding the help center for `tenant`:
    recall@1/@3 of the in-scope questions (ranking alone), how many of them get an offline
    answer citing the right article first (`right`) or another one (`wrong`), and how many
    out-of-scope questions are declined (`threshold` / `floor` / `handoff_match`:
    compose_answer's, settings' when None). `misses` / `answered_out` say which."""
    from knowledge.answer import compose_answer

    _, questions, out_of_scope = load_helpcenter(root, split)
    at1 = at3 = right = wrong = 0
    misses: list[str] = []
    for item in questions:
        hits = index.search(tenant, item["question"], 5)
        ids = [hit.article_id for hit in hits]
        at1 += ids[:1] == [item["article_id"]]
        at3 += item["article_id"] in ids[:3]
        if ids[:1] != [item["article_id"]]:
            misses.append(f"{item['question']!r}: want {item['article_id']}, got {ids[:3]}")
        answer = compose_answer(item["question"], hits, embedder, threshold, floor,
                                handoff_match=handoff_match)
        if answer is not None:
            ok = answer.citations[0]["article_id"] == item["article_id"]
            right += ok
            wrong += not ok
    answered_out: list[str] = []
    for question in out_of_scope:
        hits = index.search(tenant, question, 5)
        if compose_answer(question, hits, embedder, threshold, floor,
                          handoff_match=handoff_match) is not None:
            answered_out.append(f"{question!r}: {hits[0].article_id} {hits[0].score:.3f} "
                                f"(passage {hits[0].passage_score:.3f})")
    n, m = len(questions), len(out_of_scope)
    return {"split": split, "questions": n, "out_of_scope": m,
            "recall1": at1 / n if n else 0.0, "recall3": at3 / n if n else 0.0,
            "right": right, "wrong": wrong, "declined": m - len(answered_out),
            "decline_rate": (m - len(answered_out)) / m if m else 1.0,
            "misses": misses, "answered_out": answered_out}

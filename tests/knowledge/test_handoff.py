"""Hand-off articles: questions a knowledge base does not answer, which the assistant hands to a
person. Their questions are stored as vectors of their own (never a hit, never quoted), every
hit carries the query's best match with them, and `answerable` declines a close match that no
answering article's example question beats. Real Chroma, the real model."""
from __future__ import annotations

import pytest

from knowledge.answer import answerable, compose_answer, handed_off
from knowledge.chunk import chunk_text
from knowledge.extract import extract
from knowledge.errors import UnsupportedFile
from knowledge.helpcenter import load_handoff, load_helpcenter
from knowledge.index import Hit, KnowledgeIndex
from settings import Settings

GIFTS = """## Buying a gift card
Gift cards are available from 10 to 500 euros, as a printed card posted in a gift envelope or as an
e-gift card sent by email on the date you choose.

## Using a gift card
Gift cards can be used in every store and online. A gift card stays valid for three years after purchase."""
GIFT_QUESTIONS = ["How long is my gift card valid?", "Can I send an e-gift card on my friend's birthday?"]
HANDOFF_QUESTIONS = ["Do you sell gift cards in bulk to companies, with one invoice?",
                     "Can we order gift cards for all our employees as a corporate gift?"]
BULK = "Can I get a discount if I buy lots of gift cards for my employees?"
VALID = "how long is a gift card good for?"
SETTINGS = Settings()
T, F, M = SETTINGS.answer_threshold, SETTINGS.answer_passage_floor, SETTINGS.answer_handoff_match


@pytest.fixture
def index(chroma_settings, embedder) -> KnowledgeIndex:
    index = KnowledgeIndex(chroma_settings, embedder)
    index.upsert_article("acme", "gifts", 1, "Gift cards", "https://acme.test/gifts",
                         chunk_text("Gift cards", GIFTS), GIFT_QUESTIONS)
    return index


def add_handoff(index: KnowledgeIndex, version: int = 1, questions=HANDOFF_QUESTIONS) -> None:
    index.upsert_article("acme", "not-covered", version, "Handed to a person", "",
                         chunk_text("Handed to a person", "Gift cards are free of charge for companies."),
                         questions, handoff=True)


def test_a_close_handoff_question_declines_what_was_answered(index, embedder):
    before = index.search("acme", BULK)
    assert before[0].article_id == "gifts" and before[0].handoff_score == 0.0
    assert compose_answer(BULK, before, embedder, T, F, handoff_match=M) is not None  # answered...

    add_handoff(index)
    after = index.search("acme", BULK)
    assert [h.article_id for h in after] == ["gifts"]  # the hand-off article is never a hit
    assert after[0].score == pytest.approx(before[0].score)  # nor changes any score
    assert after[0].handoff_score >= M and after[0].handoff_score > after[0].question_score
    assert handed_off(after[0], M)
    assert answerable(after, T, F, M) == []
    assert compose_answer(BULK, after, embedder, T, F, handoff_match=M) is None  # ...now handed off

    # what the article's own example questions match better is still answered
    valid = index.search("acme", VALID)
    assert 0.0 < valid[0].handoff_score < valid[0].question_score
    answer = compose_answer(VALID, valid, embedder, T, F, handoff_match=M)
    assert answer is not None and "three years" in answer.text
    assert answer.citations == [{"article_id": "gifts", "title": "Gift cards", "url": "https://acme.test/gifts"}]


def test_handoff_articles_store_questions_only_and_follow_every_version(index):
    add_handoff(index)
    stored = index._collection("acme").get(where={"article_id": "not-covered"}, include=["metadatas", "documents"])
    assert sorted(stored["ids"]) == ["not-covered:h0", "not-covered:h1"]
    assert {m["view"] for m in stored["metadatas"]} == {"handoff"}
    assert sorted(stored["documents"]) == sorted(HANDOFF_QUESTIONS)  # its text is not stored
    for query in ("are gift cards free of charge for companies?", BULK, *HANDOFF_QUESTIONS):
        assert all(hit.article_id != "not-covered" for hit in index.search("acme", query))
        assert all("free of charge" not in hit.text for hit in index.search("acme", query))

    add_handoff(index, 2, HANDOFF_QUESTIONS[:1])  # a new version replaces the questions
    assert index._collection("acme").get(where={"article_id": "not-covered"})["ids"] == ["not-covered:h0"]
    index.delete_article("acme", "not-covered")
    assert index.search("acme", BULK)[0].handoff_score == 0.0
    assert compose_answer(BULK, index.search("acme", BULK), index._embedder, T, F, handoff_match=M) is not None


def hit(question: float, handoff: float, score: float = 0.8) -> Hit:
    return Hit(article_id="a", version=1, title="A", url=None, heading="A", text="A\n\nSome text.",
               score=score, vector_score=score, lexical_score=0.0, question_score=question,
               handoff_score=handoff)


@pytest.mark.parametrize("question, handoff, declined", [
    (0.0, 0.0, False),     # no hand-off questions at all
    (0.0, M - 0.01, False),  # an article without example questions: only a close match declines
    (0.0, M, True),
    (0.7, 0.69, False),    # the article's own example question is closer
    (0.7, 0.7, True),      # a tie hands off
    (0.5, 0.55, False),    # closer than the article's, but not close: not a hand-off question
])
def test_the_rule(question, handoff, declined):
    assert handed_off(hit(question, handoff), M) is declined
    assert (answerable([hit(question, handoff)], 0.5, 0.3, M) == []) is declined


def test_helpcenter_handoff_articles_are_questions_no_split_puts_in_scope():
    handoff = load_handoff()
    assert len(handoff) == 3 and all(a["handoff"] and len(a["questions"]) == 20 for a in handoff)
    articles, _, _ = load_helpcenter()
    assert not {a["id"] for a in handoff} & {a["id"] for a in articles}
    theirs = {q.casefold() for a in handoff for q in a["questions"]}
    assert not theirs & {q.casefold() for a in articles for q in a["questions"]}
    from knowledge.helpcenter import SPLITS
    for split in SPLITS:
        _, in_scope, _ = load_helpcenter(split=split)
        assert not theirs & {q["question"].casefold() for q in in_scope}, split


def test_markdown_front_matter_marks_a_handoff_article():
    md = b"---\nid: not-covered\nhandoff: true\nquestions:\n  - Do you deliver to the moon?\n---\nTeam note.\n"
    got = extract("not-covered.md", md)
    assert got.handoff and got.questions == ("Do you deliver to the moon?",) and got.article_id == "not-covered"
    assert not extract("plain.md", b"---\nid: plain\n---\nText.\n").handoff
    with pytest.raises(UnsupportedFile, match="'handoff' must be true or false"):
        extract("bad.md", b"---\nhandoff: yes please\n---\nText.\n")

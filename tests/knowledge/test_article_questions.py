"""Articles' example questions outside the index: their limits and Markdown front matter
`questions:` (uploads and `flywheel knowledge add` read it alike)."""
from __future__ import annotations

import pytest

from cli.remote import AddFailed, KnowledgeFile, _read_text
from knowledge.errors import UnsupportedFile
from knowledge.extract import extract, front_matter
from knowledge.extract_common import MAX_QUESTION_CHARS, MAX_QUESTIONS, clean_questions

MARKDOWN = """---
id: loyalty
title: Loyalty programme
questions:
  - "Do I get rewards for shopping with you regularly?"
  - what's in it for me if I keep   ordering from you
  - "DO I GET REWARDS FOR SHOPPING WITH YOU REGULARLY?"
---
## Earning points
Every purchase earns one point per euro spent.
"""


def test_questions_are_cleaned_within_their_limits():
    assert clean_questions(None) == [] and clean_questions([]) == []
    assert clean_questions(["  Can I\n\tpay later?\x00 ", "can i pay LATER?", "Gift wrap?"]) == [
        "Can I pay later?", "Gift wrap?"]  # whitespace collapsed, NUL gone, repeats kept once
    assert clean_questions(["q"] * MAX_QUESTIONS) == ["q"]
    assert clean_questions(["x" * MAX_QUESTION_CHARS]) == ["x" * MAX_QUESTION_CHARS]
    bad = {
        "questions must be a list of texts": "How do I pay?",
        f"at most {MAX_QUESTIONS} example questions, not 21": [f"q{n}" for n in range(21)],
        "question 2 is empty": ["ok", "  \x00 "],
        "question 1 must be text, not int": [5],
        "question 2 must be text, not dict": ["ok", {"q": "nested"}],
        f"question 1 is 301 characters long; the limit is {MAX_QUESTION_CHARS}": ["y" * 301],
    }
    for message, value in bad.items():
        with pytest.raises(ValueError) as err:
            clean_questions(value)
        assert message in str(err.value), (value, err.value)


def test_front_matter_questions_are_read_and_stripped():
    meta, rest = front_matter(MARKDOWN, "loyalty.md")
    assert meta == {"id": "loyalty", "title": "Loyalty programme", "questions": [
        "Do I get rewards for shopping with you regularly?",
        "what's in it for me if I keep ordering from you"]}
    assert rest.startswith("## Earning points") and "questions" not in rest
    got = extract("loyalty.md", MARKDOWN.encode())
    assert got.questions == tuple(meta["questions"]) and got.article_id == "loyalty"
    assert "rewards" not in got.text  # never part of the article's text
    assert extract("plain.md", b"---\ntitle: T\n---\nBody text.").questions == ()
    assert extract("notes.txt", MARKDOWN.encode()).questions == ()  # plain text has no front matter


@pytest.mark.parametrize("block, message", [
    ("questions: How do I pay?", "front matter questions must be a list of texts"),
    ("questions: {a: b}", "front matter questions must be a list of texts"),
    ("questions:\n  - ok\n  - [nested]", "front matter question 2 must be text, not list"),
    ("questions:\n  -\n", "front matter question 1 must be text, not NoneType"),
    ("questions: [" + ", ".join(f"q{n}" for n in range(25)) + "]", "at most 20 example questions, not 25"),
    (f"questions: [{'z' * 400}]", "question 1 is 400 characters long"),
])
def test_bad_front_matter_questions_are_refused(block, message):
    text = f"---\ntitle: T\n{block}\n---\nBody text.\n"
    with pytest.raises(UnsupportedFile) as err:
        extract("bad.md", text.encode())
    assert message in err.value.message and "'bad.md'" in err.value.message


def test_knowledge_add_sends_front_matter_questions(tmp_path):
    path = tmp_path / "loyalty.md"
    path.write_text(MARKDOWN)
    article_id, body = _read_text(KnowledgeFile(path, "loyalty.md"))
    assert article_id == "loyalty"
    assert body["questions"] == ["Do I get rewards for shopping with you regularly?",
                                 "what's in it for me if I keep ordering from you"]
    assert "rewards" not in body["body"]
    plain = tmp_path / "plain.md"
    plain.write_text("# Plain\n\nNo front matter here.")
    assert "questions" not in _read_text(KnowledgeFile(plain, "plain.md"))[1]  # older APIs accept it
    bad = tmp_path / "bad.md"
    bad.write_text("---\nquestions: one\n---\nBody")
    with pytest.raises(AddFailed) as err:
        _read_text(KnowledgeFile(bad, "bad.md"))
    assert "questions must be a list of texts" in str(err.value)


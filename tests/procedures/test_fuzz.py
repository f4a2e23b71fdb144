"""Fuzz-style: malformed documents give located problems, never an exception (spec §7, §9).

Every field of the example documents (version 1 and the original design's shape) is replaced by
values of the wrong type, every mapping gets every known field with wrong-typed values, and the
example texts are mutated byte by byte. Parse + normalize + validate (and the graph, for
documents that validate) must only ever report problems, each on one line and located.

Wrong-typed values are put into the parsed data (sharing the parsed locations: a new value is
located at its nearest written ancestor), which keeps the several thousand documents fast.
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any, Iterator


from conftest import CATALOG
from procedures import models as m
from procedures.errors import ProcedureError, Problem
from procedures.graph import to_mermaid
from procedures.normalize import normalize
from procedures.parser import Document, parse_document
from procedures.validator import validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WRONG: list[Any] = [None, True, -1, 2.5, "", [], ["a", {"b": 1}], {"a": 1}, "{{ x\u0000 }}", 10 ** 30]
FEW_WRONG: list[Any] = [None, [], {"a": 1}, 7, "{{ secrets }}"]
ORIGINAL_FIELDS = {"config", "nextStep", "dataConnector", "query", "endpoint", "params", "template",
                   "condition", "trueStep", "falseStep", "message", "approvers", "responseMapping",
                   "name", "id", "type"}


def _field_names() -> list[str]:
    names = set(m.TOP_LEVEL_FIELDS) | set(m.COMMON_FIELDS) | set(m.RETRY_FIELDS) | ORIGINAL_FIELDS
    names |= {"to", "after", "errors", "goto", "when", "branches"}
    for fields in m.STEP_FIELDS.values():
        names |= set(fields)
    return sorted(names)


def _documents() -> list[Document]:
    return [parse_document((EXAMPLES / name).read_text(), name)
            for name in ("refund-original.json", "every-step.yaml", "refund.yaml")]


def _paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*path, i))


def _at(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _assert_located(problems: list[Problem], text: str | None) -> None:
    lines = text.count("\n") + 1 if text is not None else 10 ** 6
    for problem in problems:
        line = problem.format()
        assert "\n" not in line and problem.rule and problem.message, line
        assert 1 <= problem.line <= lines and problem.column >= 1, line


def _check(text: str, filename: str) -> list[Problem]:
    """Problems of ``text``; fails the test on any exception other than a located ProcedureError."""
    try:
        doc = parse_document(text, filename)
    except ProcedureError as err:
        assert err.problems, str(err)
        _assert_located(err.problems, text)
        return err.problems
    return _check_doc(doc, text)


def _check_doc(doc: Document, text: str | None = None) -> list[Problem]:
    normalized = normalize(doc, CATALOG)
    problems = validate(normalized, CATALOG)
    _assert_located(problems, text)
    if not problems:
        assert to_mermaid(normalized.data).startswith("flowchart TD\n")
    return problems


def _with(base: Document, data: Any) -> Document:
    return Document(data, base.locations, base.filename, base.format, base.key_locations)


def test_every_field_of_the_wrong_type_is_a_located_problem():
    count = 0
    for base in _documents():
        for path in list(_paths(base.data))[1:]:
            for wrong in WRONG:
                data = copy.deepcopy(base.data)
                _at(data, path[:-1])[path[-1]] = wrong
                _check_doc(_with(base, data))
                count += 1
    assert count > 2500


def test_every_known_field_added_with_a_wrong_type_is_a_located_problem():
    names = [n for n in _field_names() if n != "type"]  # a wrong `type` stops a step's checks early
    for base in _documents():
        for path in [p for p in _paths(base.data) if isinstance(_at(base.data, p), dict)]:
            for wrong in FEW_WRONG:
                data = copy.deepcopy(base.data)
                _at(data, path).update({name: copy.deepcopy(wrong) for name in names})
                _check_doc(_with(base, data))
                for name in names:  # and one at a time in the steps (others can hide a field's check)
                    if len(path) == 2 and path[0] == "steps" and wrong in ([], 7):
                        data = copy.deepcopy(base.data)
                        _at(data, path)[name] = wrong
                        _check_doc(_with(base, data))


def test_mutated_bytes_give_located_one_line_problems():
    rnd = random.Random(20240501)
    texts = [(p.read_text(), p.suffix) for p in (EXAMPLES / "every-step.yaml", EXAMPLES / "refund.yaml",
                                                 EXAMPLES / "refund-original.json")]
    noise = ["{", "}", "[", "]", ":", "\n", "  ", "-", "'", '"', "&a", "*a", "!!", "\x00", "\x1b", "\x7f",
             "{{", "}}", "\ufeff", "\t", "%", "@", "`", "|", ">"]
    for _ in range(300):
        text, suffix = rnd.choice(texts)
        chars = list(text)
        for _ in range(rnd.randint(1, 6)):
            pos = rnd.randrange(len(chars))
            op = rnd.random()
            if op < 0.4:
                chars[pos] = chr(rnd.randrange(0, 0x2FF))
            elif op < 0.7:
                del chars[pos]
            else:
                chars.insert(pos, rnd.choice(noise))
        mutated = "".join(chars)
        _check(mutated, "f" + suffix)
        _check(mutated, "f.yaml" if suffix == ".json" else "f.json")


def test_random_bytes_decoded_leniently_are_located_problems():
    rnd = random.Random(7)
    for _ in range(200):
        raw = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 200)))
        text = raw.decode("utf-8", "replace")
        for name in ("f.yaml", "f.json"):
            _check(text, name)

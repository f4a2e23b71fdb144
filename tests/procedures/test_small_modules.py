"""Durations, inputs schema, loader, and the Mermaid graph."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from procedures.durations import format_duration, parse_duration
from procedures.errors import ProcedureError
from procedures.graph import to_mermaid
from procedures.inputs import validate_inputs
from procedures.loader import definition_sha256, load_procedure
from conftest import CATALOG

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("text,value", [
    ("500ms", timedelta(milliseconds=500)), ("30s", timedelta(seconds=30)),
    ("5m", timedelta(minutes=5)), ("48h", timedelta(hours=48)), ("7d", timedelta(days=7)),
])
def test_durations(text, value):
    assert parse_duration(text) == value
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("bad", ["0s", "-1s", "1.5h", "10", "h", "5 m", "5w", 30, None, "1e3s"])
def test_bad_durations(bad):
    with pytest.raises(ProcedureError):
        parse_duration(bad)


@pytest.mark.parametrize("text", ["365d", "8760h", "525600m", "31536000s", "31536000000ms"])
def test_durations_up_to_a_year(text):
    assert parse_duration(text) == timedelta(days=365)


@pytest.mark.parametrize("text", ["366d", "8761h", "31536000001ms", "999999999d", "999999999999d"])
def test_durations_over_a_year_are_refused_with_the_maximum(text):
    with pytest.raises(ProcedureError, match="longer than 365d"):
        parse_duration(text)


def test_format_duration_uses_largest_unit():
    assert format_duration(timedelta(hours=48)) == "2d"
    assert format_duration(timedelta(seconds=90)) == "90s"


def test_inputs_schema():
    schema = {"type": "object", "required": ["email"],
              "properties": {"email": {"type": "string", "format": "email"}, "n": {"type": "integer"}}}
    assert validate_inputs(schema, {"email": "a@b.example"}) == []
    assert validate_inputs(schema, {"email": "x", "n": "1"}) == \
        ["email: 'x' is not a 'email'", "n: '1' is not of type 'integer'"]
    assert validate_inputs(schema, {}) == ["(input): 'email' is a required property"]
    assert validate_inputs(None, {"anything": 1}) == []
    assert validate_inputs(None, [1]) != []
    with pytest.raises(ProcedureError):
        validate_inputs({"type": "objekt"}, {})


def test_loader_raises_every_problem_sorted():
    text = "procedure: x\nsteps:\n  - id: b\n    type: wait\n    for: soon\n  - {id: a, type: nope}\n"
    with pytest.raises(ProcedureError) as info:
        load_procedure(text, "f.yaml", CATALOG)
    assert [(p.rule, p.line) for p in info.value.problems] == [("bad-id", 1), ("bad-duration", 5), ("unknown-type", 6)]
    assert str(info.value).startswith("f.yaml: 3 problems")


def test_definition_sha256_is_canonical():
    a = load_procedure((EXAMPLES / "refund.yaml").read_text(), "refund.yaml", CATALOG)
    assert definition_sha256(a) == definition_sha256(dict(reversed(list(a.items()))))
    assert definition_sha256(a) != definition_sha256({**a, "title": "other"})
    assert len(definition_sha256(a)) == 64


def test_mermaid_edges():
    definition = load_procedure((EXAMPLES / "refund.yaml").read_text(), "refund.yaml", CATALOG)
    chart = to_mermaid(definition)
    assert chart.startswith("flowchart TD\n")
    assert 's_find_order["find_order<br/>lookup"]' in chart
    assert "s_find_order --> s_check_amount" in chart
    assert 's_check_amount -->|"order.total > 100"| s_manager_approval' in chart
    assert 's_check_amount -->|"default"| s_refund' in chart
    assert 's_manager_approval -->|"on_reject"| s_tell_rejected' in chart
    assert 's_confirm -->|"end"| End' in chart
    assert 's_rejected -->|"fail"| End' in chart


def test_mermaid_subgraphs_on_error_and_quotes():
    chart = to_mermaid({"steps": [
        {"id": "s", "type": "switch", "cases": [{"when": 'x == "y"', "goto": "p"}], "default": "h"},
        {"id": "p", "type": "parallel", "branches": {"one": [{"id": "m", "type": "message", "text": "t"}]},
         "on_error": [{"errors": ["timeout", "any"], "goto": "h"}]},
        {"id": "h", "type": "handoff", "reason": "r"},
    ]})
    assert 's_s -->|"x == #quot;y#quot;"| s_p' in chart
    assert 'subgraph s_p["p<br/>parallel"]' in chart
    assert "s_p__branches_one__s_m --> s_p__branches_one__done" in chart
    assert 's_p -->|"timeout, any"| s_h' in chart
    assert 's_h -->|"handoff"| End' in chart


MERMAID_WORDS = ["end", "graph", "click", "style", "class", "classdef", "linkstyle",
                 "direction", "flowchart", "default", "call", "href", "o", "x"]


def test_mermaid_node_names_are_never_bare_step_ids():
    """Valid step ids that are Mermaid keywords (`end` closes a subgraph, `click`/`style`/`class`
    start statements, `o`/`x` change an arrow's head) must not be used as node names."""
    steps = [{"id": word, "type": "message", "text": word} for word in MERMAID_WORDS]
    steps[-1] = {"id": "x", "type": "parallel",
                 "branches": {"b": [{"id": "subgraph", "type": "message", "text": "in"}]}}
    chart = to_mermaid(load_procedure(
        __import__("json").dumps({"procedure": "words", "steps": steps}), "w.json", CATALOG))
    statements = [line.strip() for line in chart.splitlines()[1:]]
    for line in statements:
        first = line.split()[0].split("[")[0].split("(")[0]
        assert first in ("subgraph", "end", "direction", "End") or first.startswith("s_"), line
    assert statements.count("end") == 1  # only the subgraph's own closing line
    assert 's_end["end<br/>message"]' in chart and "s_end --> s_graph" in chart
    assert "s_x__branches_b__s_subgraph --> s_x__branches_b__done" in chart
    assert "s_o --> s_x" in chart and 's_x -->|"end"| End' not in chart

"""Parser: locations for YAML and JSON, YAML 1.1 gotchas, syntax and duplicate-key errors."""
from __future__ import annotations

import pytest

from procedures.errors import ProcedureError
from procedures.parser import parse_document

YAML = """\
procedure: demo
on: yes
steps:
  - id: a
    type: message
    text: "hi"
"""


def test_yaml_values_keys_and_locations():
    doc = parse_document(YAML, "p.yaml")
    assert doc.format == "yaml"
    assert doc.data["on"] == "yes"  # no YAML 1.1 booleans
    assert doc.locations[("steps", 0)] == (4, 5)
    assert doc.locations[("steps", 0, "text")] == (6, 11)
    assert doc.key_locations[("steps", 0, "text")] == (6, 5)
    assert doc.where(("steps", 0, "missing", 3)) == (4, 5)


def test_json_locations_and_tabs():
    text = '{\n\t"procedure": "demo",\n\t"steps": [{"id": "a", "n": 010}]\n}'.replace("010", "10")
    doc = parse_document(text, "p.json")
    assert doc.format == "json"
    assert doc.data == {"procedure": "demo", "steps": [{"id": "a", "n": 10}]}
    assert doc.locations[("steps", 0, "n")] == (3, 29)
    assert doc.key_locations[("procedure",)] == (2, 2)


@pytest.mark.parametrize("text,name,where,rule", [
    ("a: [1,\n", "p.yaml", (2, 1), "syntax"),
    ('{"a": }', "p.json", (1, 7), "syntax"),
    ("a: 1\nb: 2\na: 3\n", "p.yaml", (3, 1), "duplicate-key"),
    ("- a\n- b\n", "p.yaml", (1, 1), "document"),
    ("a: !!binary aGk=\n", "p.yaml", (1, 4), "syntax"),
])
def test_errors_are_located(text, name, where, rule):
    with pytest.raises(ProcedureError) as info:
        parse_document(text, name)
    (problem,) = info.value.problems
    assert ((problem.line, problem.column), problem.rule) == (where, rule)
    assert problem.format().startswith(f"{name}:{where[0]}:{where[1]}: -: ")


def test_alias_bomb_is_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 7)]
    with pytest.raises(ProcedureError, match="too large"):
        parse_document("\n".join(lines), "bomb.yaml")


def test_deeply_nested_documents_are_a_located_problem_not_a_crash():
    import pytest

    from procedures.errors import ProcedureError
    from procedures.loader import load_procedure

    for text in ("procedure: abc\nsteps: [{id: a, type: set, set: {x: " + "[" * 3000 + "]" * 3000 + "}}]\n",
                 '{"procedure": "abc", "steps": ' + "[" * 100000 + "]" * 100000 + "}",
                 "procedure: abc\nsteps: [{id: a, type: set, set: {x: " + "[" * 70 + "]" * 70 + "}}]\n"):
        with pytest.raises(ProcedureError) as info:
            load_procedure(text)
        assert any("nested too deeply" in p.message for p in info.value.problems)


def test_non_text_step_type_is_reported_not_crashing():
    import pytest

    from procedures.errors import ProcedureError
    from procedures.loader import load_procedure

    with pytest.raises(ProcedureError) as info:
        load_procedure("procedure: abc\nsteps: [{id: a, type: [message]}]\n")
    assert [p.rule for p in info.value.problems] == ["unknown-type"]


@pytest.mark.parametrize("text,name,where,char", [
    ("procedure: abc\nsteps:\n  - {id: a, type: message, text: \"hi\x00\"}\n", "p.yaml", (3, 37), "#x0000"),
    ("a: 1\nb: x\x1b\n", "p.yaml", (2, 5), "#x001b"),
    ('{"procedure": "abc",\n "steps": ["\x7f"]}', "p.json", (2, 13), "#x007f"),
    ("\x85\x00", "p.yaml", (1, 2), "#x0000"),
])
def test_characters_yaml_refuses_are_one_line_at_their_position(text, name, where, char):
    with pytest.raises(ProcedureError) as info:
        parse_document(text, name)
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == where, problem.format()
    line = problem.format()
    assert "\n" not in line and char in line and "remove it" in line
    assert line.startswith(f"{name}:{where[0]}:{where[1]}: -: invalid ")


def test_numbers_too_long_for_python_are_located():
    for text, name in (('{"procedure": "abc", "n": ' + "1" * 5000 + "}", "p.json"), ("n: " + "1" * 5000, "p.yaml")):
        with pytest.raises(ProcedureError) as info:
            parse_document(text, name)
        (problem,) = info.value.problems
        assert problem.rule == "syntax" and "quote it" in problem.message and len(problem.format()) < 200


def test_problem_lines_escape_control_characters():
    from procedures.errors import Problem

    line = Problem("f.yaml", 1, 2, "a\nb", "key 'x\ny' \u2028", "r").format()
    assert line == "f.yaml:1:2: a\\nb: key 'x\\ny' \\u2028"

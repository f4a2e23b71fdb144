"""Evaluation is bounded (spec §2): arithmetic results, function results, and the size of every
value an expression or template produces; any failure is the `expression` error."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from procedures.expressions import (
    MAX_NUMBER_BITS, MAX_STRING_LENGTH, MAX_VALUE_BYTES, ExpressionError, evaluate, json_size, render,
)

NOW = datetime(2024, 5, 1, tzinfo=timezone.utc)
BIG = "x" * MAX_STRING_LENGTH  # the longest text one operation may give (100,000 characters)


def ev(expr, scope=None):
    return evaluate(expr, scope or {}, now=lambda: NOW)


@pytest.mark.parametrize("expr,reason", [
    ('"%.999999999f" % 1.0', "`%` on text"),  # would build a 1e9-character string
    ('"%s and %s" % ("a", "b")', "write a template instead"),
    ("2 ** 4095 * 2", f"larger than {MAX_NUMBER_BITS} bits"),
    ("2 ** 4095 + 2 ** 4095", "bits"),
    ("-(2 ** 4096 - 1) - 2 ** 4096", "bits"),
    ("2 ** 4095 * 2 // 1", "bits"),
    ("int('9' * 1300)", "bits"),
    ("round(5, -10 ** 9)", "from -100 to 100"),  # computed 10**(10**9): ran for hours
    ("round(5, 'x')", "whole number of digits"),
    ("float(10 ** 400)", "OverflowError"),
    ("now() + duration('365d') * 30000", "OverflowError"),
    ("duration('366d')", "longer than 365d"),
    ("1" + " + 1" * 100, "nested too deeply"),
    ("9" * 1300, "number literal larger"),
    ("[1] * 100001", "long"),
    ("'ab' * 50001", "long"),
])
def test_unbounded_operations_are_expression_errors(expr, reason):
    started = time.monotonic()
    with pytest.raises(ExpressionError) as info:
        ev(expr)
    assert reason in info.value.reason, info.value.reason
    assert time.monotonic() - started < 2


def test_bounded_operations_still_work():
    assert ev("7 % 4") == 3 and ev("7.5 % 2") == 1.5
    assert ev("2 ** 4095 + 1 > 2 ** 4094")
    assert ev("round(123456, -3)") == 123000 and ev("round(2.345, 2)") == 2.35
    assert len(ev("v + 'y'", {"v": "x" * 99_999})) == MAX_STRING_LENGTH


def test_squaring_in_a_loop_stops_at_the_number_bound():
    scope = {"x": 3}
    for step in range(40):
        try:
            scope = {"x": ev("x * x", scope)}
        except ExpressionError as err:
            assert "bits" in err.reason
            break
    else:
        pytest.fail("x * x grew without bound")
    assert scope["x"].bit_length() <= MAX_NUMBER_BITS and step < 15


def test_nested_lists_in_a_set_loop_stop_at_the_value_bound():
    """`set: {v: "{{ [v, v] }}"}` in a loop doubles the value each step (14.7 MB after 21 steps)."""
    scope = {"v": [1]}
    for step in range(40):
        try:
            scope = {"v": render("{{ [v, v] }}", scope, now=lambda: NOW)}
        except ExpressionError as err:
            assert "larger than 256 KiB" in err.reason
            break
    else:
        pytest.fail("[v, v] grew without bound")
    assert json_size(scope["v"]) <= MAX_VALUE_BYTES and step < 20


@pytest.mark.parametrize("template", ["{{ [v, v, v] }}", "{{ {'a': v, 'b': v, 'c': v} }}", "{{ [v] * 1000 }}"])
def test_a_single_template_result_is_size_checked(template):
    with pytest.raises(ExpressionError, match="larger than 256 KiB"):
        render(template, {"v": BIG}, now=lambda: NOW)


def test_text_of_a_huge_value_is_refused_before_it_is_built():
    many = {"v": [[BIG] * 1000]}  # 100 MB as JSON, a few pointers in memory
    for expr in ("str(v)", "lower(v)", "upper(v)"):
        started = time.monotonic()
        with pytest.raises(ExpressionError, match="larger than 256 KiB"):
            ev(expr, many)
        assert time.monotonic() - started < 1
    with pytest.raises(ExpressionError, match="larger than 256 KiB"):
        render("all: {{ v }}", many, now=lambda: NOW)


def test_mixed_templates_and_whole_structures_are_bounded():
    with pytest.raises(ExpressionError, match="longer than 100000 characters"):
        render("a {{ v }} b {{ v }}", {"v": BIG}, now=lambda: NOW)
    with pytest.raises(ExpressionError, match="larger than 256 KiB"):  # each value fits, the whole does not
        render({"a": "{{ v }}", "b": "{{ v }}", "c": ["{{ v }}"]}, {"v": BIG}, now=lambda: NOW)
    assert render({"a": "{{ v }}"}, {"v": BIG}, now=lambda: NOW) == {"a": BIG}


@pytest.mark.parametrize("expr", ["{[1]: 2}", "min()", "max([])", "'a' < 1", "len(5)", "x.y.z[3]",
                                  "{'a': 1}['a'][0]", "a\u0000b", "(" * 300 + "1" + ")" * 300])
def test_any_failure_is_an_expression_error(expr):
    with pytest.raises(ExpressionError):
        ev(expr, {"x": {"y": {"z": [1]}}})


def test_json_size_counts_shared_values_without_building_them():
    shared = ["x" * 1000] * 1000
    started = time.monotonic()
    assert json_size([shared] * 1000) > MAX_VALUE_BYTES
    assert time.monotonic() - started < 0.5
    assert 10 <= json_size({"a": [1, "bc", None]}) <= 40

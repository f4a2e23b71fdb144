"""Expressions and templates (spec §2)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from procedures.expressions import (
    ExpressionError, evaluate, is_single_template, names_used, parse_check, render,
    secret_refs, template_expressions, to_json_value,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
SCOPE = {"order": {"total": 150, "currency": "USD", "items": [{"sku": "a"}, {"sku": "b"}]},
         "inputs": {"email": "Ann@Example.com", "note": None}, "flag": True, "empty": ""}


def ev(expr):
    return evaluate(expr, SCOPE, now=lambda: NOW)


@pytest.mark.parametrize("expr,expected", [
    ("order.total * 2 - 10 / 5 + 7 // 2 + 7 % 4", 304.0),
    ("2 ** 10", 1024),
    ("order.total > 100 and order.currency == 'USD'", True),
    ("order.total <= 100 or not flag", False),
    ("'USD' in [order.currency, 'EUR']", True),
    ("'x' not in 'abc'", True),
    ("'big' if order.total > 100 else 'small'", "big"),
    ("[1, 'a', None, True]", [1, "a", None, True]),
    ("{'k': order.total}", {"k": 150}),
    ("order.items[1].sku", "b"),
    ("order['currency']", "USD"),
    ("order.missing", None),
    ("order.missing.deeper", None),
    ("len(order.items)", 2),
    ("str(order.total)", "150"),
    ("int('42')", 42),
    ("float('1.5')", 1.5),
    ("round(2.345, 2)", 2.35),
    ("abs(-3)", 3),
    ("min(3, 1, 2)", 1),
    ("max([3, 9])", 9),
    ("lower(inputs.email)", "ann@example.com"),
    ("upper('ab')", "AB"),
    ("contains(order.items, {'sku': 'a'})", True),
    ("default(inputs.note, 'none')", "none"),
    ("default(empty, 'x')", "x"),
    ("default(order.total, 0)", 150),
    ("now()", NOW),
    ("now() + duration('48h')", NOW + timedelta(hours=48)),
    ("duration('500ms')", timedelta(milliseconds=500)),
])
def test_evaluate(expr, expected):
    assert ev(expr) == expected


@pytest.mark.parametrize("expr,reason", [
    ("rand()", "unknown function 'rand'"),
    ("randint(3)", "unknown function"),
    ("__import__('os')", "unknown function '__import__'"),
    ("order.__class__", "attribute '__class__'"),
    ("order._private", "attribute '_private'"),
    ('"a".upper()', "not methods"),
    ("[x for x in order.items]", "comprehensions"),
    ("{k: 1 for k in 'ab'}", "comprehensions"),
    ("9**9**9", "too large"),
    ('"a"*10**9', "long"),
    ("nope + 1", "unknown name 'nope'"),
    ("len", "unknown name 'len'"),
    ("lambda: 1", "Lambda"),
    ("x = 1", "does not parse"),
    ("1 +", "does not parse"),
    ("1 / 0", "ZeroDivisionError"),
    ("order.total.real", "cannot read .real"),
    ("'x' * 10 + " * 300 + "'y'", "longer than 2000"),
])
def test_rejections(expr, reason):
    with pytest.raises(ExpressionError) as info:
        ev(expr)
    assert reason in info.value.reason
    assert info.value.expression[:20] == expr.strip()[:20]
    assert "expression" in str(info.value)


def test_parse_check_and_names_used():
    parse_check("len(order.items) > 1")
    with pytest.raises(ExpressionError):
        parse_check("[i for i in x]")
    assert names_used("len(order.items) > limit and inputs['a'] and min(1, 2)") == {"order", "limit", "inputs"}


def test_templates_keep_type_when_single():
    assert render("{{ order.items }}", SCOPE, now=lambda: NOW) == SCOPE["order"]["items"]
    assert render("  {{ order.total }} ", SCOPE, now=lambda: NOW) == 150
    assert render({"a": ["{{ flag }}", 3]}, SCOPE, now=lambda: NOW) == {"a": [True, 3]}
    assert is_single_template("{{ a }}") and not is_single_template("{{ a }} {{ b }}")


def test_templates_render_text():
    text = "Total {{ order.total }} {{ inputs.note }}|{{ flag }}|{{ order.items[0] }}|{{ now() }}"
    assert render(text, SCOPE, now=lambda: NOW) == \
        'Total 150 |true|{"sku": "a"}|2024-05-01T12:00:00+00:00'
    assert render("plain {text}", SCOPE, now=lambda: NOW) == "plain {text}"
    assert template_expressions("a {{ x }} b {{y.z}}") == ["x", "y.z"]


def test_single_pass_does_not_re_render_inserted_values():
    scope = {"v": "{{ secrets.x }}"}
    assert render("{{ v }}", scope, now=lambda: NOW) == "{{ secrets.x }}"
    assert render("got {{ v }}", scope, now=lambda: NOW) == "got {{ secrets.x }}"


def test_template_error_names_the_expression():
    with pytest.raises(ExpressionError) as info:
        render("Hi {{ who.name }}", SCOPE, now=lambda: NOW)
    assert info.value.expression == "who.name"


def test_secret_refs_and_json_values():
    assert secret_refs({"h": ["Bearer {{ secrets.tok }}"], "q": "{{ secrets['b'] }}", "n": 1}) == {"tok", "b"}
    assert to_json_value({"t": NOW, "d": [timedelta(minutes=1)]}) == \
        {"t": "2024-05-01T12:00:00+00:00", "d": [60.0]}


def test_numeric_strings_compare_as_numbers_against_numbers():
    """APIs send money as strings ("150.00"); `order.total > 100` must compare numerically."""
    from datetime import datetime, timezone

    from procedures.errors import ExpressionError
    from procedures.expressions import evaluate

    def now():
        return datetime(2026, 1, 1, tzinfo=timezone.utc)

    scope = {"order": {"total": "150.00", "small": "99.5"}}
    assert evaluate("order.total > 100", scope, now=now) is True
    assert evaluate("order.small >= 100", scope, now=now) is False
    assert evaluate("100 < order.total", scope, now=now) is True
    assert evaluate('"b" > "a"', scope, now=now) is True  # two strings still compare as text
    import pytest
    with pytest.raises(ExpressionError):
        evaluate('"abc" > 1', scope, now=now)

"""Safe expressions and ``{{ }}`` templates (spec §2), evaluated with simpleeval.

Only the node types in ``_ALLOWED_NODES`` and the functions in ``FUNCTIONS`` are accepted;
names come only from the run scope. Evaluation is bounded (spec §2): every arithmetic result
(integers by bit length, text and lists by length), every call of a function that could build a
huge value, and the size of whatever an expression or template produces (``MAX_VALUE_BYTES`` of
JSON), so no run variable and no activity input can become huge. Any failure while evaluating is
an ExpressionError, never another exception: expressions run inside workflow code.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import re
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Callable, Mapping

import simpleeval

from procedures.durations import parse_duration
from procedures.errors import ExpressionError, ProcedureError

__all__ = [
    "ExpressionError", "FUNCTIONS", "evaluate", "render", "names_used", "template_expressions",
    "is_single_template", "parse_check", "to_json_value", "secret_refs", "render_text", "json_size",
    "MAX_VALUE_BYTES", "bare_secrets",
]

MAX_EXPRESSION_LENGTH = 2000
MAX_STRING_LENGTH = 100_000  # characters of a text, items of a list
MAX_NUMBER_BITS = 4096  # bit length of an integer result (about 1,233 decimal digits)
MAX_POWER_BITS = MAX_NUMBER_BITS
MAX_VALUE_BYTES = 256 * 1024  # JSON size of a value an expression or template produces
MAX_DEPTH = 64  # nesting of an expression's syntax tree
MAX_ROUND_DIGITS = 100  # round(x, n): |n| at most this (round(5, -10**9) would run for hours)
FUNCTIONS = frozenset(
    {"len", "str", "int", "float", "round", "abs", "min", "max", "lower", "upper",
     "contains", "default", "now", "duration"}
)
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SINGLE = re.compile(r"\s*\{\{((?:(?!\}\}).)*)\}\}\s*", re.DOTALL)
_SAFE_ATTRS: dict[type, frozenset[str]] = {
    datetime: frozenset({"year", "month", "day", "hour", "minute", "second"}),
    date: frozenset({"year", "month", "day"}),
    timedelta: frozenset({"days", "seconds"}),
}
_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Compare,
    ast.Call, ast.Constant, ast.Attribute, ast.Subscript, ast.Slice, ast.Name, ast.Load,
    ast.List, ast.Tuple, ast.Dict,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.Not, ast.USub, ast.UAdd,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
)


# --- parsing and static checks ------------------------------------------------------------

@lru_cache(maxsize=4096)
def _parse(expr: str) -> ast.expr:
    if not isinstance(expr, str):
        raise ExpressionError(repr(expr), "an expression must be text")
    if len(expr) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(expr[:80] + "...", f"longer than {MAX_EXPRESSION_LENGTH} characters")
    text = expr.strip()
    if not text:
        raise ExpressionError(expr, "empty expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(expr, f"does not parse ({exc.msg})") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        raise ExpressionError(expr, f"does not parse ({exc})") from None
    for node in ast.walk(tree):
        _check_node(expr, node)
    _check_depth(expr, tree)
    return tree.body


def _check_depth(expr: str, tree: ast.AST) -> None:
    """Refuse deep syntax trees (``1+1+1...``): evaluation recurses once per level."""
    todo = [(tree, 0)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(expr, f"nested too deeply (more than {MAX_DEPTH} levels); "
                                        "split it over several `set` values")
        todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check_node(expr: str, node: ast.AST) -> None:
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        raise ExpressionError(expr, "comprehensions are not allowed")
    if not isinstance(node, _ALLOWED_NODES):
        raise ExpressionError(expr, f"{type(node).__name__} is not allowed in expressions")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ExpressionError(expr, "only the built-in functions can be called, not methods")
        if node.func.id not in FUNCTIONS:
            raise ExpressionError(
                expr, f"unknown function {node.func.id!r}; allowed: {', '.join(sorted(FUNCTIONS))}"
            )
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(expr, "functions take plain positional arguments only")
    elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        raise ExpressionError(expr, f"attribute {node.attr!r} is not allowed (names starting with '_')")
    elif isinstance(node, ast.Dict) and any(k is None for k in node.keys):
        raise ExpressionError(expr, "'**' unpacking is not allowed")
    elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        if isinstance(node.value, bytes):
            raise ExpressionError(expr, "bytes literals are not allowed")
        if len(node.value) > MAX_STRING_LENGTH:
            raise ExpressionError(expr, "string literal too long")
    elif isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        if node.value.bit_length() > MAX_NUMBER_BITS:
            raise ExpressionError(expr, f"number literal larger than {MAX_NUMBER_BITS} bits")


def parse_check(expr: str) -> None:
    """Raise ExpressionError if ``expr`` does not parse or uses a forbidden construct."""
    _parse(expr)


def names_used(expr: str) -> set[str]:
    """Root variable names an expression reads (function names excluded)."""
    body = _parse(expr)
    called = {id(n.func) for n in ast.walk(body) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(body) if isinstance(n, ast.Name) and id(n) not in called}


def template_expressions(text: str) -> list[str]:
    """The expressions inside the ``{{ }}`` parts of a template string, in order."""
    return [m.group(1).strip() for m in _TEMPLATE.finditer(text)]


def is_single_template(text: str) -> bool:
    """True when ``text`` is exactly one ``{{ expression }}`` (surrounding spaces allowed)."""
    return isinstance(text, str) and _SINGLE.fullmatch(text) is not None


def secret_refs(value: Any) -> set[str]:
    """Names ``NAME`` used as ``secrets.NAME`` in the templates anywhere within ``value``."""
    found: set[str] = set()
    for text in _strings(value):
        for expr in template_expressions(text):
            try:
                body = _parse(expr)
            except ExpressionError:
                continue
            for node in ast.walk(body):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "secrets"):
                    found.add(node.attr)
                elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                        and node.value.id == "secrets" and isinstance(node.slice, ast.Constant)):
                    found.add(str(node.slice.value))
    return found


def bare_secrets(expr: str) -> bool:
    """True when ``expr`` reads ``secrets`` other than as ``secrets.NAME`` / ``secrets["NAME"]``
    (``{{ secrets }}`` would put every secret of the call into one value)."""
    body = _parse(expr)
    named = {id(n.value) for n in ast.walk(body)
             if (isinstance(n, ast.Attribute) or (isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant)))
             and isinstance(n.value, ast.Name) and n.value.id == "secrets"}
    return any(isinstance(n, ast.Name) and n.id == "secrets" and id(n) not in named for n in ast.walk(body))


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


# --- evaluation -----------------------------------------------------------------------------

def _safe_power(a: Any, b: Any) -> Any:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a) > 1 and b > 0:
        if b * math.log2(abs(a)) > MAX_NUMBER_BITS:
            raise simpleeval.NumberTooHigh(f"{_short(a)} ** {_short(b)} is too large")
    return _limited(a ** b)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 256 else "<a huge number>"
    return text if len(text) <= 40 else text[:37] + "..."


def _limited(value: Any) -> Any:
    """``value`` when within the bounds of one operation's result, else a simpleeval error."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_NUMBER_BITS:
        raise simpleeval.NumberTooHigh(f"number larger than {MAX_NUMBER_BITS} bits")
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_STRING_LENGTH:
        raise simpleeval.IterableTooLong(f"result longer than {MAX_STRING_LENGTH:,} characters or items")
    return value


def _arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """An arithmetic operator whose result is bounded (see ``_limited``)."""
    return lambda a, b: _limited(op(a, b))


def _safe_mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):  # printf-style formatting ("%.999999999f" % 1.0) builds unbounded text
        raise simpleeval.FeatureNotAvailable(
            "`%` on text (printf-style formatting) is not allowed; write a template instead, "
            "e.g. \"Total: {{ round(order.total, 2) }}\"")
    return _limited(a % b)


def _bounded_text(value: Any) -> str:
    """``to_text(value)``, refusing values whose text would exceed the limits before building it."""
    if isinstance(value, (dict, list, tuple)) and json_size(value) > MAX_VALUE_BYTES:
        raise simpleeval.IterableTooLong(f"value larger than {MAX_VALUE_BYTES // 1024} KiB as text")
    return _limited(to_text(value))


def _round(value: Any, digits: Any = None) -> Any:
    if digits is None:
        return round(value)
    if isinstance(digits, bool) or not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(f"round() takes a whole number of digits from -{MAX_ROUND_DIGITS} "
                         f"to {MAX_ROUND_DIGITS}, got {_short(digits)}")
    return round(value, digits)


def _int(*args: Any) -> int:
    return _limited(int(*args))


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None or value == "" else value


def _functions(now: Callable[[], datetime]) -> dict[str, Callable[..., Any]]:
    return {
        "len": len, "str": _bounded_text, "int": _int, "float": float, "round": _round, "abs": abs,
        "min": min, "max": max,
        "lower": lambda s: _bounded_text(s).lower(), "upper": lambda s: _bounded_text(s).upper(),
        "contains": lambda container, item: container is not None and item in container,
        "default": _default, "now": lambda: now(), "duration": parse_duration,
    }


def _numeric(value: Any) -> Any:
    """A numeric string ("150.00", as APIs send money amounts) as a number; anything else as is."""
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else value
        except ValueError:
            return value
    return value


def _ordering(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """An ordering comparison where a number and a numeric string compare as numbers."""
    def compare(a: Any, b: Any) -> bool:
        a_num = isinstance(a, (int, float)) and not isinstance(a, bool)
        b_num = isinstance(b, (int, float)) and not isinstance(b, bool)
        if a_num != b_num:
            a, b = _numeric(a), _numeric(b)
        return op(a, b)
    return compare


_OPERATORS = {
    **simpleeval.DEFAULT_OPERATORS,
    ast.Gt: _ordering(operator.gt),
    ast.GtE: _ordering(operator.ge),
    ast.Lt: _ordering(operator.lt),
    ast.LtE: _ordering(operator.le),
    ast.Pow: _safe_power,
    ast.Add: _arith(simpleeval.safe_add),
    ast.Sub: _arith(operator.sub),
    ast.Mult: _arith(simpleeval.safe_mult),
    ast.FloorDiv: _arith(operator.floordiv),
    ast.Mod: _safe_mod,
}


class _Evaluator(simpleeval.EvalWithCompoundTypes):
    """simpleeval with scope-only names, dict-key attributes and no comprehensions."""

    def __init__(self, scope: Mapping[str, Any], now: Callable[[], datetime]) -> None:
        super().__init__(operators=_OPERATORS, functions=_functions(now), names={})
        self.functions = _functions(now)  # drop list/tuple/dict/set added by the base class
        self.scope = scope
        for node_type in (ast.ListComp, ast.GeneratorExp, ast.DictComp):
            self.nodes.pop(node_type, None)

    def _eval_name(self, node: ast.Name) -> Any:
        if node.id in self.scope:
            return self.scope[node.id]
        raise simpleeval.NameNotDefined(node.id, self.expr)

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        base = self._eval(node.value)
        if base is None:
            return None
        if isinstance(base, Mapping):
            return base.get(node.attr)
        if node.attr in _SAFE_ATTRS.get(type(base), ()):
            return getattr(base, node.attr)
        raise simpleeval.FeatureNotAvailable(
            f"cannot read .{node.attr} of a {type(base).__name__} value"
        )

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(container, Mapping):
            return container.get(key)
        if container is None:
            return None
        return container[key]


def evaluate(expr: str, scope: Mapping[str, Any], *, now: Callable[[], datetime]) -> Any:
    """Evaluate a bare expression against ``scope``; raise ExpressionError on any failure.

    The result is at most ``MAX_VALUE_BYTES`` of JSON, whatever it is built from.
    """
    body = _parse(expr)
    try:
        result = _Evaluator(scope, now).eval(expr, previously_parsed=body)
    except ExpressionError:
        raise
    except simpleeval.NameNotDefined as exc:
        raise ExpressionError(expr, f"unknown name {exc.name!r}") from None
    except ProcedureError as exc:
        raise ExpressionError(expr, exc.message) from None
    except simpleeval.InvalidExpression as exc:  # a refused construct or a bound: says why itself
        raise ExpressionError(expr, str(exc)) from None
    except (ArithmeticError, TypeError, ValueError, KeyError,
            IndexError, AttributeError, RecursionError, MemoryError) as exc:
        # ArithmeticError includes OverflowError (float(10**400), now() + a huge duration).
        raise ExpressionError(expr, f"{type(exc).__name__}: {exc}") from None
    _check_size(expr, result)
    return result


def _check_size(expr: str, value: Any) -> None:
    if json_size(value) > MAX_VALUE_BYTES:
        raise ExpressionError(expr[:80], f"the result is larger than {MAX_VALUE_BYTES // 1024} KiB "
                                         "(as JSON); keep only the fields you need")


def render(value: Any, scope: Mapping[str, Any], *, now: Callable[[], datetime]) -> Any:
    """Render every template string within ``value`` (dict values and list items, recursively).

    The whole result is at most ``MAX_VALUE_BYTES`` of JSON (it becomes a variable or an
    activity's input, which must stay well under Temporal's payload limit).
    """
    result = _render(value, scope, now)
    if isinstance(value, (Mapping, list, tuple)):
        _check_size(_first_template(value) or "(template)", result)
    return result


def _render(value: Any, scope: Mapping[str, Any], now: Callable[[], datetime]) -> Any:
    if isinstance(value, str):
        return render_text(value, scope, now=now)
    if isinstance(value, Mapping):
        return {k: _render(v, scope, now) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render(v, scope, now) for v in value]
    return value


def _first_template(value: Any) -> str | None:
    return next((text for text in _strings(value) if "{{" in text), None)


def render_text(text: str, scope: Mapping[str, Any], *, now: Callable[[], datetime]) -> Any:
    """Render one template string: a single ``{{ }}`` keeps its type, otherwise text (one pass)."""
    single = _SINGLE.fullmatch(text)
    if single:
        return evaluate(single.group(1).strip(), scope, now=now)  # size-checked there
    if "{{" not in text:
        return text
    parts: list[str] = []
    size = 0
    last = 0
    for match in _TEMPLATE.finditer(text):
        expr = match.group(1).strip()
        value = evaluate(expr, scope, now=now)
        try:
            part = _bounded_text(value)
        except simpleeval.InvalidExpression as exc:
            raise ExpressionError(expr, str(exc)) from None
        parts += [text[last:match.start()], part]
        last = match.end()
        size += len(parts[-2]) + len(part)
        if size > MAX_STRING_LENGTH:
            raise ExpressionError(text[:80], f"rendered text longer than {MAX_STRING_LENGTH} characters")
    parts.append(text[last:])
    rendered = "".join(parts)
    if len(rendered) > MAX_STRING_LENGTH:
        raise ExpressionError(text[:80], f"rendered text longer than {MAX_STRING_LENGTH} characters")
    return rendered


def json_size(value: Any, limit: int = MAX_VALUE_BYTES) -> int:
    """About how many characters ``value`` takes as JSON; stops counting once past ``limit``.

    It walks the value instead of serialising it, so a list holding one large object many
    times (which costs nothing in memory) is measured without building its huge text.
    """
    total = 0
    todo = [value]
    while todo and total <= limit:
        item = todo.pop()
        if item is None or isinstance(item, bool):
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2  # decimal digits, rounded up, and a sign
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, str):
            total += len(item) + 3
        elif isinstance(item, Mapping):
            total += 2 + len(item)
            for key, inner in item.items():
                total += len(str(key)) + 4
                todo.append(inner)
                if total > limit:
                    break
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + len(item)
            if total <= limit:
                todo.extend(item)
        else:  # datetime, date, timedelta: short ISO text or seconds
            total += 34
    return total


def to_text(value: Any) -> str:
    """Text form of a value inside a template: None -> "", booleans lowercase, JSON for objects."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple, timedelta)):
        return json.dumps(to_json_value(value), ensure_ascii=False, default=str)
    return str(value)


def to_json_value(value: Any) -> Any:
    """Recursively convert datetimes to ISO-8601 text and timedeltas to seconds."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_value(v) for v in value]
    return value

"""Regular expressions authors write (an `ask`'s `pattern`, `pattern`/`patternProperties` in
JSON Schemas) are matched against customer text, inside the workflow or the API. Python's `re`
backtracks, has no time limit, and a nested repetition such as `(a+)+$` or `(\\w*)*x` takes
exponential time on a short hostile answer ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"): one answer
would stall a workflow task. `regex_problem` refuses nested unbounded repetition (the classic
catastrophic pattern); `MAX_MATCHED` bounds the text a pattern is matched against. Pure.
"""
from __future__ import annotations

import re
from typing import Any

try:  # Python 3.11+: the parser behind re.compile
    from re import _constants as _c  # type: ignore[attr-defined]
    from re import _parser as _p  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older interpreters
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

MAX_PATTERN = 1_000   # characters of one pattern
MAX_MATCHED = 1_000   # characters of an answer matched against a pattern (longer: no match)
_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT} | ({_c.POSSESSIVE_REPEAT} if hasattr(_c, "POSSESSIVE_REPEAT") else set())
_HINT = ("a repetition inside a repetition (like `(a+)+` or `(\\w*)*`) can take exponential time "
         "on a hostile answer; repeat the inner part once, e.g. `(a+)` -> `a+`, `(\\w+\\s?)+` -> `[\\w\\s]+`")


def regex_problem(pattern: str) -> tuple[str, str] | None:
    """(rule, message) when `pattern` may not be used, or None: "bad-pattern" when it is not a
    usable regular expression (not text, too long, does not compile), "slow-pattern" when it
    nests repetitions."""
    if not isinstance(pattern, str):
        return "bad-pattern", f"a regular expression must be text, not {type(pattern).__name__}"
    if len(pattern) > MAX_PATTERN:
        return "bad-pattern", f"a regular expression is at most {MAX_PATTERN:,} characters"
    try:
        parsed = _p.parse(pattern)
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        return "bad-pattern", f"not a valid regular expression ({exc})"
    if _nested_repeat(parsed, inside=False):
        return "slow-pattern", _HINT
    return None


def _nested_repeat(items: Any, inside: bool) -> bool:
    """Whether a repetition that can repeat more than once holds another such repetition."""
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            many = high is _c.MAXREPEAT or high > 1
            if many and inside:
                return True
            if _nested_repeat(body, inside or (many and high is _c.MAXREPEAT)):
                return True
        elif op is _c.SUBPATTERN:
            if _nested_repeat(av[-1], inside):
                return True
        elif op is _c.BRANCH:
            if any(_nested_repeat(branch, inside) for branch in av[1]):
                return True
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            if _nested_repeat(av[1], inside):
                return True
    return False


def schema_pattern_problems(schema: Any, path: tuple = ()) -> list[tuple[tuple, str, str, str]]:
    """(path, pattern, rule, message) of every unusable `pattern` / `patternProperties` key in a
    JSON Schema (path: of the pattern's value, or of the patternProperties entry)."""
    found: list[tuple[tuple, str, str, str]] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                problem = regex_problem(value)
                if problem:
                    found.append(((*path, key), value, *problem))
            elif key == "patternProperties" and isinstance(value, dict):
                for regex in value:
                    problem = regex_problem(regex)
                    if problem:
                        found.append(((*path, key, regex), regex, *problem))
            if isinstance(value, (dict, list)):
                found.extend(schema_pattern_problems(value, (*path, key)))
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found.extend(schema_pattern_problems(value, (*path, i)))
    return found

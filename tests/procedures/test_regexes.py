"""Author-written regular expressions that backtrack exponentially are refused (procedures.regexes)."""
import pytest

from procedures.regexes import MAX_PATTERN, regex_problem, schema_pattern_problems

SLOW = [r"(a+)+$", r"(\w*)*x", r"^(\d+\s?)+$", r"(x+x+)+y", r"((ab)*)+c", r"(?:[a-z]+\.)+com", r"(?=(a+)+)b",
        r"(a|b+)*c", r"(.*)*"]
SAFE = [r"^#?[0-9]{4,}$", r"^[A-Z]{2}-[0-9]{4}$", r"(?:ab|cd){2,5}x*", r"(a{1,3}){2}", r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        r"(ab)+", r"(a?b)+", r"\d+(\.\d+)?"]


@pytest.mark.parametrize("pattern", SLOW)
def test_nested_repetition_is_refused_with_a_hint(pattern):
    rule, message = regex_problem(pattern)
    assert rule == "slow-pattern" and "exponential time" in message and "repeat the inner part once" in message


@pytest.mark.parametrize("pattern", SAFE)
def test_ordinary_patterns_pass(pattern):
    assert regex_problem(pattern) is None


def test_broken_or_oversized_patterns_are_bad_patterns():
    assert regex_problem("([a-z")[0] == "bad-pattern"
    assert regex_problem("a" * (MAX_PATTERN + 1))[0] == "bad-pattern"
    assert regex_problem(5)[0] == "bad-pattern"


def test_schema_patterns_are_found_at_any_depth():
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"},
                                               "ok": {"type": "string", "pattern": "^[0-9]{4}$"}},
              "patternProperties": {"(x*)*": {}}, "items": [{"pattern": "(b+)*"}]}
    found = {(path, pattern, rule) for path, pattern, rule, _ in schema_pattern_problems(schema)}
    assert found == {(("properties", "code", "pattern"), "^(a+)+$", "slow-pattern"),
                     (("patternProperties", "(x*)*"), "(x*)*", "slow-pattern"),
                     (("items", 0, "pattern"), "(b+)*", "slow-pattern")}

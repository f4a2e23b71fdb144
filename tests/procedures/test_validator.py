"""One test per validation rule of spec §7: exactly that rule, located, with a hint."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CATALOG, check
from procedures.loader import load_procedure

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

HEAD = """\
procedure: demo-proc
secrets: [tok]
steps:
"""


def only(problems, rule):
    assert problems, "expected a problem"
    assert {p.rule for p in problems} == {rule}, [p.format() for p in problems]
    return problems[0]


@pytest.mark.parametrize("name", ["every-step.yaml", "refund.yaml"])
def test_examples_are_valid(name):
    text = (EXAMPLES / name).read_text()
    assert check(text, name) == []
    load_procedure(text, name, CATALOG)


def test_every_step_example_uses_every_type():
    from procedures.models import STEP_TYPES
    definition = load_procedure((EXAMPLES / "every-step.yaml").read_text(), "every-step.yaml", CATALOG)
    seen = set()

    def walk(steps):
        for step in steps:
            seen.add(step["type"])
            for branch in step.get("branches", {}).values():
                walk(branch)
            walk(step.get("steps", []))
    walk(definition["steps"])
    assert seen == set(STEP_TYPES)


CASES = [
    # rule, document body after HEAD, (line, column), step id, hint fragment
    ("unknown-field", "  - id: a\n    type: message\n    txt: hi\n", (6, 5), "a", "did you mean 'text'"),
    ("unknown-type", "  - id: a\n    type: mesage\n    text: hi\n", (5, 11), "a", "did you mean 'message'"),
    ("bad-id", "  - id: Step-A\n    type: succeed\n", (4, 9), "Step-A", "e.g. 'step_a'"),
    ("duplicate-id", "  - id: a\n    type: message\n    text: x\n  - id: a\n    type: succeed\n",
     (7, 9), "a", "first used at line 4"),
    ("unknown-target", "  - id: a\n    type: message\n    text: x\n    next: bb\n  - id: b\n    type: succeed\n",
     (7, 11), "a", "did you mean 'b'"),
    ("unreachable", "  - id: a\n    type: succeed\n  - id: b\n    type: succeed\n", (6, 5), "b", "point a `next`"),
    ("no-finish", "  - id: a\n    type: message\n    text: x\n    next: b\n  - id: b\n    type: message\n"
     "    text: y\n    next: a\n", (4, 5), "a", "add an exit"),
    ("missing-timeout", "  - id: a\n    type: approval\n    approvers: [m@example.com]\n", (4, 5), "a",
     "add `timeout: 48h`"),
    ("bad-duration", "  - id: a\n    type: wait\n    for: 5 minutes\n", (6, 10), "a", "48h"),
    ("bad-retry", "  - id: a\n    type: message\n    text: x\n    retry: {initial_interval: 1s}\n", (7, 12), "a",
     "max_attempts: 3"),
    ("any-not-last", "  - id: a\n    type: message\n    text: x\n    on_error:\n      - {errors: [any], goto: b}\n"
     "      - {errors: [timeout], goto: b}\n  - id: b\n    type: succeed\n", (8, 18), "a", "last"),
    ("unknown-error", "  - id: a\n    type: message\n    text: x\n    on_error:\n      - {errors: [timout], goto: b}\n"
     "  - id: b\n    type: succeed\n", (8, 19), "a", "did you mean 'timeout'"),
    ("switch-default", "  - id: a\n    type: switch\n    cases: [{when: inputs.x, goto: b}]\n  - id: b\n"
     "    type: succeed\n", (4, 5), "a", "add `default"),
    ("expression-syntax", "  - id: a\n    type: message\n    text: \"{{ 1 + }}\"\n", (6, 11), "a", "does not parse"),
    ("expression-syntax", "  - id: a\n    type: message\n    if: \"'x'.upper()\"\n    text: hi\n", (6, 9), "a", "not methods"),
    ("unknown-name", "  - id: a\n    type: message\n    text: \"{{ ordr.total }}\"\n  - id: b\n    type: set\n"
     "    set: {order: 1}\n", (6, 11), "a", "save_as: ordr"),
    ("bad-jsonpath", "  - id: a\n    type: http\n    url: https://x.example\n    extract: {total: \"$.[[\"}\n",
     (7, 22), "a", "$.orders[0].id"),
    ("unknown-connector", "  - id: a\n    type: lookup\n    connector: shopfy\n    operation: orders.get\n",
     (6, 16), "a", "did you mean 'shopify'"),
    ("unknown-operation", "  - id: a\n    type: lookup\n    connector: shopify\n    operation: order.get\n",
     (7, 16), "a", "did you mean 'orders.get'"),
    ("lookup-not-read-only", "  - id: a\n    type: lookup\n    connector: shopify\n    operation: refunds.create\n",
     (7, 16), "a", "type: action"),
    ("undeclared-secret", "  - id: a\n    type: http\n    url: \"https://x.example/{{ secrets.other }}\"\n",
     (6, 10), "a", "secrets: [other]"),
    ("secret-outside-http", "  - id: a\n    type: message\n    text: \"{{ secrets.tok }}\"\n", (6, 11), "a",
     "http step's url"),
    ("inline-credential", "  - id: a\n    type: http\n    url: https://x.example\n    headers: {X-Api-Key: abc123}\n",
     (7, 26), "a", "secrets.NAME"),
    ("inline-credential", "  - id: a\n    type: http\n    url: https://x.example\n    auth: {type: bearer, token: abc}\n",
     (7, 33), "a", "secret"),
    ("parallel-conflict", "  - id: p\n    type: parallel\n    branches:\n      one:\n        - id: r1\n"
     "          type: action\n          connector: shopify\n          operation: refunds.create\n"
     "          save_as: res\n      two:\n        - id: r2\n          type: set\n          set: {res: 1}\n",
     (8, 11), "r1", "different `save_as`"),
    ("for-each-max-items", "  - id: l\n    type: for_each\n    items: inputs.ids\n    steps:\n      - id: m\n"
     "        type: message\n        text: \"{{ item }}\"\n", (4, 5), "l", "max_items: 100"),
    ("bad-pattern", "  - id: a\n    type: ask\n    text: x?\n    pattern: \"([a-z\"\n    timeout: 1h\n", (7, 14), "a",
     "regular expression"),
    ("slow-pattern", "  - id: a\n    type: ask\n    text: x?\n    pattern: \"^(\\\\w+\\\\s?)+$\"\n    timeout: 1h\n", (7, 14),
     "a", "repeat the inner part once"),
    ("slow-pattern", "  - id: a\n    type: ask\n    text: x?\n    schema: {type: string, pattern: \"(a+)+b\"}\n"
     "    timeout: 1h\n", (7, 37), "a", "exponential time"),
    ("bad-ask-schema", "  - id: a\n    type: ask\n    text: x?\n    schema: {type: numbr}\n    timeout: 1h\n", (7, 20),
     "a", "JSON Schema"),
    ("bad-branch-name", "  - id: p\n    type: parallel\n    branches:\n      one-a:\n        - id: m\n"
     "          type: succeed\n", (7, 7), "p", "identifier"),
    # the generic rules
    ("missing-field", "  - id: a\n    type: message\n", (4, 5), "a", "add `text: ...`"),
    ("missing-field", "  - type: succeed\n", (4, 5), None, "add `id: my_step`"),
    ("missing-field", "  - id: a\n    type: wait\n", (4, 5), "a", "exactly one of `for: 1h`"),
    ("field-type", "  - id: a\n    type: message\n    text: [hi]\n", (6, 11), "a", "quote it"),
    ("field-type", "  - id: a\n    type: call\n    procedure: other-proc\n    version: 0\n", (7, 14), "a",
     "from 1 to 2,147,483,647"),
    ("field-type", "  - id: a\n    type: http\n    method: [GET]\n    url: https://x.example\n", (6, 13), "a",
     "use one of DELETE, GET"),
    ("bad-name", "  - id: a\n    type: message\n    text: x\n    save_as: inputs\n", (7, 14), "a",
     "not inputs, conversation, run or secrets"),
    ("bad-name", "  - id: a\n    type: set\n    set: {run.x: 1}\n", (6, 11), "a", "letters, digits"),
    # every kind of target
    ("unknown-target", "  - id: a\n    type: switch\n    cases: [{when: inputs.x, goto: bb}]\n    default: b\n"
     "  - id: b\n    type: succeed\n", (6, 36), "a", "did you mean 'b'"),
    ("unknown-target", "  - id: a\n    type: switch\n    cases: [{when: inputs.x, goto: b}]\n    default: cc\n"
     "  - id: b\n    type: succeed\n", (7, 14), "a", "steps here: a, b"),
    ("unknown-target", "  - id: a\n    type: message\n    text: x\n    on_error: [{errors: [any], goto: bb}]\n"
     "  - id: b\n    type: succeed\n", (7, 38), "a", "did you mean 'b'"),
    ("unknown-target", "  - id: a\n    type: approval\n    approvers: [m@example.com]\n    timeout: 1h\n"
     "    on_reject: nope\n  - id: b\n    type: succeed\n", (8, 16), "a", "steps here"),
    ("unknown-target", "  - id: a\n    type: ask\n    text: x?\n    timeout: 1h\n    on_timeout: bb\n"
     "  - id: b\n    type: succeed\n", (8, 17), "a", "did you mean 'b'"),
    ("missing-timeout", "  - id: a\n    type: ask\n    text: Which order?\n", (4, 5), "a", "add `timeout: 48h`"),
    ("bad-jsonpath", "  - id: a\n    type: lookup\n    connector: shopify\n    operation: orders.get\n"
     "    assign: {order.total: \"$.orders[\"}\n", (8, 27), "a", "$.orders[0].id"),
    # durations, quorum, end, recursion, credentials, retries
    ("bad-duration", "  - id: a\n    type: wait\n    for: 999999999d\n", (6, 10), "a", "longer than 365d"),
    ("bad-duration", "  - id: a\n    type: approval\n    approvers: [m@example.com]\n    timeout: 400d\n",
     (7, 14), "a", "shorten it"),
    ("bad-duration", "  - id: a\n    type: message\n    text: x\n    retry: {max_attempts: 2, max_interval: 366d}\n",
     (7, 44), "a", "longer than 365d"),
    ("bad-quorum", "  - id: a\n    type: approval\n    approvers: [m@example.com, n@example.com]\n    quorum: 3\n"
     "    timeout: 1h\n    escalate: [{to: [M@example.com], after: 30m}]\n", (7, 13), "a",
     "(2, counting escalation tiers)"),
    ("bad-quorum", "  - id: a\n    type: approval\n    approvers: [m@example.com]\n    quorum: 0\n    timeout: 1h\n",
     (7, 13), "a", "from 1 to the number of approvers"),
    ("end-and-next", "  - id: a\n    type: message\n    text: x\n    end: true\n    next: a\n",
     (8, 11), "a", "remove `next` or `end`"),
    ("end-on-switch", "  - id: a\n    type: switch\n    cases: [{when: inputs.x, goto: b}]\n    default: c\n"
     "    end: true\n  - id: b\n    type: succeed\n  - id: c\n    type: succeed\n", (8, 5), "a", "remove it"),
    ("recursive-call", "  - id: a\n    type: call\n    procedure: demo-proc\n", (6, 16), "a", "step budget"),
    ("inline-credential", "  - id: a\n    type: http\n    url: https://bob:hunter2@x.example/api\n", (6, 10), "a",
     "type: basic"),
    ("inline-credential", "  - id: a\n    type: http\n    url: \"https://x.example/api?q={{ inputs.q }}&api_key=abc\"\n",
     (6, 10), "a", "api_key={{ secrets.NAME }}"),
    ("non-retryable-any", "  - id: a\n    type: message\n    text: x\n    retry: {max_attempts: 2, non_retryable: [any]}\n",
     (7, 46), "a", "max_attempts: 1"),
    ("unknown-error", "  - id: a\n    type: message\n    text: x\n    retry: {max_attempts: 2, non_retryable: [http_404]}\n",
     (7, 46), "a", "did you mean 'http_4xx'"),
    ("pattern-and-schema", "  - id: a\n    type: ask\n    text: x?\n    pattern: \"[0-9]+\"\n    schema: {type: integer}\n"
     "    timeout: 1h\n", (7, 14), "a", "not both"),
    ("bare-secrets", "  - id: a\n    type: http\n    url: https://x.example\n    headers: {X-All: \"{{ secrets }}\"}\n",
     (7, 22), "a", "secrets.NAME"),
    # templates in every string field a step renders (spec §2)
    ("unknown-name", "  - id: a\n    type: fail\n    error: \"{{ code }}\"\n", (6, 12), "a", "save_as: code"),
    ("unknown-name", "  - id: a\n    type: ask\n    text: x?\n    pattern: \"^{{ prefix }}[0-9]+$\"\n    timeout: 1h\n",
     (7, 14), "a", "save_as: prefix"),
    ("unknown-name", "  - id: a\n    type: ask\n    text: x?\n    timeout: \"{{ sla }}\"\n", (7, 14), "a", "save_as: sla"),
    ("unknown-name", "  - id: a\n    type: approval\n    approvers: [m@example.com]\n    timeout: 1h\n"
     "    reminders: [\"{{ every }}\"]\n", (8, 17), "a", "save_as: every"),
    ("unknown-name", "  - id: a\n    type: approval\n    approvers: [m@example.com]\n    timeout: 1h\n"
     "    escalate: [{to: [\"{{ boss }}\"], after: 30m}]\n", (8, 22), "a", "save_as: boss"),
    ("unknown-name", "  - id: a\n    type: approval\n    approvers: [m@example.com]\n    timeout: 1h\n"
     "    escalate: [{to: [b@example.com], after: \"{{ later }}\"}]\n", (8, 45), "a", "save_as: later"),
    ("unknown-name", "  - id: a\n    type: handoff\n    reason: x\n    team: \"{{ tema }}\"\n", (7, 11), "a",
     "save_as: tema"),
    ("unknown-name", "  - id: a\n    type: succeed\n    output: {total: \"{{ totl }}\"}\n", (6, 21), "a",
     "save_as: totl"),
    ("expression-syntax", "  - id: a\n    type: wait\n    for: \"{{ 1 + }}\"\n", (6, 10), "a", "does not parse"),
    ("expression-syntax", "  - id: a\n    type: message\n    if: \"{{ inputs.vip }}\"\n    text: hi\n", (6, 9), "a",
     "write 'inputs.vip' without the {{ }}"),
    ("unknown-field", "  - id: a\n    type: fail\n    error: nope\n    end: true\n", (7, 5), "a",
     "a fail step ends the run, so it takes no `end`"),
]


@pytest.mark.parametrize("rule,body,where,step_id,hint", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule(rule, body, where, step_id, hint):
    problem = only(check(HEAD + body), rule)
    assert (problem.line, problem.column) == where, problem.format()
    assert problem.step_id == step_id
    assert hint in problem.message, problem.message


def test_bad_procedure_id_and_inputs_schema_are_top_level():
    problems = check("procedure: Refund Flow!\ninputs: {type: objekt}\nsteps:\n  - {id: a, type: succeed}\n")
    assert {(p.rule, p.line, p.step_id) for p in problems} == {("bad-id", 1, None), ("bad-inputs-schema", 2, None)}
    assert "e.g. 'refund-flow'" in problems[0].message
    assert problems[0].format().startswith("p.yaml:1:12: -: invalid procedure id")


def test_target_in_another_list_is_reported():
    problem = only(check(HEAD + "  - id: p\n    type: parallel\n    branches:\n      one:\n        - id: m\n"
                         "          type: message\n          text: x\n          next: z\n  - id: z\n    type: succeed\n"),
                   "unknown-target")
    assert "same list" in problem.message


def test_dataflow_names_from_branches_loops_and_assign():
    body = """\
  - id: get
    type: lookup
    connector: shopify
    operation: orders.get
    assign: {order.total: "$.orders[0].total_price"}
  - id: p
    type: parallel
    branches:
      left:
        - {id: l1, type: set, set: {a: 1}}
      right:
        - {id: r1, type: set, set: {b: "{{ a }}"}}
"""
    problems = check(HEAD + body + "  - {id: after, type: message, text: \"{{ a }} {{ left.a }} {{ order.total }}\"}\n")
    assert [(p.rule, p.step_id) for p in problems] == [("unknown-name", "r1")]
    loop = HEAD + ("  - id: l\n    type: for_each\n    items: inputs.ids\n    as: x\n    max_items: 5\n    steps:\n"
                   "      - {id: m, type: message, text: \"{{ x }}\"}\n  - {id: n, type: message, text: \"{{ x }}\"}\n")
    assert [(p.rule, p.step_id, p.line) for p in check(loop)] == [("unknown-name", "n", 11)]


def test_name_set_only_after_the_step_is_unknown_but_any_path_is_enough():
    body = ("  - id: s\n    type: switch\n    cases: [{when: inputs.vip, goto: v}]\n    default: m\n"
            "  - {id: v, type: set, set: {bonus: 5}}\n  - {id: m, type: message, text: \"{{ bonus }}\"}\n")
    assert check(HEAD + body) == []  # bonus may be set on the path through v


def test_json_documents_are_located(tmp_path):
    text = '{"procedure": "demo-proc",\n "steps": [\n  {"id": "a", "type": "message", "txt": "x"}]}'
    problems = check(text, "p.json")
    assert [(p.rule, p.line, p.column) for p in problems] == [("unknown-field", 3, 34)]


def _validator_rules() -> set[str]:
    """Every problem code written in procedures/validator.py (hyphenated literals, and the default)."""
    import ast
    import re

    source = (Path(__file__).resolve().parents[2] / "procedures" / "validator.py").read_text()
    return {node.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.fullmatch(r"[a-z]+(-[a-z]+)+", node.value)}


# Rules triggered by the tests above that are not in CASES.
OTHER_TESTS = {"bad-id": "test_bad_procedure_id_and_inputs_schema_are_top_level",
               "bad-inputs-schema": "test_bad_procedure_id_and_inputs_schema_are_top_level"}


def test_every_rule_the_validator_can_emit_has_a_case():
    rules = _validator_rules()
    assert len(rules) > 30 and "field-type" in rules and "missing-field" in rules
    untested = rules - {case[0] for case in CASES} - set(OTHER_TESTS)
    assert not untested, f"rules without a test case: {sorted(untested)}"


def test_unknown_top_level_field_is_located_at_its_key():
    problem = only(check("procedure: demo-proc\nprocedure_name: x\nsteps:\n  - {id: a, type: succeed}\n"),
                   "unknown-field")
    assert (problem.line, problem.column, problem.step_id) == (2, 1, None)
    assert "did you mean 'procedure'" in problem.message


def test_templates_are_accepted_in_every_rendered_field():
    """Spec §2: every string value of a step is a template; these fields read names saved earlier."""
    body = """\
  - id: prep
    type: set
    set: {sla: 2h, code: late, boss: boss@example.com, prefix: "#", team_name: billing, n: 2}
  - id: ask_number
    type: ask
    text: "Order number, {{ inputs.name }}?"
    pattern: "^{{ prefix }}[0-9]+$"
    timeout: "{{ sla }}"
    save_as: number
  - id: approve
    type: approval
    approvers: [m@example.com, "{{ boss }}"]
    quorum: 2
    message: "Refund {{ number }}?"
    timeout: "{{ n }}d"
    reminders: ["{{ n }}h", 12h]
    escalate: [{to: ["{{ boss }}"], after: "{{ sla }}"}]
    save_as: approval
  - id: pause
    type: wait
    for: "{{ n }}m"
  - id: route
    type: switch
    cases: [{when: approval.outcome == "approved", goto: done}]
    default: hand
  - id: hand
    type: handoff
    reason: "{{ code }}"
    team: "{{ team_name }}"
  - id: done
    type: succeed
    output: {number: "{{ number }}", approved_by: "{{ approval.by }}"}
  - id: never
    type: fail
    error: "{{ code }}"
    message: "{{ number }} failed"
"""
    problems = check(HEAD + body)
    assert [(p.rule, p.step_id) for p in problems] == [("unreachable", "never")]


def test_a_switch_with_end_still_reaches_its_targets():
    """The engine ignores `end` on a switch; the validator must not report its targets unreachable."""
    body = ("  - id: s\n    type: switch\n    cases: [{when: inputs.x, goto: b}]\n    default: c\n    end: true\n"
            "  - id: b\n    type: succeed\n  - id: c\n    type: succeed\n")
    assert [p.rule for p in check(HEAD + body)] == ["end-on-switch"]


def test_quorum_against_templated_approvers_is_left_to_the_run():
    body = ("  - id: a\n    type: approval\n    approvers: [\"{{ inputs.managers }}\"]\n    quorum: 3\n"
            "    timeout: 1h\n")
    assert check(HEAD + body) == []  # `{{ inputs.managers }}` may be a list of three


def test_secret_userinfo_in_a_url_is_not_inline():
    body = ("  - id: a\n    type: http\n    url: \"https://{{ secrets.tok }}:{{ secrets.tok }}@x.example/a?"
            "token={{ secrets.tok }}\"\n  - id: b\n    type: http\n    url: \"https://x.example/users/@me?q=1\"\n")
    assert check(HEAD + body) == []
    templated = "  - id: a\n    type: http\n    url: \"https://{{ inputs.user }}@x.example/\"\n"
    assert [p.rule for p in check(HEAD + templated)] == ["inline-credential"]

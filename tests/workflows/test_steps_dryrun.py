"""Every step type and error path of the interpreter, run through the dry-run harness.

Each test runs a fixture procedure (tests/workflows/procedures/, file name = procedure id) with
`cli.dryrun.dry_run`: the real interpreter on the time-skipping Temporal test server, connector
and http steps answered from mocks, approvals decided and asks answered through the real
Updates (spec §9). Sections cited are those of shared/spec/procedure-language.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from activities.dryrun import DryRunActivities
from cli.dryrun import TASK_QUEUE, _load, _runtime, dry_run
from connectors.catalog import builtin_connectors
from runtime import devserver
from runtime.workers import build_worker
from workflows import types as T

ROOT = Path(__file__).resolve().parents[2]
PROCS = Path(__file__).resolve().parent / "procedures"

ORDER = {"status": 200, "body": {"orders": [{"id": 1001, "name": "#1001", "total_price": "150.00",
                                              "currency": "USD"}]}}


async def run(name: str, inputs: dict | None = None, mocks: dict | None = None,
              decisions: dict | None = None, answers: dict | None = None,
              **kwargs: Any) -> tuple[dict, list[str]]:
    lines: list[str] = []
    outcome = await dry_run(PROCS / f"{name}.yaml", inputs or {}, mocks or {}, decisions or {},
                            answers or {}, lines.append, **kwargs)
    return outcome, lines


async def run_definition(definition: dict, inputs: dict | None = None, **kwargs: Any) -> tuple[dict, list[str]]:
    """The interpreter on a definition the validator never saw (e.g. one published before a
    validator rule existed): what the engine itself does with it, on the time-skipping server."""
    from temporalio.testing import WorkflowEnvironment
    lines: list[str] = []
    acts = DryRunActivities(builtin_connectors(), kwargs.get("mocks") or {}, kwargs.get("decisions") or {},
                            kwargs.get("answers") or {}, PROCS, load=_load, on_event=lines.append)
    run = T.RunInput(tenant_id="dry-run", run_id="raw", procedure_id=definition["procedure"], version=1,
                     sha256="0" * 64, definition=definition, inputs=inputs or {}, dry_run=True)
    async with await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=devserver.test_server_path(), runtime=_runtime()) as env:
        await devserver.register_search_attributes(env.client)
        async with build_worker(env.client, TASK_QUEUE, acts.all()):
            outcome = await env.client.execute_workflow(
                T.WORKFLOW_NAME, run, id=T.workflow_id("dry-run", run.procedure_id, "raw"), task_queue=TASK_QUEUE)
    return outcome, lines


def steps(outcome: dict, sid: str) -> list[dict]:
    return [s for s in outcome["steps"] if s["id"] == sid]


def step(outcome: dict, sid: str) -> dict:
    found = steps(outcome, sid)
    assert len(found) == 1, f"{sid}: {found}"
    return found[0]


def statuses(outcome: dict) -> list[tuple[str, str]]:
    return [(s["id"], s["status"]) for s in outcome["steps"]]


# ---- message, set, switch, if, next, end (spec §2, §3) ---------------------------------------

async def test_message_set_switch_case_next_end_and_skipped_if():
    out, _ = await run("basics", {"name": "Ann", "items": [1, 2, 3], "total": 150})
    assert out["status"] == "succeeded" and out["error"] is None
    # `if` false -> skipped; the case jumps to `big`, whose `next` skips `small`; `end` stops
    # before `never_runs`.
    assert statuses(out) == [("greet", "succeeded"), ("assign", "succeeded"),
                             ("skipped_one", "skipped"), ("route", "succeeded"),
                             ("big", "succeeded"), ("done", "succeeded")]
    assert out["messages"] == ["Hello Ann, you have 3 items.", "size big"]
    assert step(out, "greet")["output"] == "Hello Ann, you have 3 items."
    assert step(out, "route")["output"] == {"matched": "order.total > 100"}
    v = out["vars"]
    # a single {{ }} keeps its type; mixed text is rendered as text; non-strings are literals
    assert v["items_copy"] == [1, 2, 3]
    assert v["count"] == 3
    assert v["label"] == "n=3"
    assert v["flag"] is True and v["limit"] == 5
    assert v["plain"] == "no templates here"
    assert v["order"] == {"total": 150}  # dotted name nests
    assert v["size"] == "big"
    assert v["inputs"] == {"name": "Ann", "items": [1, 2, 3], "total": 150}
    assert v["run"]["procedure"] == "basics"


async def test_skipped_step_with_end_goes_on_to_the_next_step():
    # spec §3: a false `if` skips the step and the flow goes on; `end` applies only when it ran
    # (as procedures/flow.py models it, so the validator and the graph agree with the run)
    out, _ = await run("skip-end", {"stop": False, "hop": False, "mode": ""})
    assert out["status"] == "succeeded", out["error"]
    # `hop` is skipped too: it goes to its `next` (`last`), not to `middle`
    assert statuses(out) == [("maybe_stop", "skipped"), ("route", "succeeded"), ("hop", "skipped"),
                             ("last", "succeeded")]
    assert out["messages"] == ["last"]


async def test_step_with_end_that_runs_ends_the_run():
    out, _ = await run("skip-end", {"stop": True, "mode": "middle"})
    assert out["status"] == "succeeded"
    assert statuses(out) == [("maybe_stop", "succeeded")]
    assert out["messages"] == ["stopping"]
    out, _ = await run("skip-end", {"stop": False, "mode": "middle"})
    assert [s for s, _ in statuses(out)] == ["maybe_stop", "route", "middle", "last"]
    assert out["messages"] == ["middle", "last"]


async def test_set_step_save_as_stores_the_assigned_values():
    out, _ = await run("set-save")
    assert out["status"] == "succeeded", out["error"]
    assert out["vars"]["picked"] == {"a": 1, "b": 2, "c.d": "x"}
    assert out["vars"]["a"] == 1 and out["vars"]["c"] == {"d": "x"}
    assert step(out, "pick")["output"] == {"a": 1, "b": 2, "c.d": "x"}
    assert out["messages"] == ['2 of {"a": 1, "b": 2, "c.d": "x"}']


async def test_text_fields_render_a_single_template_like_mixed_text():
    inputs = {"flag": True, "obj": {"k": "v", "n": None}, "mode": "", "team": "billing"}
    out, _ = await run("render-text", inputs)
    # one rendering for every text field (decisions §2): true/false, JSON, null -> empty
    assert out["messages"] == ["true", '{"k": "v", "n": null}', 'flag=true obj={"k": "v", "n": null}', ""]
    assert out["status"] == "handed_off"
    assert out["result"] == {"reason": "true", "team": "billing"}
    out, _ = await run("render-text", {**inputs, "mode": "fail"})
    assert out["status"] == "failed"
    assert out["error"] == {"name": "billing_refused", "step": "broken", "message": '{"k": "v", "n": null}'}
    out, _ = await run("render-text", {"flag": False, "obj": {}, "mode": ""})
    assert out["messages"][0] == "false"
    assert out["result"] == {"reason": "false", "team": None}  # a team that renders empty is none


async def test_switch_default():
    out, _ = await run("basics", {"name": "Bo", "items": [], "total": 5})
    assert out["status"] == "succeeded"
    assert step(out, "route")["output"] == {"matched": "default"}
    assert [s for s, _ in statuses(out)] == ["greet", "assign", "skipped_one", "route", "small", "done"]
    assert out["messages"] == ["Hello Bo, you have 0 items.", "size small"]
    assert out["vars"]["size"] == "small"


# ---- lookup, action, http (spec §3, §5) ------------------------------------------------------

async def test_lookup_action_and_http_with_extract_and_assign():
    mocks = {
        "find": ORDER,
        "shopify.refunds.create": {"status": 201, "body": {"refund": {"id": 77, "transactions": [{"amount": "150.00"}]}}},
        "rates": {"status": 200, "body": {"base": "USD", "rates": {"EUR": 0.9}}},
        "notes": {"status": 201, "body": {"id": "n-1", "state": "open", "extra": True}},
    }
    out, _ = await run("lookups", {"email": "a@example.com"}, mocks)
    assert out["status"] == "succeeded", out["error"]
    v = out["vars"]
    # lookup: the operation's response mapping; `assign` adds a dotted name
    assert v["order"] == {"id": 1001, "name": "#1001", "total": "150.00", "currency": "USD"}
    assert v["first"] == {"name": "#1001"}
    # action: mapped response (the idempotency header is not visible through the mock)
    assert v["refund"] == {"refund_id": 77, "amount": "150.00"}
    # http with extract: the extracted names; http without extract: the parsed JSON body
    assert v["fx"] == {"rate": 0.9, "base": "USD"}
    assert v["note_body"] == {"id": "n-1", "state": "open", "extra": True}
    assert v["note"] == {"id": "n-1", "state": "open"}
    for sid in ("find", "refund", "rates", "notes"):
        assert step(out, sid)["status"] == "succeeded" and step(out, sid)["attempts"] == 1
    assert out["messages"] == ["Order 1001 (#1001) refund 77 fx 0.9 note n-1/open"]


# ---- retries and error names (spec §4) -------------------------------------------------------

async def test_5xx_retried_until_success_counts_attempts():
    out, _ = await run("retries", mocks={"find": ["http_5xx", "http_5xx", ORDER]})
    assert out["status"] == "succeeded"
    assert step(out, "find")["attempts"] == 3
    assert out["vars"]["order"]["id"] == 1001
    assert out["messages"] == ["order 1001"]


async def test_5xx_exhausting_attempts_fails_the_run():
    out, _ = await run("retries", mocks={"find": {"status": 502, "body": {"error": "bad gateway"}}})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "http_5xx" and out["error"]["step"] == "find"
    assert "502" in out["error"]["message"]
    assert step(out, "find")["status"] == "failed" and step(out, "find")["attempts"] == 3
    assert not steps(out, "tell")


async def test_4xx_not_retried():
    out, _ = await run("retries", mocks={"find": [{"status": 404, "body": {"errors": "Not Found"}}, ORDER]})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "http_4xx" and out["error"]["step"] == "find"
    assert "404" in out["error"]["message"]
    assert step(out, "find")["attempts"] == 1


def _elapsed(record: dict) -> timedelta:
    return datetime.fromisoformat(record["ended_at"]) - datetime.fromisoformat(record["started_at"])


async def test_429_with_retry_after_is_retried_after_that_delay():
    mocks = {"find": [{"status": 429, "headers": {"Retry-After": "20"}, "body": {"errors": "slow down"}}, ORDER]}
    out, _ = await run("retries", mocks=mocks)
    assert out["status"] == "succeeded"
    find = step(out, "find")
    assert find["attempts"] == 2
    # workflow time: the second attempt waited the 20 s the server asked for, not the policy's 1 s
    # (nor its 10 s max_interval)
    assert timedelta(seconds=20) <= _elapsed(find) < timedelta(seconds=60), find
    # without Retry-After the policy's first interval (1 s) applies
    out, _ = await run("retries", mocks={"find": [{"status": 429, "body": {}}, ORDER]})
    assert step(out, "find")["attempts"] == 2
    assert _elapsed(step(out, "find")) < timedelta(seconds=10), step(out, "find")


async def test_non_retryable_5xx():
    out, _ = await run("no-retry", mocks={"find": ["http_5xx", ORDER]})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "http_5xx" and out["error"]["step"] == "find"
    assert step(out, "find")["attempts"] == 1


@pytest.mark.parametrize("mock", ["timeout", "connection"])
async def test_timeout_and_connection_errors(mock):
    out, _ = await run("retries", mocks={"find": mock})
    assert out["status"] == "failed"
    assert out["error"]["name"] == mock and out["error"]["step"] == "find"
    assert step(out, "find")["attempts"] == 3


async def test_timeout_then_connection_then_ok():
    out, _ = await run("retries", mocks={"find": ["timeout", "connection", ORDER]})
    assert out["status"] == "succeeded"
    assert step(out, "find")["attempts"] == 3


async def test_on_error_specific_name():
    out, _ = await run("catching", mocks={"find": {"status": 404, "body": {}}})
    assert out["status"] == "succeeded"
    assert step(out, "find")["status"] == "caught"
    assert step(out, "find")["attempts"] == 1
    assert [s for s, _ in statuses(out)] == ["find", "not_found"]
    assert out["messages"] == ["no such order"]


async def test_on_error_any():
    out, _ = await run("catching", mocks={"find": "connection"})
    assert out["status"] == "succeeded"
    assert step(out, "find")["status"] == "caught"
    assert [s for s, _ in statuses(out)] == ["find", "broken"]
    assert out["messages"] == ["the shop is down"]


async def test_missing_mock_is_a_connector_error():
    out, _ = await run("catching", mocks={})
    # caught by `errors: [any]`
    assert step(out, "find")["status"] == "caught"
    assert step(out, "find")["error"]["name"] == "connector"
    assert "no mock" in step(out, "find")["error"]["message"]


async def test_expression_error_division_by_zero():
    out, _ = await run("expressions", {"a": 1, "b": 0, "name": "x"})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "expression" and out["error"]["step"] == "ratio"
    assert "inputs.a / inputs.b" in out["error"]["message"]
    assert "division by zero" in out["error"]["message"]
    assert step(out, "ratio")["status"] == "failed" and step(out, "ratio")["attempts"] == 0
    assert "r" not in out["vars"]


async def test_expression_error_comparing_str_and_int():
    out, _ = await run("expressions", {"a": 1, "b": 2, "name": "x"})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "expression" and out["error"]["step"] == "compare"
    assert "inputs.name > inputs.a" in out["error"]["message"]
    assert out["vars"]["r"] == 0.5
    assert statuses(out) == [("ratio", "succeeded"), ("compare", "failed")]


async def test_step_budget_stops_an_endless_loop():
    out, _ = await run("loop", step_budget=50)
    assert out["status"] == "failed"
    assert out["error"]["name"] == "step_budget"
    assert "50" in out["error"]["message"]
    assert len(out["steps"]) == 50
    assert out["vars"]["n"] == 25  # init, then 49 steps alternating again/check
    assert out["error"]["step"] == "check"


async def test_step_budget_default_is_1000():
    out, _ = await run("loop")
    assert out["status"] == "failed" and out["error"]["name"] == "step_budget"
    assert len(out["steps"]) == 1000


# ---- waits (spec §3) -------------------------------------------------------------------------

async def test_wait_for_and_until_in_skipped_time():
    until = (datetime.now(timezone.utc) + timedelta(days=5)).isoformat()
    out, _ = await run("waits", {"until": until})
    assert out["status"] == "succeeded", out["error"]
    assert step(out, "pause")["output"] == {"waited_s": 48 * 3600}
    pause = step(out, "pause")
    elapsed = datetime.fromisoformat(pause["ended_at"]) - datetime.fromisoformat(pause["started_at"])
    assert elapsed >= timedelta(hours=48)
    # until: 5 days from (about) the start, 48h of which already passed
    waited = step(out, "until_time")["output"]["waited_s"]
    assert 3 * 86400 - 600 < waited <= 3 * 86400
    assert datetime.fromisoformat(step(out, "until_time")["ended_at"]) >= datetime.fromisoformat(until)
    assert out["messages"] == ["waited"]


async def test_wait_until_in_the_past_does_not_wait():
    out, _ = await run("waits", {"until": "2000-01-01T00:00:00Z"})
    assert out["status"] == "succeeded"
    assert step(out, "until_time")["output"] == {"waited_s": 0}


@pytest.mark.parametrize("until", ["9999-12-31T23:59:59Z",
                                   (datetime.now(timezone.utc) + timedelta(days=400)).isoformat()])
async def test_wait_until_absurdly_far_fails_the_step_cleanly(until):
    # never a workflow task failure retried forever: the step fails with `validation`, catchable
    out, _ = await run("long-wait", {"until": until})
    assert out["status"] == "succeeded", out["error"]
    later = step(out, "later")
    assert later["status"] == "caught" and later["error"]["name"] == "validation"
    assert "more than 365d away" in later["error"]["message"]
    assert out["messages"] == ["too far"]


async def test_durations_beyond_the_maximum_fail_the_step_not_the_workflow_task():
    # a definition that never met the validator's 365d maximum (published before it existed)
    for field, step_def in [
        ("for", {"id": "nap", "type": "wait", "for": "999999999d"}),
        ("timeout", {"id": "nap", "type": "approval", "approvers": ["a@example.com"], "timeout": "999999999d"}),
        ("timeout", {"id": "nap", "type": "ask", "text": "?", "timeout": "400d"}),
        ("reminder", {"id": "nap", "type": "approval", "approvers": ["a@example.com"], "timeout": "1h",
                      "reminders": ["999999999d"]}),
        ("timeout", {"id": "nap", "type": "lookup", "connector": "shopify", "operation": "orders.get",
                     "params": {"email": "a@example.com"}, "timeout": "999999999d"}),
    ]:
        definition = {"procedure": "too-long", "steps": [step_def]}
        out, _ = await run_definition(definition)
        assert out["status"] == "failed", (field, out)
        assert out["error"]["name"] == "validation" and out["error"]["step"] == "nap", out["error"]
        assert "365d" in out["error"]["message"], out["error"]


async def test_wait_until_not_iso_is_validation_error():
    out, _ = await run("waits", {"until": "tomorrow"})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "until_time"


# ---- templated durations and patterns (spec §2: every string value of a step is a template) ---

GOOD_TIMES = {"call_timeout": "7s", "ask_hours": 2, "approval_timeout": "3h", "reminder": "1h",
              "escalate_after": "2h"}


def waited(out: dict, sid: str) -> timedelta:
    s = step(out, sid)
    return datetime.fromisoformat(s["ended_at"]) - datetime.fromisoformat(s["started_at"])


def scheduled(history: Any, activity_type: str) -> list[tuple[timedelta, dict]]:
    """(start_to_close_timeout, input) of every activity of `activity_type` the run scheduled."""
    found = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == activity_type:
                found.append((attrs.start_to_close_timeout.ToTimedelta(),
                              json.loads(attrs.input.payloads[0].data)))
    return found


async def test_templated_timeouts_reminders_and_escalations_are_rendered():
    histories: list = []
    out, lines = await run("templated-timeouts", GOOD_TIMES, mocks={"find": ORDER}, on_history=histories.append)
    assert out["status"] == "succeeded", out["error"]
    # the lookup's activity runs with the rendered timeout (the executor is told it too)
    [(timeout, payload)] = scheduled(histories[0], T.CALL_CONNECTOR)
    assert timeout == timedelta(seconds=7) and payload["timeout_s"] == 7.0
    # `{{ inputs.ask_hours }}h` -> 2h; the approval waits its rendered 3h, reminded after 1h,
    # escalated after 2h
    assert timedelta(hours=2) <= waited(out, "code") < timedelta(hours=2, minutes=1)
    assert step(out, "code")["output"] == {"outcome": "timed_out"}
    assert timedelta(hours=3) <= waited(out, "approve") < timedelta(hours=3, minutes=1)
    assert [line for line in lines if line.startswith("  approval ")] == [
        "  approval request to boss@example.com", "  approval reminder to boss@example.com",
        "  approval escalation to director@example.com"]
    assert out["messages"] == ["What is your order number?", "nobody decided"]
    # the rendered values decide the schedule: escalation first when it comes before the reminder
    out, lines = await run("templated-timeouts", {**GOOD_TIMES, "reminder": "150m", "escalate_after": "30m"},
                           mocks={"find": ORDER})
    assert out["status"] == "succeeded", out["error"]
    assert [line for line in lines if line.startswith("  approval ")] == [
        "  approval request to boss@example.com", "  approval escalation to director@example.com",
        "  approval reminder to boss@example.com, director@example.com"]


@pytest.mark.parametrize("bad, sid, field, problem", [
    ({"call_timeout": "soon"}, "find", "timeout", "invalid duration 'soon'"),
    ({"call_timeout": "999999999d"}, "find", "timeout", "longer than 365d"),
    ({"ask_hours": 0}, "code", "timeout", "invalid duration '0h'"),
    ({"ask_hours": 9000}, "code", "timeout", "longer than 365d"),
    ({"approval_timeout": "3 hours"}, "approve", "timeout", "invalid duration '3 hours'"),
    ({"reminder": "400d"}, "approve", "reminders[0]", "longer than 365d"),
    ({"escalate_after": "-1h"}, "approve", "escalate[0].after", "invalid duration '-1h'"),
])
async def test_a_templated_duration_that_renders_badly_fails_its_step_with_validation(bad, sid, field, problem):
    histories: list = []
    out, lines = await run("templated-timeouts", {**GOOD_TIMES, **bad}, mocks={"find": ORDER},
                           on_history=histories.append)
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == sid, out["error"]
    assert out["error"]["message"].startswith(f"{sid}: {field}: "), out["error"]
    assert problem in out["error"]["message"], out["error"]
    assert step(out, sid)["status"] == "failed"
    # the step failed before doing anything: no call, question or mail of it
    if sid == "find":
        assert scheduled(histories[0], T.CALL_CONNECTOR) == []
    if sid == "code":
        assert out["messages"] == []
    assert not [line for line in lines if line.startswith("  approval ")]


async def test_a_templated_pattern_is_rendered_then_matched():
    out, lines = await run("templated-pattern", {"prefix": "AB"}, answers={"code": ["1234", "XY-1234", "AB-1234"]})
    assert out["status"] == "succeeded", out["error"]
    assert out["messages"] == ["Your AB code?", "Sorry, that does not look right. Your AB code?",
                               "Sorry, that does not look right. Your AB code?", "got AB-1234"]
    assert step(out, "code")["attempts"] == 3 and out["vars"]["code"] == "AB-1234"
    # the rendered text is the regular expression: a value may bring regex syntax with it
    out, _ = await run("templated-pattern", {"prefix": "(AB|CD)"}, answers={"code": ["CD-0042"]})
    assert out["status"] == "succeeded", out["error"]
    assert out["vars"]["code"] == "CD-0042"


async def test_a_templated_pattern_that_does_not_compile_fails_before_asking():
    out, _ = await run("templated-pattern", {"prefix": "(AB"}, answers={"code": ["AB-1234"]})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "code"
    assert "pattern '(AB-[0-9]{4}': not a valid regular expression" in out["error"]["message"]
    assert out["messages"] == []  # the question was never asked


async def test_a_templated_pattern_that_renders_empty_fails_before_asking():
    definition = {"procedure": "empty-pattern", "steps": [
        {"id": "code", "type": "ask", "text": "Code?", "pattern": "{{ inputs.pattern }}", "timeout": "1h"}]}
    out, _ = await run_definition(definition, {"pattern": None}, answers={"code": ["anything"]})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "code"
    assert "rendered empty text" in out["error"]["message"]
    assert out["messages"] == []


async def test_a_templated_pattern_that_renders_a_nested_repetition_fails_before_asking():
    # (x+)+ backtracks exponentially on a hostile answer: it would stall the workflow task
    out, _ = await run("templated-pattern", {"prefix": "(A+)+"}, answers={"code": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!"]})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "code"
    assert "exponential time" in out["error"]["message"]
    assert out["messages"] == []


async def test_an_answer_longer_than_the_matched_bound_does_not_match():
    definition = {"procedure": "long-answer", "steps": [
        {"id": "code", "type": "ask", "text": "Code?", "pattern": "[A-Z ]+", "timeout": "1h", "max_attempts": 2,
         "save_as": "code"}]}
    out, _ = await run_definition(definition, {}, answers={"code": ["A" * 1_001, "A" * 1_000]})
    assert out["status"] == "succeeded", out["error"]
    assert out["messages"] == ["Code?", "Sorry, that does not look right. Code?"]
    assert out["vars"]["code"] == "A" * 1_000

# ---- ask (spec §3) ---------------------------------------------------------------------------

async def test_ask_answered_with_reask_pattern_and_integer_schema():
    out, lines = await run("ask", answers={"code": ["abc", "1234"], "qty": ["2"]})
    assert out["status"] == "succeeded", out["error"]
    assert out["messages"] == [
        "What is your order number?",
        "Sorry, that does not look right. What is your order number?",
        "How many?",
        "Order 1234 x3",
    ]
    assert out["vars"]["order_no"] == "1234"
    assert out["vars"]["qty"] == 2  # the schema parsed it as an integer
    assert step(out, "code")["attempts"] == 2 and step(out, "code")["output"] == "1234"
    assert step(out, "qty")["attempts"] == 1 and step(out, "qty")["output"] == 2
    assert "  answer: abc" in lines and "  answer: 1234" in lines


async def test_ask_schema_rejects_then_exhausts_attempts():
    out, _ = await run("ask", answers={"code": ["1234"], "qty": ["two", "0"]})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "qty"
    # `two` is not JSON; `0` is below the schema's minimum, and the second try is the last
    assert out["messages"] == ["What is your order number?", "How many?",
                               "Sorry, I could not read that. How many?"]
    assert step(out, "qty")["attempts"] == 2


async def test_ask_unanswered_times_out():
    out, _ = await run("ask", answers={"code": ["1234"]})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "ask_timeout" and out["error"]["step"] == "qty"
    assert step(out, "qty")["status"] == "failed"
    assert out["vars"]["order_no"] == "1234" and "qty" not in out["vars"]


async def test_ask_on_timeout_goto():
    out, _ = await run("ask-timeout")
    assert out["status"] == "succeeded"
    assert [s for s, _ in statuses(out)] == ["code", "no_reply"]
    assert out["messages"] == ["What is your order number?", "We did not hear back."]


async def test_ask_without_pattern_accepts_text():
    out, _ = await run("ask-timeout", answers={"code": ["  anything at all "]})
    assert out["status"] == "succeeded"
    assert out["vars"]["order_no"] == "  anything at all "
    assert out["messages"][-1] == "got   anything at all "


# ---- approval (spec §3) ----------------------------------------------------------------------

async def test_approval_approved_result_shape():
    out, lines = await run("approval", {"amount": 150}, decisions={"approve": "approved"})
    assert out["status"] == "succeeded", out["error"]
    d = out["vars"]["decision"]
    assert {"outcome", "by", "at", "comment"} <= set(d)
    assert d["outcome"] == "approved" and d["by"] == "boss@example.com" and d["comment"] == "dry run"
    datetime.fromisoformat(d["at"])
    assert out["messages"] == ["approved by boss@example.com"]
    assert "  approval request to boss@example.com" in lines
    assert "  boss@example.com: approved" in lines


async def test_approval_rejected_fails_with_approval_rejected():
    out, _ = await run("approval", {"amount": 150}, decisions={"approve": "rejected"})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "approval_rejected" and out["error"]["step"] == "approve"
    assert "boss@example.com" in out["error"]["message"]
    assert out["vars"]["decision"]["outcome"] == "rejected"
    assert out["messages"] == []


async def test_approval_undecided_times_out():
    out, _ = await run("approval", {"amount": 150})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "approval_timeout" and out["error"]["step"] == "approve"
    d = out["vars"]["decision"]
    assert d["outcome"] == "timed_out" and d["by"] is None
    approve = step(out, "approve")
    waited = datetime.fromisoformat(approve["ended_at"]) - datetime.fromisoformat(approve["started_at"])
    assert waited >= timedelta(hours=48)


async def test_approval_quorum_two():
    out, lines = await run("approval-routes", decisions={"approve": "approved"})
    assert out["status"] == "succeeded"
    d = out["vars"]["decision"]
    assert d["outcome"] == "approved" and d["by"] == "b@example.com"
    assert sorted(x["by"] for x in d["decisions"]) == ["a@example.com", "b@example.com"]
    assert out["messages"] == ["granted: approved"]
    assert "  a@example.com: approved" in lines and "  b@example.com: approved" in lines
    assert not any("c@example.com: approved" in line for line in lines)


async def test_approval_on_reject_goto():
    out, _ = await run("approval-routes", decisions={"approve": "rejected"})
    assert out["status"] == "succeeded"
    assert [s for s, _ in statuses(out)] == ["approve", "rejected"]
    assert out["vars"]["decision"]["outcome"] == "rejected"
    assert out["messages"] == ["rejected: rejected"]


async def test_escalation_and_approvers_are_templates():
    out, lines = await run("approval-escalate", {"manager": "Mgr@Example.com", "director": "dir@example.com"})
    assert out["status"] == "succeeded", out["error"]
    assert out["messages"] == ["nobody decided"]
    mails = [line for line in lines if line.startswith("  approval ")]
    assert mails == ["  approval request to mgr@example.com", "  approval escalation to dir@example.com"]


async def test_approver_that_is_not_an_address_fails_the_step():
    out, lines = await run("approval-escalate", {"manager": "boss\r\nBcc: x@evil.test", "director": "d@example.com"})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "approve"
    assert "not an e-mail address" in out["error"]["message"]
    assert not [line for line in lines if line.startswith("  approval ")]


async def test_approval_request_shows_inputs_and_saved_values():
    out, lines = await run("approval", {"amount": 150}, decisions={"approve": "approved"})
    assert out["status"] == "succeeded"
    assert "    inputs.amount: 150" in lines


async def test_approval_on_timeout_goto_with_reminder_and_escalation():
    out, lines = await run("approval-routes")
    assert out["status"] == "succeeded"
    assert [s for s, _ in statuses(out)] == ["approve", "timed_out"]
    assert out["vars"]["decision"]["outcome"] == "timed_out"
    assert out["messages"] == ["timed out: timed_out"]
    mails = [line for line in lines if line.startswith("  approval ")]
    assert mails == [
        "  approval request to a@example.com, b@example.com, c@example.com",
        "  approval reminder to a@example.com, b@example.com, c@example.com",
        "  approval escalation to director@example.com",
    ]


# ---- parallel (spec §3) ----------------------------------------------------------------------

async def test_parallel_branch_results_and_names_visible_after():
    out, _ = await run("parallel", mocks={"find": ORDER})
    assert out["status"] == "succeeded", out["error"]
    assert out["vars"]["gathered"] == {
        "shop": {"order": {"id": 1001, "name": "#1001", "total": "150.00", "currency": "USD"}},
        "tickets": {"tickets": 3},
    }
    assert out["vars"]["order"]["id"] == 1001 and out["vars"]["tickets"] == 3
    assert out["messages"] == ["order 1001 tickets 3"]
    assert step(out, "find")["path"] == "both.shop/"
    assert step(out, "count")["path"] == "both.tickets/"


async def test_parallel_failing_branch_fails_fast_when_uncaught():
    out, _ = await run("parallel", mocks={"find": "http_5xx"})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "http_5xx" and out["error"]["step"] == "find"
    assert step(out, "both")["status"] == "failed"
    # the other branch was cancelled before its 1h wait ended
    assert step(out, "slow")["status"] == "cancelled"
    assert not steps(out, "count")
    assert out["messages"] == []


async def test_parallel_on_error_catches_a_branch_failure():
    out, _ = await run("parallel", mocks={"find": {"status": 404, "body": {}}})
    assert out["status"] == "succeeded"
    assert step(out, "both")["status"] == "caught"
    assert step(out, "both")["error"]["name"] == "http_4xx"
    assert not steps(out, "count") and not steps(out, "tell")
    assert out["messages"] == ["no order found"]


# ---- for_each (spec §3) ----------------------------------------------------------------------

async def test_for_each_results_and_max_concurrency():
    out, _ = await run("foreach", {"numbers": [1, 2, 3]})
    assert out["status"] == "succeeded", out["error"]
    assert out["vars"]["results"] == [{"doubled": 2}, {"doubled": 4}, {"doubled": 6}]
    assert out["messages"] == ["3 done"]
    naps = {s["path"]: datetime.fromisoformat(s["started_at"]) for s in steps(out, "nap")}
    assert set(naps) == {"each[0]/", "each[1]/", "each[2]/"}
    # two items at a time: the third starts only after the first two have slept their hour
    assert abs(naps["each[0]/"] - naps["each[1]/"]) < timedelta(minutes=1)
    assert naps["each[2]/"] - naps["each[0]/"] >= timedelta(hours=1)


async def test_for_each_more_items_than_max_items():
    out, _ = await run("foreach", {"numbers": [1, 2, 3, 4]})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "each"
    assert "max_items 3" in out["error"]["message"]
    assert not steps(out, "nap")


async def test_for_each_empty_list():
    out, _ = await run("foreach", {"numbers": []})
    assert out["status"] == "succeeded"
    assert out["vars"]["results"] == []
    assert out["messages"] == ["0 done"]


@pytest.mark.parametrize("value, kind", [(5, "int"), ("abc", "str"), ({"a": 1}, "dict"), (None, "NoneType")])
async def test_for_each_items_not_a_list(value, kind):
    out, _ = await run("foreach-nonlist", {"value": value})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "each"
    assert f"items gave {kind}, not a list" in out["error"]["message"]
    assert not steps(out, "inner")


async def test_asks_of_concurrent_items_are_answered_each():
    out, _ = await run("foreach-ask", {"names": ["ann", "ben"]}, answers={"code": ["A-1", "B-2"]})
    assert out["status"] == "succeeded", out["error"]
    # the dry run answers in the order its message activities run (either item may be first);
    # each ask got exactly one answer, addressed by its key, and kept it
    got = {s["path"]: s["output"] for s in steps(out, "code")}
    assert set(got) == {"each[0]/", "each[1]/"} and sorted(got.values()) == ["A-1", "B-2"]
    assert out["messages"] == ["Code for ann?", "Code for ben?", f"{got['each[0]/']} {got['each[1]/']}"]


async def test_approvals_of_concurrent_items_wait_apart_and_are_decided_each():
    # the same approval step waits in two items at once: each is its own pending request
    # (keyed by path), with its own details and request hash, decided through its own Update
    orders = [{"id": 1, "approver": "ann@example.com"}, {"id": 2, "approver": "ben@example.com"}]
    out, lines = await run("foreach-approval", {"orders": orders}, decisions={"approve": "approved"})
    assert out["status"] == "succeeded", out["error"]
    assert out["messages"] == ["approved by ann@example.com, approved by ben@example.com"]
    approvals = steps(out, "approve")
    assert sorted(s["path"] for s in approvals) == ["each[0]/", "each[1]/"]
    starts = [datetime.fromisoformat(s["started_at"]) for s in approvals]
    assert abs(starts[0] - starts[1]) < timedelta(minutes=1)  # both waited at the same time
    assert "  approval request to ann@example.com" in lines and "  approval request to ben@example.com" in lines
    assert "  ann@example.com: approved" in lines and "  ben@example.com: approved" in lines
    # each request shows its own item
    assert "    order.id: 1" in lines and "    order.id: 2" in lines
    # undecided: both time out separately (neither overwrote the other)
    out, _ = await run("foreach-approval", {"orders": orders})
    assert out["status"] == "failed" and out["error"]["name"] == "approval_timeout"


# ---- call (spec §3) --------------------------------------------------------------------------

async def test_call_runs_child_resolved_by_id():
    out, _ = await run("caller", {"n": 21})
    assert out["status"] == "succeeded", out["error"]
    child = out["vars"]["child"]
    assert child["status"] == "succeeded"
    assert child["vars"]["doubled"] == 42 and child["vars"]["inputs"] == {"n": 21}
    assert out["messages"] == ["child says 42", "child doubled 42"]


async def test_recursive_calls_count_against_the_callers_step_budget():
    # ping calls pong calls ping ...: every child gets what is left of the budget, so the
    # recursion stops at the run's budget; on_error [any] cannot catch step_budget
    out, _ = await run("ping", step_budget=9)
    assert out["status"] == "failed"
    assert out["error"]["name"] == "step_budget" and out["error"]["step"] == "again"
    assert "9 steps" in out["error"]["message"]
    assert out["executed"] == 10  # 9 steps ran, the 10th was refused
    assert out["messages"] == []
    assert [s["status"] for s in out["steps"]] == ["succeeded", "failed"]


async def test_call_depth_is_capped():
    # ping and pong call each other without end; the validator cannot see that across procedures
    out, _ = await run("ping")
    assert out["status"] == "failed"
    assert out["error"]["name"] == "call_depth" and out["error"]["step"] == "again"
    assert "10 deep" in out["error"]["message"]
    assert out["messages"] == []  # not caught by on_error [any] at any level
    assert out["executed"] == 22  # 11 levels (the run and 10 nested calls) of 2 steps


async def test_call_child_failure_propagates():
    out, _ = await run("caller", {"n": -1})
    assert out["status"] == "failed"
    assert out["error"]["name"] == "validation" and out["error"]["step"] == "sub"
    assert "negative -1" in out["error"]["message"]
    assert step(out, "sub")["status"] == "failed"
    assert not steps(out, "tell")


# ---- handoff, succeed, fail (spec §3) --------------------------------------------------------

async def test_succeed():
    out, _ = await run("endings", {"mode": "ok"})
    assert out["status"] == "succeeded" and out["error"] is None
    assert [s for s, _ in statuses(out)] == ["route", "fine"]
    assert step(out, "fine")["status"] == "succeeded"


async def test_succeed_output_is_the_runs_output():
    definition = {"procedure": "with-output", "steps": [
        {"id": "calc", "type": "set", "set": {"n": 21}},
        {"id": "done", "type": "succeed", "output": {"doubled": "{{ n * 2 }}", "note": "n={{ n }}"}}]}
    out, _ = await run_definition(definition)
    assert out["status"] == "succeeded"
    assert out["output"] == {"doubled": 42, "note": "n=21"} == out["result"]
    assert step(out, "done")["output"] == {"doubled": 42, "note": "n=21"}
    out, _ = await run("endings", {"mode": "ok"})  # no output: null
    assert out["output"] is None
    out, _ = await run("endings", {"mode": "handoff"})  # a handoff's result is not an output
    assert out["output"] is None and out["result"]["team"] == "billing"


async def test_handoff():
    out, _ = await run("endings", {"mode": "handoff"})
    assert out["status"] == "handed_off" and out["error"] is None
    assert out["result"] == {"reason": "customer wants handoff", "team": "billing"}
    assert step(out, "human")["status"] == "succeeded"
    assert step(out, "human")["output"] == {"reason": "customer wants handoff", "team": "billing"}


async def test_fail_step():
    out, _ = await run("endings", {"mode": "fail"})
    assert out["status"] == "failed"
    assert out["error"] == {"name": "refund_refused", "step": "broken", "message": "mode was fail"}
    assert step(out, "broken")["status"] == "failed"


async def test_invalid_input_is_rejected_before_running():
    with pytest.raises(ValueError, match="invalid --input"):
        await run("endings", {})


# ---- the command line (spec §9) --------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_run_json_success(tmp_path):
    mock = tmp_path / "mocks.yaml"
    mock.write_text(json.dumps({"find": ORDER}))
    res = cli("run", str(PROCS / "catching.yaml"), "--mock", str(mock), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert set(report) == {"status", "error", "output", "steps", "messages", "vars"}
    assert report["status"] == "succeeded" and report["error"] is None and report["output"] is None
    assert report["steps"] == [
        {"id": "find", "status": "succeeded", "attempts": 1,
         "output": {"id": 1001, "name": "#1001", "total": "150.00", "currency": "USD"}},
        {"id": "found", "status": "succeeded", "attempts": 1, "output": "found 1001"},
    ]
    assert report["messages"] == ["found 1001"]
    assert report["vars"]["order"]["id"] == 1001


def test_cli_run_json_shows_the_succeed_output():
    res = cli("run", str(PROCS / "with-output.yaml"), "--input", '{"n": 21}', "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "succeeded" and report["output"] == {"doubled": 42, "note": "n=21"}
    assert report["steps"][-1] == {"id": "done", "status": "succeeded", "attempts": 0,
                                   "output": {"doubled": 42, "note": "n=21"}}


def test_cli_run_failure_exit_1_and_handoff_exit_0(tmp_path):
    res = cli("run", str(PROCS / "endings.yaml"), "--input", '{"mode": "fail"}', "--json")
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "failed"
    assert report["error"]["name"] == "refund_refused" and report["error"]["step"] == "broken"
    res = cli("run", str(PROCS / "endings.yaml"), "--input", '{"mode": "handoff"}')
    assert res.returncode == 0, res.stderr
    assert "status: handed_off" in res.stdout
    assert "human: succeeded" in res.stdout


def test_cli_run_decide_and_answer_flags():
    res = cli("run", str(PROCS / "approval.yaml"), "--input", '{"amount": 5}',
              "--decide", "approve=approved", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["vars"]["decision"]["outcome"] == "approved"
    res = cli("run", str(PROCS / "ask.yaml"), "--answer", "code=x", "--answer", "code=4321",
              "--answer", "qty=3", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["messages"][-1] == "Order 4321 x4"


def test_cli_run_usage_and_validation_errors_exit_2(tmp_path):
    res = cli("run", str(PROCS / "endings.yaml"), "--input", "not json", "--json")
    assert res.returncode == 2 and "flywheel run:" in res.stderr
    res = cli("run", str(PROCS / "endings.yaml"), "--input", "{}", "--json")
    assert res.returncode == 2 and "invalid --input" in res.stderr
    res = cli("run", str(PROCS / "approval.yaml"), "--input", '{"amount": 1}', "--decide", "approve=maybe")
    assert res.returncode == 2 and "approved or rejected" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("procedure: bad-one\nsteps:\n  - id: a\n    type: mesage\n    text: hi\n")
    res = cli("run", str(bad), "--json")
    assert res.returncode == 2
    assert res.stderr.startswith(f"{bad}:4:11: a: unknown step type 'mesage'")
    assert res.stdout == ""


def test_cli_validate_and_graph(tmp_path):
    res = cli("validate", *(str(p) for p in sorted(PROCS.glob("*.yaml"))))
    assert res.returncode == 0 and res.stdout == ""
    bad = tmp_path / "bad.yaml"
    bad.write_text("procedure: bad-one\nsteps:\n  - id: a\n    type: message\n    text: hi\n"
                   "  - id: b\n    type: switch\n    cases: [{when: 'x > 1', goto: a}]\n    default: nowhere\n")
    res = cli("validate", str(bad), str(PROCS / "basics.yaml"))
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines and all(line.startswith(f"{bad}:") for line in lines)
    assert any(line.startswith(f"{bad}:9:14: b: target 'nowhere' is not a step") for line in lines), lines
    assert any(line.startswith(f"{bad}:8:") and ": b: 'x' in 'x > 1' is not set" in line for line in lines), lines
    res = cli("graph", str(PROCS / "basics.yaml"))
    assert res.returncode == 0
    assert res.stdout.startswith("flowchart")
    assert "greet" in res.stdout and "never_runs" in res.stdout


async def test_for_each_failing_item_cancels_its_siblings_and_on_error_catches():
    out, _ = await run("foreach-fail")
    assert out["status"] == "succeeded"
    each = step(out, "each")
    assert each["status"] == "caught" and each["error"]["name"] == "expression"
    assert each["error"]["step"] == "invert"
    invert = steps(out, "invert")
    assert [(s["path"], s["status"]) for s in invert] == [("each[0]/", "failed")]
    # item 1 was still sleeping when item 0 failed: it is cancelled, never reaching `invert`
    assert [(s["path"], s["status"]) for s in steps(out, "nap")] == [("each[0]/", "skipped"),
                                                                      ("each[1]/", "cancelled")]
    assert out["messages"] == ["recovered"]
    assert "results" not in out["vars"]

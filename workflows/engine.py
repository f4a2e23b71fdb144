"""The procedure interpreter: walks a validated version-1 definition step by step.

Deterministic orchestration only. Pure steps (set, switch, templates, conditions) are evaluated
here; every step that touches the outside world is an activity called by name. Time comes from
`workflow.now()`, waits from `workflow.sleep` / `workflow.wait_condition`.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from procedures.durations import MAX_DURATION, MAX_DURATION_TEXT, parse_duration
    from procedures.errors import ProcedureError
    from procedures.expressions import (
        ExpressionError, evaluate, names_used, render, template_expressions, to_json_value, to_text)
    from procedures.inputs import validate_inputs
    from procedures.regexes import MAX_MATCHED, regex_problem

from workflows import types as T
from workflows.search import run_search_attributes
from workflows.state import Finish, Scope, StepFailure, StepRecord, approval_details, call_refs, one_line_values

CURRENT_STEP = SearchAttributeKey.for_keyword("CurrentStep")
RUN_STATUS = SearchAttributeKey.for_keyword("RunStatus")

NOT_RETRYABLE = ["validation", "expression", "connector"]
DEFAULT_TIMEOUT = "30s"
DEFAULT_RETRY = {"max_attempts": 3, "initial_interval": "1s", "backoff": 2.0, "max_interval": "30s"}
APPROVAL_OUTCOMES = ("approved", "rejected")
END = object()  # a target meaning "this block is finished"
# Durations are at most procedures.durations.MAX_DURATION (the validator's maximum). Checked
# here as well, so a value that slipped through (an older definition, a template, a `wait
# until` far ahead) fails its step cleanly instead of overflowing the workflow's clock
# arithmetic, which would fail the workflow task again on every retry.
# `call` nesting: a child of a child ... at most this deep (recursion that the step budget alone
# would let run for a long time, one workflow per level).
MAX_CALL_DEPTH = 10
# Run-ending errors `on_error` cannot catch (a child's propagate to its caller unchanged).
UNCATCHABLE = ("step_budget", "call_depth")
TERMINAL_TYPES = ("handoff", "succeed", "fail")
EMAIL = re.compile(r"[^@\s,;<>\"']+@[^@\s,;<>\"']+")
# workflow.patched ids: behaviour changes that add or remove commands. A history recorded
# before the change replays on the old path (runs in flight, closed runs being queried).
PATCH_PIN_CALLEES = "pin-callees-at-start"
PATCH_SKIPPED_END = "skipped-end-goes-on"
PATCH_APPROVAL_SUBJECT = "approval-hash-covers-details"
# Templated step durations (`timeout`, `reminders`, `escalate[].after`) and `ask.pattern` are
# rendered; before, they were read as written (a templated duration failed its step).
PATCH_RENDERED_DURATIONS = "templated-durations-rendered"
PATCH_RENDERED_PATTERN = "templated-pattern-rendered"
# An approval message's interpolated values are put on one line (they cannot add lines).
PATCH_APPROVAL_ONE_LINE = "approval-message-values-one-line"


def is_template(value: Any) -> bool:
    """A string with `{{ }}` parts (the validator's test for a templated literal-or-template field)."""
    return isinstance(value, str) and "{{" in value


def template_names(value: Any) -> set[str]:
    """Root names read by the templates anywhere inside `value`."""
    if isinstance(value, str):
        names: set[str] = set()
        for expr in template_expressions(value):
            names |= names_used(expr)
        return names
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return set().union(*(template_names(v) for v in items)) if items else set()


def canonical_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Interpreter:
    """State and step handlers of one run. The workflow class exposes it to queries/updates."""

    def __init__(self, run: T.RunInput) -> None:
        self.run = run
        self.definition = run.definition
        self.defaults = run.definition.get("defaults") or {}
        self.status = T.RUNNING
        self.active: list[StepRecord] = []  # steps started and not yet ended, innermost last
        self.steps: list[StepRecord] = []
        self.messages: list[str] = []
        self.error: dict | None = None
        self.result: Any = None
        self.pending: dict[str, dict] = {}
        self.used_links: set[str] = set()
        self.answers: dict[str, list[dict]] = {}
        self.visits: dict[str, int] = {}
        self.executed = 0  # steps run here and in the procedures this run called
        self.pins: dict[str, int] = dict(run.pins or {})
        self._shown_step: str | None = None
        self._shown_status = T.RUNNING
        self.scope = Scope(vars={
            "inputs": run.inputs,
            "conversation": run.conversation,
            "run": {"id": run.run_id, "procedure": run.procedure_id, "version": run.version,
                    "started_at": workflow.info().start_time.isoformat()},
        })

    @property
    def current_step(self) -> str | None:
        """The step running now: the innermost started one (a branch's step inside `parallel`,
        the step whose activity is being retried, the step a run waits at)."""
        return self.active[-1].id if self.active else None

    @property
    def output(self) -> Any:
        """The `output` of the `succeed` step that ended the run (None otherwise)."""
        return self.result if self.status == T.SUCCEEDED else None

    # ---- entry ------------------------------------------------------------------------
    async def execute(self) -> dict[str, Any]:
        try:
            await self.pin_callees()
            await self.run_block(self.definition["steps"], self.scope, "")
            self.status = T.SUCCEEDED
        except Finish as fin:
            self.status, self.error, self.result = fin.status, fin.error, fin.result
        except StepFailure as err:
            self.status, self.error = T.FAILED, err.as_dict()
        except asyncio.CancelledError:
            self.status = T.CANCELLED
            self._show(force=True)
            raise
        self.pending.clear()
        self.active.clear()
        self._show(force=True)
        await self.notify({"kind": "finished", "status": self.status, "error": self.error,
                           "result": self.result})
        return self.outcome()

    # ---- the conversation this run belongs to -------------------------------------------
    async def notify(self, event: dict[str, Any]) -> None:
        """Tell the parent conversation (if any) what happened: a message, a wait, the end."""
        parent = self.run.conversation.get("workflow_id")
        if not parent:
            return
        event = {"run_id": self.run.run_id, "procedure_id": self.run.procedure_id, **event}
        try:
            await workflow.get_external_workflow_handle(parent).signal(T.PROCEDURE_EVENT, event)
        except Exception as err:  # the conversation has closed: the run goes on without it
            workflow.logger.warning("conversation %s did not take %s: %s", parent, event["kind"], err)

    async def waiting(self, sid: str, kind: str) -> None:
        await self.notify({"kind": "waiting", "step_id": sid, "wait": kind})

    def outcome(self) -> dict[str, Any]:
        from workflows.state import redact
        return {"status": self.status, "error": self.error, "result": self.result,
                "output": self.output, "messages": list(self.messages),
                "vars": redact(self.public_vars()), "steps": [s.as_dict() for s in self.steps],
                "executed": self.executed}

    def public_vars(self) -> dict[str, Any]:
        return to_json_value({k: v for k, v in self.scope.vars.items()})

    # ---- search attributes ------------------------------------------------------------
    def _show(self, force: bool = False) -> None:
        """Upsert RunStatus and CurrentStep when they changed (one command, no round trip).

        CurrentStep names the step a run is *waiting* at (approval, ask, wait, call) and is
        empty otherwise: steps that take milliseconds are not worth an indexed write each,
        and an activity's retries show as the pending activity in the Temporal UI.
        """
        waiting = [p["step_id"] for p in self.pending.values()] if self.status == T.RUNNING else []
        status = T.WAITING if waiting else self.status
        step = waiting[-1] if waiting else ""
        updates = []
        if step != (self._shown_step or ""):
            updates.append(CURRENT_STEP.value_set(step))
            self._shown_step = step
        if status != self._shown_status:
            updates.append(RUN_STATUS.value_set(status))
            self._shown_status = status
        if updates:
            workflow.upsert_search_attributes(updates)

    # ---- blocks -----------------------------------------------------------------------
    async def run_block(self, steps: list[dict], scope: Scope, path: str) -> None:
        """Run a list of steps from the first until one ends the block."""
        index = {s["id"]: i for i, s in enumerate(steps)}
        i = 0
        while 0 <= i < len(steps):
            target = await self.run_step(steps[i], scope, path)
            if target is END:
                return
            i = i + 1 if target is None else index[target]

    async def run_step(self, step: dict, scope: Scope, path: str) -> Any:
        """Run one step; returns None (go on in the list), a step id, or END."""
        sid, kind = step["id"], step["type"]
        self.executed += 1
        if self.executed > self.run.step_budget:
            where = (f"the {self.run.step_budget} steps its caller had left" if self.run.parent
                     else f"{self.run.step_budget} steps")
            raise Finish(T.FAILED, error={
                "name": "step_budget", "step": sid,
                "message": f"the run executed more than {where}; "
                           "check for a loop or a recursive call without exit"})
        record = StepRecord(id=sid, type=kind, status="running", path=path,
                            started_at=workflow.now().isoformat())
        self.steps.append(record)
        self.active.append(record)
        try:
            if "if" in step and not self.truthy(step["if"], scope, sid):
                record.status = "skipped"
                return self.skipped(step)
            handler: Callable[..., Awaitable[Any]] = getattr(self, f"step_{kind}")
            output, target = await handler(step, scope, record)
            record.status, record.output = "succeeded", output
            if step.get("save_as"):
                scope.save(step["save_as"], to_json_value(output))
            return target if target is not None else self.after(step)
        except StepFailure as err:
            err.step_id = err.step_id or sid
            record.status = "failed"
            record.error = err.as_dict()
            if err.attempts:
                record.attempts = err.attempts
            for handler_spec in step.get("on_error") or []:
                names = handler_spec.get("errors") or []
                if err.name in names or "any" in names:
                    record.status = "caught"
                    return handler_spec["goto"]
            raise
        except Finish as fin:  # succeed/fail (or one nested in this step) ends the run here
            if record.status == "running":
                record.status = "failed" if fin.status == T.FAILED else "succeeded"
                record.error = fin.error if fin.status == T.FAILED else None
            raise
        except asyncio.CancelledError:  # e.g. the other branches of a failed parallel step
            if record.status == "running":
                record.status = "cancelled"
            raise
        finally:
            record.ended_at = workflow.now().isoformat()
            self.active.remove(record)

    @staticmethod
    def after(step: dict) -> Any:
        """Where the flow goes after a step that ran: `end`, its `next`, or the next in the list."""
        if step.get("end"):
            return END
        return step.get("next")

    @staticmethod
    def skipped(step: dict) -> Any:
        """Where the flow goes after a step whose `if` was false, as procedures/flow.py models it:
        a step with `end: true` (or a terminal step) goes on to the next in the list (its `end`
        applies only when it ran); any other step to its `next`, else the next in the list. A
        `switch` has no use for `end` (it always jumps): skipped, it goes to its `next` too."""
        if step.get("end"):
            if not workflow.patched(PATCH_SKIPPED_END):
                return END  # histories recorded before the fix ended the run here
            if step["type"] != "switch":
                return None
        if step["type"] in TERMINAL_TYPES:
            return None
        return step.get("next")

    # ---- expressions ------------------------------------------------------------------
    def eval(self, expr: str, scope: Scope, sid: str) -> Any:
        try:
            return evaluate(expr, scope.vars, now=workflow.now)
        except ExpressionError as err:
            raise StepFailure("expression", f"cannot evaluate `{expr}`: {err.reason}", sid)

    def render(self, value: Any, scope: Scope, sid: str) -> Any:
        try:
            return to_json_value(render(value, scope.vars, now=workflow.now))
        except ExpressionError as err:
            raise StepFailure("expression", str(err), sid)

    def text(self, value: Any, scope: Scope, sid: str) -> str:
        """A template field rendered as text: a single `{{ }}` too is written as docs/decisions §2
        says for templates (`null` -> empty, `true`/`false`, JSON for objects and lists)."""
        return to_text(self.render(value, scope, sid))

    def truthy(self, expr: str, scope: Scope, sid: str) -> bool:
        return bool(self.eval(expr, scope, sid))

    def addresses(self, templates: Any, scope: Scope, sid: str, what: str) -> list[str]:
        """E-mail addresses from a list of templates (each may give one address or a list)."""
        found: list[str] = []
        for value in self.render(list(templates or []), scope, sid):
            for item in value if isinstance(value, list) else [value]:
                addr = to_text(item).strip().lower()
                if not addr:
                    continue
                if not EMAIL.fullmatch(addr) or len(addr) > 254:
                    raise StepFailure("validation", f"{sid}: {what} gave {addr[:80]!r}, not an e-mail address", sid)
                if addr not in found:
                    found.append(addr)
        return found

    def duration(self, value: Any, sid: str, what: str) -> timedelta:
        """A duration of the step (at most MAX_DURATION), or the step fails with `validation`."""
        try:
            delay = parse_duration(str(value))
        except ProcedureError as err:
            raise StepFailure("validation", f"{sid}: {what}: {err.message[:200]}", sid) from None
        except (OverflowError, ValueError):  # absurd numbers
            raise StepFailure("validation", f"{sid}: {what} {str(value)[:80]!r} is longer than "
                              f"the longest allowed, {MAX_DURATION_TEXT}", sid) from None
        if delay > MAX_DURATION:
            raise StepFailure("validation", f"{sid}: {what} {value} is longer than the longest "
                              f"allowed, {MAX_DURATION_TEXT}", sid)
        return delay

    def step_duration(self, value: Any, scope: Scope | None, sid: str, what: str) -> tuple[timedelta, str]:
        """A step's duration field (`timeout`, `reminders[i]`, `escalate[i].after`) and its text:
        a literal, or a template rendered in the step's scope and then parsed like a literal (an
        invalid or too long result fails the step with `validation` naming `what`)."""
        if scope is not None and is_template(value) and workflow.patched(PATCH_RENDERED_DURATIONS):
            value = self.text(value, scope, sid).strip()
        return self.duration(value, sid, what), str(value)

    # ---- activities -------------------------------------------------------------------
    def activity_options(self, step: dict, scope: Scope | None = None) -> dict[str, Any]:
        """Timeout and retry policy of an activity; `scope` renders a templated step `timeout`
        (`defaults` and `retry` are literal: the policy is fixed before any step runs)."""
        sid = step["id"]
        retry = {**DEFAULT_RETRY, **(self.defaults.get("retry") or {}), **(step.get("retry") or {})}
        policy = RetryPolicy(
            initial_interval=self.duration(retry["initial_interval"], sid, "retry initial_interval"),
            backoff_coefficient=float(retry["backoff"]),
            maximum_interval=self.duration(retry["max_interval"], sid, "retry max_interval"),
            maximum_attempts=int(retry["max_attempts"]),
            non_retryable_error_types=NOT_RETRYABLE + list(retry.get("non_retryable") or []),
        )
        timeout, _ = self.step_duration(step.get("timeout") or self.defaults.get("timeout") or DEFAULT_TIMEOUT,
                                        scope, sid, "timeout")
        return {"start_to_close_timeout": timeout, "retry_policy": policy}

    async def call_activity(self, name: str, payload: dict, step: dict, record: StepRecord,
                            options: dict[str, Any] | None = None) -> dict:
        options = options or self.activity_options(step)
        try:
            out = await workflow.execute_activity(name, payload, **options)
        except ActivityError as err:
            raise self.failure_from(err, step["id"], options["retry_policy"].maximum_attempts)
        record.attempts = int(out.get("attempt", 1))
        return out

    @staticmethod
    def failure_from(err: ActivityError | ChildWorkflowError, sid: str, max_attempts: int) -> StepFailure:
        cause = err.cause
        if isinstance(cause, ApplicationError):
            details = cause.details[0] if cause.details else {}
            attempts = details.get("attempt") if isinstance(details, dict) else None
            return StepFailure(cause.type or "connector", cause.message, sid, attempts or max_attempts)
        if isinstance(cause, TemporalTimeoutError):
            return StepFailure("timeout", f"{sid}: no answer within the step's timeout", sid, max_attempts)
        return StepFailure("connector", f"{sid}: {cause or err}", sid, max_attempts)

    def idempotency_key(self, sid: str, path: str) -> str:
        base = f"{self.run.tenant_id}:{self.run.run_id}:{path}{sid}"
        self.visits[base] = self.visits.get(base, 0) + 1
        n = self.visits[base]
        return base if n == 1 else f"{base}:{n}"

    async def connector_step(self, step: dict, scope: Scope, record: StepRecord, write: bool) -> tuple:
        sid = step["id"]
        options = self.activity_options(step, scope)
        payload = {
            "tenant_id": self.run.tenant_id, "run_id": self.run.run_id, "step_id": sid,
            "connector": step["connector"], "operation": step["operation"],
            "params": self.render(step.get("params") or {}, scope, sid),
            "assign": step.get("assign"), "dry_run": self.run.dry_run,
            "idempotency_key": self.idempotency_key(sid, record.path) if write else None,
            "timeout_s": options["start_to_close_timeout"].total_seconds(),
        }
        out = await self.call_activity(T.CALL_CONNECTOR, payload, step, record, options)
        self.apply_assign(out, scope)
        return out.get("result"), None

    def apply_assign(self, out: dict, scope: Scope) -> None:
        for name, value in (out.get("assigned") or {}).items():
            scope.save(name, value)

    # ---- step handlers: I/O -----------------------------------------------------------
    async def step_lookup(self, step, scope, record):
        return await self.connector_step(step, scope, record, write=False)

    async def step_action(self, step, scope, record):
        return await self.connector_step(step, scope, record, write=True)

    async def step_http(self, step, scope, record):
        sid = step["id"]
        fields = ("method", "url", "headers", "query", "body", "auth", "expect_status", "extract")
        request = {k: step[k] for k in fields if k in step}
        names = template_names(request) - {"secrets"}
        options = self.activity_options(step, scope)
        payload = {
            "tenant_id": self.run.tenant_id, "run_id": self.run.run_id, "step_id": sid,
            "request": request, "assign": step.get("assign"), "dry_run": self.run.dry_run,
            "scope": to_json_value({n: scope.vars[n] for n in names if n in scope.vars}),
            "secret_names": list(self.definition.get("secrets") or []),
            "timeout_s": options["start_to_close_timeout"].total_seconds(),
        }
        out = await self.call_activity(T.CALL_HTTP, payload, step, record, options)
        self.apply_assign(out, scope)
        return out.get("result"), None

    async def send(self, text: str, sid: str, record: StepRecord | None, key: str | None = None) -> None:
        """Say `text`; `key` is the pending `ask` this message asks (its answer addresses it)."""
        self.messages.append(text)
        if self.run.conversation.get("workflow_id"):
            # In a conversation, the conversation records and delivers what the procedure says.
            await self.notify({"kind": "message", "step_id": sid, "text": text})
            return
        payload = {"tenant_id": self.run.tenant_id, "run_id": self.run.run_id, "step_id": sid,
                   "seq": len(self.messages), "text": text, "conversation": self.run.conversation,
                   "dry_run": self.run.dry_run, "key": key or sid}
        step = {"id": sid, "timeout": "30s", "retry": {"max_attempts": 10}}
        await self.call_activity(T.SEND_MESSAGE, payload, step, record or StepRecord(sid, "message", "", ""))

    async def step_message(self, step, scope, record):
        text = self.text(step["text"], scope, step["id"])
        await self.send(text, step["id"], record)
        return text, None

    # ---- step handlers: pure ----------------------------------------------------------
    async def step_set(self, step, scope, record):
        values = {}
        for name, value in (step.get("set") or {}).items():
            values[name] = self.render(value, scope, step["id"]) if isinstance(value, (str, dict, list)) else value
            scope.save(name, values[name])
        return values, None

    async def step_switch(self, step, scope, record):
        for case in step.get("cases") or []:
            if self.truthy(case["when"], scope, step["id"]):
                return {"matched": case["when"]}, case["goto"]
        return {"matched": "default"}, step["default"]

    async def step_succeed(self, step, scope, record):
        output = self.render(step.get("output"), scope, step["id"])
        record.output = output
        raise Finish(T.SUCCEEDED, result=output)

    async def step_fail(self, step, scope, record):
        sid = step["id"]
        message = self.text(step.get("message") or "the procedure failed", scope, sid)
        name = self.text(step.get("error") or "failed", scope, sid).strip() or "failed"
        raise Finish(T.FAILED, error={"name": name, "step": sid, "message": message})

    async def step_handoff(self, step, scope, record):
        sid = step["id"]
        team = self.text(step["team"], scope, sid) if step.get("team") is not None else None
        result = {"reason": self.text(step.get("reason") or "", scope, sid), "team": team or None}
        record.output = result
        record.status = "succeeded"
        raise Finish(T.HANDED_OFF, result=result)

    # ---- step handlers: waits ---------------------------------------------------------
    # A pending wait is keyed by the step's path and id (`each[1]/approve`): the same step of
    # two concurrent for_each items or parallel branches waits twice, each addressable.
    @staticmethod
    def wait_key(sid: str, record: StepRecord) -> str:
        return f"{record.path}{sid}"

    async def step_wait(self, step, scope, record):
        sid = step["id"]
        key = self.wait_key(sid, record)
        if "for" in step:
            delay = self.duration(self.render(step["for"], scope, sid), sid, "`for`")
        else:
            text = self.text(step["until"], scope, sid)
            try:
                until = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise StepFailure("validation", f"{sid}: `until` gave {text[:80]!r}, not an ISO-8601 time", sid)
            if until.tzinfo is None:
                raise StepFailure("validation", f"{sid}: `until` time {text!r} needs a UTC offset", sid)
            delay = max(until - workflow.now(), timedelta(0))
            if delay > MAX_DURATION:  # `now + delay` could overflow (year 9999) and wedge the task
                raise StepFailure("validation", f"{sid}: `until` time {text!r} is more than "
                                  f"{MAX_DURATION_TEXT} away", sid)
        self.pending[key] = {"kind": "wait", "key": key, "step_id": sid, "path": record.path,
                             "until": (workflow.now() + delay).isoformat()}
        self._show()
        try:
            if delay > timedelta(0):
                await self.waiting(key, "wait")
                await workflow.sleep(delay)
        finally:
            self.pending.pop(key, None)
            self._show()
        return {"waited_s": delay.total_seconds()}, None

    async def step_ask(self, step, scope, record):
        sid = step["id"]
        key = self.wait_key(sid, record)
        text = self.text(step["text"], scope, sid)
        max_attempts = int(step.get("max_attempts") or 3)
        delay, timeout = self.step_duration(step["timeout"], scope, sid, "timeout")
        deadline = workflow.now() + delay
        pattern = self.ask_pattern(step, scope, sid)
        self.pending[key] = {"kind": "ask", "key": key, "step_id": sid, "path": record.path, "text": text,
                             "attempt": 1, "max_attempts": max_attempts,
                             "pattern": pattern, "schema": step.get("schema")}
        self.answers[key] = []
        try:
            await self.send(text, sid, record, key)
            await self.waiting(key, "ask")
            for attempt in range(1, max_attempts + 1):
                self.pending[key]["attempt"] = attempt
                self._show()
                remaining = deadline - workflow.now()
                try:
                    if remaining <= timedelta(0):
                        raise asyncio.TimeoutError
                    await workflow.wait_condition(lambda: bool(self.answers[key]), timeout=remaining)
                except asyncio.TimeoutError:
                    if step.get("on_timeout"):
                        return {"outcome": "timed_out"}, step["on_timeout"]
                    raise StepFailure("ask_timeout", f"{sid}: no answer within {timeout}", sid)
                answer = self.answers[key].pop(0)
                record.attempts = attempt
                if answer["ok"]:
                    return answer["value"], None
                if attempt < max_attempts:
                    self.pending[key]["attempt"] = attempt + 1  # the re-ask is the next attempt's
                    await self.send(f"{answer['problem']} {text}", sid, record, key)
                    await self.waiting(key, "ask")
            raise StepFailure("validation", f"{sid}: no valid answer after {max_attempts} attempts", sid)
        finally:
            self.pending.pop(key, None)
            self.answers.pop(key, None)
            self._show()

    def ask_pattern(self, step: dict, scope: Scope, sid: str) -> str | None:
        """The regular expression an answer must match: `pattern` as written, or rendered when it
        is a template (the rendered text is the expression). A pattern that does not compile, or
        renders empty, fails the step with `validation` before the question is asked."""
        pattern = step.get("pattern")
        if pattern is None:
            return None
        if is_template(pattern):
            if not workflow.patched(PATCH_RENDERED_PATTERN):
                return pattern  # a run that asked before: its answers were matched against the text as written
            pattern = self.text(pattern, scope, sid)
            if not pattern.strip():
                raise StepFailure("validation", f"{sid}: pattern {step['pattern'][:80]!r} rendered empty text; "
                                  "it would accept only an empty answer (give a default, e.g. "
                                  "{{ default(x, \".+\") }})", sid)
        if not isinstance(pattern, str):
            raise StepFailure("validation", f"{sid}: pattern must be text, not {type(pattern).__name__}", sid)
        problem = regex_problem(pattern)
        if problem is not None:  # a rendered pattern, or one published before the check existed
            raise StepFailure("validation", f"{sid}: pattern {pattern[:80]!r}: {problem[1][:200]}", sid)
        return pattern

    def check_answer(self, key: str, text: str) -> dict[str, Any]:
        """Validate an answer against the pending ask's pattern/schema (pure)."""
        pend = self.pending[key]
        if pend.get("pattern"):
            # bounded text: no answer is long enough to make even a slow pattern stall the task
            if len(text.strip()) <= MAX_MATCHED and re.fullmatch(pend["pattern"], text.strip()):
                return {"ok": True, "value": text.strip()}
            return {"ok": False, "problem": "Sorry, that does not look right."}
        schema = pend.get("schema")
        if schema:
            value: Any = text.strip()
            if schema.get("type") not in (None, "string"):
                try:
                    value = json.loads(value)
                except ValueError:
                    return {"ok": False, "problem": "Sorry, I could not read that."}
            problems = validate_inputs(schema, value)
            if problems:
                return {"ok": False, "problem": "Sorry, that does not look right."}
            return {"ok": True, "value": value}
        return {"ok": True, "value": text}

    async def step_approval(self, step, scope, record):
        sid = step["id"]
        key = self.wait_key(sid, record)
        approvers = self.addresses(step["approvers"], scope, sid, "approvers")
        if not approvers:
            raise StepFailure("validation", f"{sid}: approvers gave no e-mail address", sid)
        quorum = int(step.get("quorum") or 1)
        message = self.approval_message(step, scope, sid)
        started = workflow.now()
        delay, timeout = self.step_duration(step["timeout"], scope, sid, "timeout")
        deadline = started + delay
        reminders = [(started + self.step_duration(d, scope, sid, f"reminders[{i}]")[0], "reminder", None)
                     for i, d in enumerate(step.get("reminders") or [])]
        tiers = [(started + self.step_duration(e["after"], scope, sid, f"escalate[{i}].after")[0], "escalate",
                  self.addresses(e.get("to"), scope, sid, "escalate to"))
                 for i, e in enumerate(step.get("escalate") or [])]
        # What the approver is shown, and so what the request hash (bound into every link) covers.
        details = approval_details(self.public_vars_of(scope))
        subject = {"tenant": self.run.tenant_id, "run": self.run.run_id, "procedure": self.run.procedure_id,
                   "version": self.run.version, "step": key, "message": message, "details": details}
        if not workflow.patched(PATCH_APPROVAL_SUBJECT):
            # A run that mailed its links before the hash covered the details (and the path):
            # the hash its links carry, recomputed on replay, stays what it was.
            subject = {k: v for k, v in subject.items() if k != "details"} | {"step": sid}
        visit = f"approval:{subject['step']}"
        subject["visit"] = self.visits.get(visit, 0)
        self.visits[visit] = subject["visit"] + 1
        pend = {"kind": "approval", "key": key, "step_id": sid, "path": record.path,
                "approvers": approvers, "quorum": quorum, "message": message, "details": details,
                "request_hash": canonical_hash(subject), "expires_at": deadline.isoformat(),
                "decisions": {}}
        self.pending[key] = pend
        events = sorted(reminders + tiers, key=lambda e: e[0])
        try:
            await self.mail(pend, record, "request", approvers)
            await self.waiting(key, "approval")
            outcome = await self.await_decision(pend, deadline, events, record)
        finally:
            self.pending.pop(key, None)
            self._show()
        result = {"outcome": outcome["outcome"], "by": outcome.get("by"), "at": outcome.get("at"),
                  "comment": outcome.get("comment", ""), "decisions": list(pend["decisions"].values())}
        if outcome["outcome"] == "rejected":
            if step.get("on_reject"):
                return result, step["on_reject"]
            self.save_if(step, scope, result)
            raise StepFailure("approval_rejected", f"{sid}: rejected by {result['by']}", sid)
        if outcome["outcome"] == "timed_out":
            if step.get("on_timeout"):
                return result, step["on_timeout"]
            self.save_if(step, scope, result)
            raise StepFailure("approval_timeout", f"{sid}: no decision within {timeout}", sid)
        return result, None

    def approval_message(self, step: dict, scope: Scope, sid: str) -> str:
        """The approval's `message` as text, each interpolated value on one line: a value quoting
        customer text cannot add lines to the request (a fake `Approve: <url>` line in the mail).
        Line breaks the author wrote in the template stay."""
        template = step.get("message") or "Approval requested"
        message = self.text(template, scope, sid)
        if not is_template(template):
            return message
        flat = self.text(template, Scope(vars=one_line_values(scope.vars)), sid)
        # a run that mailed its request before: its links carry the hash of the message as it was
        if flat != message and workflow.patched(PATCH_APPROVAL_ONE_LINE):
            return flat
        return message

    def public_vars_of(self, scope: Scope) -> dict[str, Any]:
        return to_json_value(dict(scope.vars))

    @staticmethod
    def save_if(step: dict, scope: Scope, result: Any) -> None:
        if step.get("save_as"):
            scope.save(step["save_as"], result)

    async def await_decision(self, pend, deadline, events, record) -> dict:
        def settled() -> dict | None:
            decisions = list(pend["decisions"].values())
            rejected = [d for d in decisions if d["decision"] == "rejected"]
            if rejected:
                return {"outcome": "rejected", **rejected[0]}
            approved = [d for d in decisions if d["decision"] == "approved"]
            if len(approved) >= pend["quorum"]:
                return {"outcome": "approved", **approved[-1]}
            return None

        while True:
            self._show()
            wake = events[0][0] if events and events[0][0] < deadline else deadline
            try:
                await workflow.wait_condition(lambda: settled() is not None,
                                              timeout=max(wake - workflow.now(), timedelta(0)))
                return settled()
            except asyncio.TimeoutError:
                pass
            if wake == deadline and not (events and events[0][0] < deadline):
                return {"outcome": "timed_out", "by": None, "at": workflow.now().isoformat()}
            _, kind, added = events.pop(0)
            undecided = [a for a in pend["approvers"] if a not in pend["decisions"]]
            if kind == "reminder":
                await self.mail(pend, record, "reminder", undecided)
            else:
                added = [a for a in added if a not in pend["approvers"]]
                pend["approvers"].extend(added)
                await self.mail(pend, record, "escalation", added)

    async def mail(self, pend: dict, record: StepRecord, kind: str, recipients: list[str]) -> None:
        if not recipients:
            return
        payload = {"tenant_id": self.run.tenant_id, "run_id": self.run.run_id,
                   "workflow_id": workflow.info().workflow_id, "procedure_id": self.run.procedure_id,
                   "version": self.run.version, "step_id": pend["step_id"], "key": pend["key"],
                   "kind": kind, "recipients": recipients, "message": pend["message"],
                   "details": pend["details"], "request_hash": pend["request_hash"],
                   "expires_at": pend["expires_at"], "dry_run": self.run.dry_run,
                   "mail_key": f"{pend['request_hash']}:{kind}:{','.join(recipients)}"}
        await self.call_activity(T.SEND_APPROVAL_MAIL, payload,
                                 {"id": pend["step_id"], "timeout": "30s", "retry": {"max_attempts": 20}}, record)

    # ---- step handlers: structure -----------------------------------------------------
    async def step_parallel(self, step, scope, record):
        sid = step["id"]
        branches = step["branches"]
        scopes = {name: scope.child() for name in branches}
        tasks = {name: asyncio.ensure_future(self.run_block(steps, scopes[name], f"{record.path}{sid}.{name}/"))
                 for name, steps in branches.items()}
        try:
            done, _ = await asyncio.wait(list(tasks.values()), return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks.values():
                if task.done() and task.exception() is not None:
                    raise task.exception()
        finally:
            unfinished = [task for task in tasks.values() if not task.done()]
            for task in unfinished:
                task.cancel()
            # let the cancelled branches unwind (their step log records) before going on
            await asyncio.gather(*unfinished, return_exceptions=True)
        result = {name: dict(scopes[name].saved) for name in branches}
        for name in branches:
            for key, value in scopes[name].saved.items():
                scope.save(key, value)
        return result, None

    async def step_for_each(self, step, scope, record):
        sid = step["id"]
        items = self.eval(step["items"], scope, sid)
        if not isinstance(items, list):
            raise StepFailure("validation", f"{sid}: items gave {type(items).__name__}, not a list", sid)
        limit = int(step["max_items"])
        if len(items) > limit:
            raise StepFailure("validation", f"{sid}: {len(items)} items exceed max_items {limit}", sid)
        name = step.get("as") or "item"
        concurrency = max(1, int(step.get("max_concurrency") or 1))
        results: list[dict] = [{} for _ in items]

        async def one(i: int) -> None:
            child = scope.child(**{name: items[i]})
            await self.run_block(step["steps"], child, f"{record.path}{sid}[{i}]/")
            results[i] = dict(child.saved)

        for start in range(0, len(items), concurrency):
            batch = [asyncio.ensure_future(one(i)) for i in range(start, min(start + concurrency, len(items)))]
            try:
                await asyncio.gather(*batch)
            finally:  # one item failed: stop its siblings before the step's error is handled
                for task in batch:
                    if not task.done():
                        task.cancel()
                await asyncio.gather(*batch, return_exceptions=True)
        return results, None

    async def step_call(self, step, scope, record):
        sid, procedure = step["id"], step["procedure"]
        if self.run.depth >= MAX_CALL_DEPTH:
            raise Finish(T.FAILED, error={
                "name": "call_depth", "step": sid,
                "message": f"{sid}: calling {procedure} would nest calls more than {MAX_CALL_DEPTH} "
                           "deep; check for a recursive call without exit"})
        # An unversioned call runs the version that was the newest when the run started (pinned
        # by pin_callees); a procedure first published later resolves to its newest here.
        version = step.get("version") or self.pins.get(procedure)
        resolved = await self.call_activity(T.RESOLVE_PROCEDURE, {
            "tenant_id": self.run.tenant_id, "procedure_id": procedure,
            "version": version, "dry_run": self.run.dry_run,
        }, {"id": sid, "timeout": "30s"}, record)
        inputs = self.render(step.get("inputs") or {}, scope, sid)
        problems = validate_inputs(resolved["definition"].get("inputs"), inputs)
        if problems:
            raise StepFailure("validation", f"{sid}: inputs of {procedure}: {'; '.join(problems)}", sid)
        key = self.idempotency_key(sid, record.path).split(":", 2)[2].replace("/", ".").replace(":", "-")
        child_run = f"{self.run.run_id}.{key}"
        child = T.RunInput(
            tenant_id=self.run.tenant_id, run_id=child_run, procedure_id=procedure,
            version=resolved["version"], sha256=resolved["sha256"], definition=resolved["definition"],
            inputs=inputs, conversation=self.run.conversation, dry_run=self.run.dry_run,
            parent=workflow.info().workflow_id,
            # the child's steps count against this run's budget: it gets what is left of it
            step_budget=max(self.run.step_budget - self.executed, 0),
            pins=dict(self.pins), depth=self.run.depth + 1)
        child_id = T.workflow_id(self.run.tenant_id, procedure, child_run)
        wait_key = self.wait_key(sid, record)
        self.pending[wait_key] = {"kind": "call", "key": wait_key, "step_id": sid, "path": record.path,
                                  "procedure": procedure, "workflow_id": child_id}
        self._show()
        try:
            out = await workflow.execute_child_workflow(
                T.WORKFLOW_NAME, child, id=child_id, task_queue=workflow.info().task_queue,
                search_attributes=run_search_attributes(child, self.run.conversation.get("channel")),
            )
        finally:
            self.pending.pop(wait_key, None)
            self._show()
        self.executed += int(out.get("executed") or 0)
        self.messages.extend(out.get("messages") or [])
        if out["status"] == T.FAILED:
            err = out.get("error") or {}
            if err.get("name") == "step_budget":
                raise Finish(T.FAILED, error={
                    "name": "step_budget", "step": sid,
                    "message": f"the run and the procedures it called executed more than "
                               f"{self.run.step_budget} steps; check for a loop or a recursive call without exit"})
            if err.get("name") in UNCATCHABLE:
                raise Finish(T.FAILED, error={"name": err["name"], "step": sid, "message": err.get("message")})
            raise StepFailure(err.get("name", "failed"), f"{sid}: {procedure} failed: {err.get('message')}", sid)
        if out["status"] == T.HANDED_OFF:
            raise Finish(T.HANDED_OFF, result=out.get("result"))
        return {"status": out["status"], "vars": out.get("vars"), "result": out.get("result"),
                "output": out.get("output")}, None

    async def pin_callees(self) -> None:
        """Pin, when the run starts, the version every unversioned `call` (nested ones in the
        procedures it calls too) will run: publishing a callee later never changes this run
        (spec §8). A child inherits its caller's pins."""
        if self.run.pins is not None or not call_refs(self.definition["steps"]):
            return
        if not workflow.patched(PATCH_PIN_CALLEES):
            return  # a run started before pinning: its calls resolve when they run, as then
        out = await self.call_activity(T.PIN_PROCEDURES, {
            "tenant_id": self.run.tenant_id, "procedures": call_refs(self.definition["steps"]),
            "dry_run": self.run.dry_run,
        }, {"id": "pin_callees", "timeout": "30s", "retry": {"max_attempts": 10}},
            StepRecord("pin_callees", "call", "", ""))
        self.pins = {str(k): int(v) for k, v in (out.get("pins") or {}).items()}

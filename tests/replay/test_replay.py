"""Replay of committed interpreter histories (tests/replay/histories, made by record_histories.py).

Every history must replay on the current interpreter: a change that would break running
workflows fails here. A deliberately non-deterministic interpreter must fail to replay.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from runtime.workers import sandbox_runner
from workflows.engine import Interpreter
from workflows.procedure_run import ProcedureRunWorkflow
from workflows import types as T

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_histories_were_recorded():
    assert {p.stem for p in HISTORIES} >= {"refund-approved", "refund-rejected", "refund-original", "tour",
                                           "calls-pinned", "skipped-end", "foreach-approvals",
                                           "templated-durations", "templated-pattern", "approval-note",
                                           # recorded by the interpreter before the patches
                                           "calls-before-pinning", "skipped-end-before-fix",
                                           "templated-durations-before-rendering",
                                           "templated-pattern-before-rendering",
                                           "approval-note-before-one-line"}


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path):
    replayer = Replayer(workflows=[ProcedureRunWorkflow], workflow_runner=sandbox_runner())
    result = await replayer.replay_workflow(load(path))
    assert result.replay_failure is None


class SkipsMessages(Interpreter):
    """An interpreter that no longer sends `message` steps through an activity."""

    async def step_message(self, step, scope, record):
        text = str(self.render(step["text"], scope, step["id"]))
        self.messages.append(text)
        return text, None


@workflow.defn(name=T.WORKFLOW_NAME, sandboxed=False)
class ChangedWorkflow(ProcedureRunWorkflow):
    @workflow.run
    async def run(self, run: T.RunInput) -> dict:
        self.interp = SkipsMessages(run)
        return await self.interp.execute()


@pytest.mark.parametrize("name", ["refund-approved", "tour"])
async def test_a_nondeterministic_change_fails_to_replay(name: str):
    path = Path(__file__).parent / "histories" / f"{name}.json"
    replayer = Replayer(workflows=[ChangedWorkflow])
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(load(path))


class AlwaysRenders(Interpreter):
    """The interpreter rendering templated durations and patterns without `workflow.patched`."""

    def step_duration(self, value, scope, sid, what):
        if scope is not None and isinstance(value, str) and "{{" in value:
            value = self.text(value, scope, sid)
        return self.duration(value, sid, what), str(value)

    def ask_pattern(self, step, scope, sid):
        return self.text(step["pattern"], scope, sid) if step.get("pattern") else None


@workflow.defn(name=T.WORKFLOW_NAME, sandboxed=False)
class UnpatchedWorkflow(ProcedureRunWorkflow):
    @workflow.run
    async def run(self, run: T.RunInput) -> dict:
        self.interp = AlwaysRenders(run)
        return await self.interp.execute()


@pytest.mark.parametrize("name", ["templated-durations-before-rendering", "templated-pattern-before-rendering"])
async def test_rendering_without_the_patch_would_break_runs_in_flight(name: str):
    # a run that failed its templated timeout, or matched its templated pattern as written,
    # before the change: taking the new path on replay would give other commands
    path = Path(__file__).parent / "histories" / f"{name}.json"
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[UnpatchedWorkflow]).replay_workflow(load(path))


class RecordsHashes(Interpreter):
    """The current interpreter, noting the request hash of every approval mail it sends."""

    seen: list[str] = []

    async def mail(self, pend, record, kind, recipients):
        RecordsHashes.seen.append(pend["request_hash"])
        await super().mail(pend, record, kind, recipients)


@workflow.defn(name=T.WORKFLOW_NAME, sandboxed=False)
class HashWorkflow(ProcedureRunWorkflow):
    @workflow.run
    async def run(self, run: T.RunInput) -> dict:
        self.interp = RecordsHashes(run)
        return await self.interp.execute()


@pytest.mark.parametrize("name", ["approval-note-before-one-line", "approval-note"])
async def test_replay_recomputes_the_hash_the_mailed_links_carry(name: str):
    # the approval message of approval-note interpolates a value with a line break: a run that
    # mailed it before values were put on one line keeps its message, so its links stay valid
    import json
    history = load(Path(__file__).parent / "histories" / f"{name}.json")
    mailed = [json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
              for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
              and e.activity_task_scheduled_event_attributes.activity_type.name == T.SEND_APPROVAL_MAIL]
    assert len(mailed) == 1
    one_line = "\n" not in mailed[0]["message"]
    assert one_line == (name == "approval-note"), mailed[0]["message"]
    RecordsHashes.seen = []
    result = await Replayer(workflows=[HashWorkflow]).replay_workflow(history)
    assert result.replay_failure is None
    assert RecordsHashes.seen == [mailed[0]["request_hash"]]

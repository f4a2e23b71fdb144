"""Replay of committed Conversation workflow histories (tests/replay/conversations, made by
record_conversation_histories.py): an answer with a rating, a procedure that asks, a handoff on a
webhook channel, a thread reopened from its database history; a person closing while the
procedure waits (the run follows it to its end; or it hands off and the thread reopens handed
off), a phone call's end (at once, or once the procedure is done), retries of an earlier
session's message (on the closed thread: no reopen; after a reopen).

`conversation-closed-during-procedure-before-fix.json` is not made by the current workflow: the
workflow before the procedure-outlives-close patch recorded it (the same scenario; the run ended
at the close), as runs in flight then did; it replays on the old side of `workflow.patched`.

Every history must replay on the current workflow: a change that would break running
conversations fails here. A deliberately changed workflow must fail to replay.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from runtime.workers import sandbox_runner
from workflows import conversation_types as C
from workflows.conversation import ACTIVITY, ConversationWorkflow

HISTORIES = sorted((Path(__file__).parent / "conversations").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_conversation_histories_were_recorded():
    assert {p.stem for p in HISTORIES} >= {
        "conversation-answer", "conversation-procedure-ask", "conversation-handoff", "conversation-reopened",
        "conversation-closed-during-procedure", "conversation-closed-during-procedure-before-fix",
        "conversation-handoff-after-close", "conversation-call-ended", "conversation-call-ended-during-procedure",
        "conversation-retry-of-a-closed-thread", "conversation-retry-after-a-reopen"}
    assert all(f'"{C.WORKFLOW_NAME}"' in p.read_text() for p in HISTORIES)


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_conversation_history_replays(path: Path):
    replayer = Replayer(workflows=[ConversationWorkflow], workflow_runner=sandbox_runner())
    result = await replayer.replay_workflow(load(path))
    assert result.replay_failure is None


@workflow.defn(name=C.WORKFLOW_NAME, sandboxed=False)
class ProjectsInTheWorker(ConversationWorkflow):
    """A conversation that projects `api` conversations with a local activity, not a regular one."""

    @workflow.run
    async def run(self, inp: C.ConversationInput) -> dict:
        return await super().run(inp)

    async def _flush(self) -> None:
        while self.unrecorded:
            batch, self.unrecorded = self.unrecorded, []
            self.undelivered = []
            await workflow.execute_local_activity(C.RECORD_CONVERSATION, {"messages": batch}, **ACTIVITY)


@pytest.mark.parametrize("name", ["conversation-answer", "conversation-procedure-ask"])
async def test_a_nondeterministic_conversation_change_fails_to_replay(name: str):
    replayer = Replayer(workflows=[ProjectsInTheWorker])
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(load(Path(__file__).parent / "conversations" / f"{name}.json"))

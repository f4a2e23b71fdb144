"""The `decide` Update's validator is the last line of defence behind approval links: it refuses a
stale step, a non-approver, a reused link id, a changed request and a second decision."""
from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError

from tests_e2e_helpers import publish, start_run, wait_status
from workflows.types import Decision

PROC = """
procedure: two-approvers
steps:
  - id: approve
    type: approval
    approvers: [ann@example.com, ben@example.com]
    quorum: 2
    timeout: 1h
"""


def test_decide_validator_rejects_forged_or_stale_decisions(api, tenant, worker, e2e_settings):
    headers = tenant["headers"]
    publish(api, headers, PROC, "application/yaml")
    run = start_run(api, headers, "two-approvers", {})
    state = wait_status(api, headers, run["run_id"], "waiting")

    async def scenario() -> list[str]:
        client = await Client.connect(e2e_settings.temporal_address)
        handle = client.get_workflow_handle(run["workflow_id"])
        pending = await handle.query("pending_approval", "approve")
        good = dict(step_id="approve", decision="approved", request_hash=pending["request_hash"])
        errors = []
        for bad in (Decision(approver="eve@example.com", link_id="l1", **good),           # not an approver
                    Decision(approver="ann@example.com", link_id="l1", **{**good, "step_id": "other"}),
                    Decision(approver="ann@example.com", link_id="l1", **{**good, "request_hash": "x" * 64}),
                    Decision(approver="ann@example.com", link_id="l1", **{**good, "decision": "maybe"})):
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update("decide", bad)
            errors.append(str(info.value.cause))
        await handle.execute_update("decide", Decision(approver="ann@example.com", link_id="l1", **good))
        for again in (Decision(approver="ben@example.com", link_id="l1", **good),   # link id used
                      Decision(approver="ann@example.com", link_id="l2", **good)):  # ann decided
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update("decide", again)
            errors.append(str(info.value.cause))
        return errors

    errors = asyncio.run(scenario())
    assert "not an approver" in errors[0]
    assert "stale" in errors[1] and "stale" in errors[2]
    assert "approved or rejected" in errors[3]
    assert "already used" in errors[4] and "already decided" in errors[5]
    state = wait_status(api, headers, run["run_id"], "waiting")
    assert state["pending"][0]["decided"] == ["ann@example.com"]  # the rejected updates changed nothing
    assert state["status"] == "waiting"

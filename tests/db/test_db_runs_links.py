"""Runs, run messages and used approval links in the store."""
from __future__ import annotations

import threading

import pytest

from db.engine import session_scope
from db.errors import Conflict, NotFound
from db.links import is_link_used, mark_link_used
from db.runs import get_run, list_messages, list_runs, record_message, record_run


def _run(session, tenant_id, run_id, proc="refund"):
    wf = f"procedure-run/{tenant_id}/{proc}/{run_id}"
    return record_run(session, tenant_id, run_id, proc, 1, "sha", wf, {"email": "a@b.c"})


def test_record_and_get_run(session, tenant, other_tenant):
    _run(session, tenant.id, "r1")
    _run(session, tenant.id, "r2", proc="greet")
    got = get_run(session, tenant.id, "r1")
    assert (got.procedure_id, got.version, got.inputs) == ("refund", 1, {"email": "a@b.c"})
    assert [r.run_id for r in list_runs(session, tenant.id)] == ["r2", "r1"]
    assert [r.run_id for r in list_runs(session, tenant.id, procedure_id="greet")] == ["r2"]
    with pytest.raises(NotFound):
        get_run(session, other_tenant.id, "r1")
    with pytest.raises(Conflict):
        _run(session, tenant.id, "r1")


def test_record_message_is_idempotent(session, tenant):
    assert record_message(session, tenant.id, "r1", "hello", 0, "Hi") is True
    assert record_message(session, tenant.id, "r1", "hello", 0, "Hi (retry)") is False
    assert record_message(session, tenant.id, "r1", "hello", 1, "Second") is True
    assert [m.text for m in list_messages(session, tenant.id, "r1")] == ["Hi", "Second"]


def _use(session, tenant_id, link_id="link-1", approver="m@x.com"):
    return mark_link_used(
        session, link_id, tenant_id=tenant_id, workflow_id="wf", step_id="approve",
        approver=approver, decision="approved",
    )


def test_link_can_be_used_once(session, tenant):
    assert not is_link_used(session, "link-1")
    _use(session, tenant.id)
    assert is_link_used(session, "link-1")
    with pytest.raises(Conflict):
        _use(session, tenant.id, approver="other@x.com")


def test_concurrent_link_use_one_wins(engine, tenant):
    results: list[str] = []
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        with session_scope(engine) as s:
            barrier.wait()
            try:
                _use(s, tenant.id, approver=f"a{i}@x.com")
                results.append("ok")
            except Conflict:
                results.append("conflict")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 3 + ["ok"]

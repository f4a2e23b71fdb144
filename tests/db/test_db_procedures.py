"""Procedure versions in the store (spec §8)."""
from __future__ import annotations

import threading

import pytest

from db.engine import session_scope
from db.errors import NotFound
from db.procedures import get_version, list_procedures, list_versions, publish, publish_version, rollback


def _publish(session, tenant_id, proc, text, sha):
    return publish(session, tenant_id, proc, text, "yaml", {"procedure": proc, "text": text}, sha)


def test_versions_are_numbered_and_latest_is_default(session, tenant):
    v1, created1 = _publish(session, tenant.id, "refund", "a", "sha-a")
    v2, created2 = _publish(session, tenant.id, "refund", "b", "sha-b")
    assert (v1.version, created1, v2.version, created2) == (1, True, 2, True)
    assert get_version(session, tenant.id, "refund").version == 2
    got = get_version(session, tenant.id, "refund", 1)
    assert (got.source_text, got.sha256, got.definition) == ("a", "sha-a", {"procedure": "refund", "text": "a"})
    assert [v.version for v in list_versions(session, tenant.id, "refund")] == [1, 2]
    assert got.created_at.tzinfo is not None


def test_same_sha_as_newest_is_idempotent(session, tenant):
    v1 = publish_version(session, tenant.id, "refund", "a", "yaml", {}, "sha-a")
    again, created = _publish(session, tenant.id, "refund", "a", "sha-a")
    assert (again.id, again.version, created) == (v1.id, 1, False)
    assert len(list_versions(session, tenant.id, "refund")) == 1


def test_rollback_publishes_old_content_as_newest(session, tenant):
    _publish(session, tenant.id, "refund", "a", "sha-a")
    _publish(session, tenant.id, "refund", "b", "sha-b")
    v3 = rollback(session, tenant.id, "refund", 1)
    assert (v3.version, v3.sha256, v3.source_text, v3.note) == (3, "sha-a", "a", "rollback of v1")
    assert rollback(session, tenant.id, "refund", 1).version == 3  # already newest: unchanged
    with pytest.raises(NotFound):
        rollback(session, tenant.id, "refund", 9)


def test_tenants_are_isolated(session, tenant, other_tenant):
    _publish(session, tenant.id, "refund", "a", "sha-a")
    with pytest.raises(NotFound):
        get_version(session, other_tenant.id, "refund")
    with pytest.raises(NotFound):
        list_versions(session, other_tenant.id, "refund")
    assert list_procedures(session, other_tenant.id) == []
    v1 = _publish(session, other_tenant.id, "refund", "x", "sha-x")[0]
    assert v1.version == 1


def test_list_procedures_gives_newest_of_each(session, tenant):
    _publish(session, tenant.id, "refund", "a", "sha-a")
    _publish(session, tenant.id, "refund", "b", "sha-b")
    _publish(session, tenant.id, "greet", "g", "sha-g")
    rows = list_procedures(session, tenant.id)
    assert [(r.procedure_id, r.version) for r in rows] == [("greet", 1), ("refund", 2)]


def test_concurrent_publishes_get_distinct_versions(engine, tenant):
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with session_scope(engine) as s:
                _publish(s, tenant.id, "refund", f"t{i}", f"sha-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope(engine) as s:
        versions = list_versions(s, tenant.id, "refund")
    assert [v.version for v in versions] == [1, 2, 3, 4]
    assert len({v.sha256 for v in versions}) == 4

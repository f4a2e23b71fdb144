"""The inbound outbox: a message is accepted once (de-duplication key + outbox row, atomically),
forwarded rows leave the pending list, failures are counted; on SQLite and PostgreSQL."""
from __future__ import annotations

import threading

import pytest

from sqlmodel import select

from db.channels import accept_inbound, mark_failed, mark_forwarded, pending_inbound
from db.engine import session_scope
from db.models import ChannelEvent, InboundMessage


def accept(session, tenant, sid: str, thread: str = "15550001", text: str = "hello") -> bool:
    return accept_inbound(session, tenant_id=tenant.id, channel="sms", external_id=sid, thread=thread, text=text,
                          customer={"phone": "+" + thread}, message_id=sid, data={"from": "+" + thread})


def test_a_message_is_accepted_once_with_its_key_and_outbox_row(session, tenant):
    assert accept(session, tenant, "SM1", text="where is my order?") is True
    assert accept(session, tenant, "SM1", text="a replay with other text") is False
    events = session.exec(select(ChannelEvent)).all()
    rows = session.exec(select(InboundMessage)).all()
    assert [(e.channel, e.external_id, e.kind, e.data) for e in events] == [("sms", "SM1", "message",
                                                                              {"from": "+15550001"})]
    assert len(rows) == 1
    row = rows[0]
    assert (row.tenant_id, row.channel, row.thread, row.text, row.message_id) == (
        tenant.id, "sms", "15550001", "where is my order?", "SM1")
    assert row.customer == {"phone": "+15550001"} and row.forwarded_at is None and row.attempts == 0
    assert row.created_at is not None


def test_the_same_key_on_another_channel_is_another_message(session, tenant):
    assert accept(session, tenant, "SM1") is True
    assert accept_inbound(session, tenant_id=tenant.id, channel="whatsapp", external_id="SM1", thread="1",
                          text="hi", customer={}, message_id="SM1") is True
    assert len(session.exec(select(InboundMessage)).all()) == 2


def test_concurrent_deliveries_of_one_message_record_it_once(engine, tenant):
    results: list[bool] = []
    start = threading.Barrier(6)

    def deliver() -> None:
        start.wait()
        with session_scope(engine) as s:
            results.append(accept(s, tenant, "SMsame"))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    with session_scope(engine) as s:
        assert len(s.exec(select(InboundMessage)).all()) == 1
        assert len(s.exec(select(ChannelEvent)).all()) == 1


def test_an_accept_after_reads_in_the_same_session_is_kept(engine, tenant):
    """The e-mail path reads (configuration, threads) in the session before accepting."""
    with session_scope(engine) as s:
        s.exec(select(ChannelEvent)).all()
        assert accept(s, tenant, "SM2") is True
    with session_scope(engine) as s:
        assert [r.message_id for r in s.exec(select(InboundMessage))] == ["SM2"]


def test_pending_rows_in_order_until_forwarded_and_failures_counted(session, tenant):
    for i in range(3):
        accept(session, tenant, f"SM{i}", thread=f"1555000{i}")
    pending = pending_inbound(session)
    assert [r.message_id for r in pending] == ["SM0", "SM1", "SM2"]
    mark_failed(session, pending[1].id, "RPCError: temporal is away")
    mark_forwarded(session, [pending[0].id, pending[2].id])
    left = pending_inbound(session)
    assert [(r.message_id, r.attempts, r.last_error) for r in left] == [("SM1", 1, "RPCError: temporal is away")]
    assert [r.message_id for r in pending_inbound(session, limit=0)] == []


def test_a_waiting_row_holds_back_only_its_own_thread_and_a_given_up_one_nobody(session, tenant, other_tenant):
    from datetime import timedelta

    from db.channels import inbound_messages, retry_inbound
    from db.errors import NotFound
    from db.models import utcnow

    accept(session, tenant, "A1", thread="1")
    accept(session, tenant, "A2", thread="1")
    accept(session, tenant, "B1", thread="2")
    a1 = pending_inbound(session)[0]
    mark_failed(session, a1.id, "refused", retry_at=utcnow() + timedelta(minutes=5))
    assert [r.message_id for r in pending_inbound(session)] == ["B1"]  # A2 waits behind A1
    assert [r.message_id for r in pending_inbound(session, now=utcnow() + timedelta(minutes=6))] == ["A1", "A2", "B1"]
    assert [r.message_id for r in inbound_messages(session, tenant.id, "pending")] == ["A1", "A2", "B1"]
    assert inbound_messages(session, tenant.id, "failed") == []

    mark_failed(session, a1.id, "refused again", give_up=True)
    assert [r.message_id for r in pending_inbound(session)] == ["A2", "B1"]
    [failed] = inbound_messages(session, tenant.id, "failed")
    assert (failed.message_id, failed.attempts, failed.last_error) == ("A1", 2, "refused again")
    assert failed.failed_at is not None
    assert inbound_messages(session, other_tenant.id, "failed") == []

    with pytest.raises(NotFound):
        retry_inbound(session, other_tenant.id, a1.id)   # not theirs
    again = retry_inbound(session, tenant.id, a1.id)
    assert (again.failed_at, again.next_attempt_at, again.attempts) == (None, None, 0)
    assert [r.message_id for r in pending_inbound(session)] == ["A1", "A2", "B1"]
    with pytest.raises(NotFound):
        retry_inbound(session, tenant.id, a1.id)          # not failed any more


def test_attachments_and_kind_are_kept_on_the_outbox_row(session, tenant):
    media = [{"content_type": "image/jpeg", "url": "https://api.twilio.com/x/Media/ME1"}]
    assert accept_inbound(session, tenant_id=tenant.id, channel="whatsapp", external_id="t:SMm", thread="1555",
                          text="", customer={}, message_id="SMm", attachments=media) is True
    assert accept_inbound(session, tenant_id=tenant.id, channel="voice", external_id="t:CA1:completed",
                          thread="CA1", text="", customer={"status": "completed"}, message_id="CA1:ended",
                          kind="call_ended", key_kind="status") is True
    rows = pending_inbound(session)
    assert [(r.kind, r.attachments, r.text) for r in rows] == [("message", media, ""), ("call_ended", [], "")]
    assert [e.kind for e in session.exec(select(ChannelEvent).order_by(ChannelEvent.id))] == ["message", "status"]

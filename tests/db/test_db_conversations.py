"""The conversations' projection: an upsert of the row plus its new messages in one transaction,
idempotent when an activity retries; on SQLite and PostgreSQL."""
from __future__ import annotations

from db.conversations import get_conversation, list_messages, record_conversation

CID = "conversation/acme/sms/15550001"


def record(session, tenant, messages, **fields):
    args = {"tenant_id": tenant.id, "conversation_id": CID, "channel": "sms", "thread": "15550001",
            "status": "open", "outcome": None, "rating": None, "customer": {"phone": "+15550001"},
            "handoff": None, "messages": messages, **fields}
    return record_conversation(session, **args)


def msg(seq: int, role: str, text: str, **extra) -> dict:
    return {"seq": seq, "role": role, "text": text, "at": f"2026-11-26T10:00:{seq:02d}+00:00", **extra}


def test_a_retried_projection_adds_nothing_and_a_later_one_only_the_new_messages(session, tenant):
    first = [msg(1, "customer", "I want a person"),
             msg(2, "assistant", "Connecting you.", citations=[{"title": "Help", "url": "https://h/1"}], kind="x")]
    assert record(session, tenant, first) == 2
    assert record(session, tenant, first) == 0  # the activity retried
    assert record(session, tenant, [*first, msg(3, "system", "conversation closed (handed_off)")],
                  status="closed", outcome="handed_off", handoff={"reason": "asked"}) == 1
    row = get_conversation(session, tenant.id, CID)
    assert (row.status, row.outcome, row.handoff, row.customer) == ("closed", "handed_off", {"reason": "asked"},
                                                                   {"phone": "+15550001"})
    stored = list_messages(session, tenant.id, CID)
    assert [(m.seq, m.role, m.text) for m in stored] == [(1, "customer", "I want a person"),
                                                        (2, "assistant", "Connecting you."),
                                                        (3, "system", "conversation closed (handed_off)")]
    assert stored[1].citations == [{"title": "Help", "url": "https://h/1"}] and stored[1].extra == {"kind": "x"}
    assert stored[0].at.isoformat().startswith("2026-11-26T10:00:01")


def test_a_projection_without_messages_updates_the_row(session, tenant):
    assert record(session, tenant, []) == 0
    assert record(session, tenant, [], rating=5) == 0
    assert get_conversation(session, tenant.id, CID).rating == 5


def test_history_of_a_thread_is_its_last_seq_status_rating_and_customer(session, tenant, other_tenant):
    from db.conversations import conversation_history, set_rating

    assert conversation_history(session, tenant.id, CID) is None
    record(session, tenant, [msg(1, "customer", "hi"), msg(2, "assistant", "hello"),
                             msg(3, "system", "conversation closed (resolved)")],
           status="closed", outcome="resolved")
    set_rating(session, tenant.id, CID, 4)  # rated after the close: the database path
    assert conversation_history(session, tenant.id, CID) == {
        "seq": 3, "status": "closed", "outcome": "resolved", "rating": 4, "customer": {"phone": "+15550001"},
        "seen": []}
    assert conversation_history(session, other_tenant.id, CID) is None  # another tenant's thread


def test_a_reopening_run_continues_the_numbering_and_keeps_the_rating(session, tenant):
    record(session, tenant, [msg(1, "customer", "hi"), msg(2, "system", "conversation closed (abandoned)")],
           status="closed", outcome="abandoned", rating=2)
    # the new run numbers after the history and knows no rating of its own yet
    assert record(session, tenant, [msg(3, "system", "conversation reopened"), msg(4, "customer", "back again")],
                  status="open", outcome=None, rating=None) == 2
    row = get_conversation(session, tenant.id, CID)
    assert (row.status, row.outcome, row.rating) == ("open", None, 2)
    assert [m.seq for m in list_messages(session, tenant.id, CID)] == [1, 2, 3, 4]


def test_customer_message_ids_are_stored_and_come_back_with_their_replies(session, tenant, other_tenant):
    from db.conversations import conversation_history

    cited = [{"article_id": "a1", "title": "Shipping", "url": None}]
    record(session, tenant, [
        msg(1, "customer", "how long is delivery?", message_id="m-1"),
        msg(2, "assistant", "3 to 5 days [1].", citations=cited, confidence=0.71, reply_to=1),
        msg(3, "customer", "refund please", message_id="m-2"),
        msg(4, "system", "started procedure refund (keyword)"),
        msg(5, "assistant", "I can help.", procedure="refund", reply_to=3),
        msg(6, "assistant", "What is your order number?", procedure="refund", reply_to=3),
        msg(7, "customer", "hello? (no id)"),
        msg(8, "customer", "are you there", message_id="m-3"),  # a person had it: no reply
        msg(9, "agent", "Sam here.", agent="sam@example.com"),
        msg(10, "customer", "odd", message_id="x" * 301),  # longer than any channel's id: not kept
        msg(11, "assistant", "not a customer's id", message_id="m-9"),
    ], status="closed", outcome="resolved")
    stored = list_messages(session, tenant.id, CID)
    assert [(m.seq, m.message_id) for m in stored if m.message_id] == [(1, "m-1"), (3, "m-2"), (8, "m-3")]
    assert all("message_id" not in m.extra for m in stored)
    assert stored[1].extra == {"confidence": 0.71, "reply_to": 1}
    assert conversation_history(session, tenant.id, CID)["seen"] == [
        {"message_id": "m-1", "seq": 1, "reply": {"text": "3 to 5 days [1].", "citations": cited, "confidence": 0.71}},
        {"message_id": "m-2", "seq": 3, "reply": {"text": "I can help.\n\nWhat is your order number?",
                                                  "citations": [], "confidence": None}},
        {"message_id": "m-3", "seq": 8, "reply": {"text": "", "citations": [], "confidence": None}}]
    assert conversation_history(session, other_tenant.id, CID) is None


def test_only_the_newest_message_ids_are_loaded(session, tenant):
    from db.conversations import seen_messages

    record(session, tenant, [msg(n, "customer", f"message {n}", message_id=f"m-{n}") for n in range(1, 8)])
    assert [s["message_id"] for s in seen_messages(session, tenant.id, CID, limit=3)] == ["m-5", "m-6", "m-7"]


def test_the_loaded_replies_are_bounded_in_size(session, tenant):
    from db.conversations import SEEN_CHARS, seen_messages

    long = "x" * (SEEN_CHARS // 4)  # three fit with their ids, four do not
    rows = []
    for n in range(1, 6):
        rows += [msg(2 * n - 1, "customer", f"question {n}", message_id=f"m-{n}"),
                 msg(2 * n, "assistant", long, reply_to=2 * n - 1)]
    record(session, tenant, rows)
    seen = seen_messages(session, tenant.id, CID)
    assert [s["message_id"] for s in seen] == ["m-3", "m-4", "m-5"]  # the newest that fit
    assert all(s["reply"]["text"] == long for s in seen)

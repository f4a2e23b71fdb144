"""Conversations and their messages, projected from the conversation workflows (idempotent)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from db.errors import Conflict, NotFound
from db.models import Conversation, ConversationMessage, utcnow
from db.writes import commit_or_conflict, insert_many_ignore, upsert_statement

MAX_MESSAGE_ID = 300  # the longest message id stored (channels' ids are at most this long)
SEEN = 200            # message ids a new run of a thread knows (the workflow keeps as many)
SEEN_CHARS = 200_000  # ... with at most this much reply text (it goes into the run's history)


def record_conversation(session: Session, *, tenant_id: str, conversation_id: str, channel: str, thread: str,
                        status: str, outcome: str | None, rating: int | None, customer: dict,
                        handoff: dict | None, messages: list[dict]) -> int:
    """Upsert the conversation row and insert its new messages, one transaction of two
    statements (short: the write lock of SQLite is held for no Python work); returns how many
    messages were new.

    A `rating` of None leaves the stored one: a workflow never takes a rating back, and one
    given while the thread was closed (set_rating) must survive the run that reopens it."""
    now = utcnow()
    changes = {"status": status, "outcome": outcome, "rating": rating, "customer": dict(customer or {}),
               "handoff": handoff, "updated_at": now}
    conversation = Conversation(id=conversation_id, tenant_id=tenant_id, channel=channel, thread=thread,
                                created_at=now, **changes).model_dump()
    rows = []
    for msg in messages:
        extra = {k: v for k, v in msg.items()
                 if k not in ("seq", "role", "text", "citations", "at", "message_id")}
        at = datetime.fromisoformat(msg["at"]) if msg.get("at") else now
        rows.append(ConversationMessage(
            tenant_id=tenant_id, conversation_id=conversation_id, seq=int(msg["seq"]), role=msg["role"],
            text=msg["text"], citations=list(msg.get("citations") or []), extra=extra, at=at,
            message_id=_message_id(msg),
        ).model_dump(exclude={"id"}))
    if rating is None:
        del changes["rating"]
    upsert = upsert_statement(session, Conversation, conversation, ["id"], changes)
    try:
        session.execute(upsert)
        new = insert_many_ignore(session, ConversationMessage, rows, ["conversation_id", "seq"])
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(f"conversation {conversation_id!r} could not be recorded: {exc.orig}") from exc
    return new


def _message_id(msg: dict) -> str | None:
    """The id a customer message came with, to store (None for other messages and odd ids)."""
    mid = msg.get("message_id")
    if msg.get("role") != "customer" or not isinstance(mid, str) or not 0 < len(mid) <= MAX_MESSAGE_ID:
        return None
    return mid


def conversation_history(session: Session, tenant_id: str, conversation_id: str) -> dict | None:
    """What a new run of a thread continues from: its last seq, status, outcome, rating and
    customer, and `seen`, the thread's last SEEN customer message ids with the replies they got
    (oldest first); None for a thread never recorded."""
    row = session.get(Conversation, conversation_id)
    if row is None or row.tenant_id != tenant_id:
        return None
    seq = session.exec(select(func.max(ConversationMessage.seq))
                       .where(ConversationMessage.conversation_id == conversation_id)).one()
    return {"seq": int(seq or 0), "status": row.status, "outcome": row.outcome, "rating": row.rating,
            "customer": dict(row.customer or {}), "seen": seen_messages(session, tenant_id, conversation_id)}


def seen_messages(session: Session, tenant_id: str, conversation_id: str, limit: int = SEEN) -> list[dict]:
    """The thread's last `limit` customer message ids, oldest first, each with the reply its turn
    gave: the messages projected with `reply_to` its seq (one: its text, citations and
    confidence; a procedure's several: their texts joined by a blank line; none: empty), the
    shape of a turn's `reply`. Only the newest ones whose replies hold SEEN_CHARS characters in
    all: the list is a local activity's result, recorded in the run's history."""
    where = (ConversationMessage.tenant_id == tenant_id, ConversationMessage.conversation_id == conversation_id)
    ids = list(session.exec(select(ConversationMessage.seq, ConversationMessage.message_id)
                            .where(*where, ConversationMessage.message_id.is_not(None))
                            .order_by(ConversationMessage.seq.desc()).limit(limit)))
    if not ids:
        return []
    parts: dict[int, list[ConversationMessage]] = {}
    later = session.exec(select(ConversationMessage)
                         .where(*where, ConversationMessage.seq > min(s for s, _ in ids),
                                ConversationMessage.role == "assistant")
                         .order_by(ConversationMessage.seq.desc()).limit(limit * 10))
    for m in later:
        to = (m.extra or {}).get("reply_to")
        if isinstance(to, int):
            parts.setdefault(to, []).insert(0, m)
    seen, chars = [], 0
    for s, mid in ids:  # newest first
        said = parts.get(s, [])
        if len(said) == 1:
            reply = {"text": said[0].text, "citations": list(said[0].citations or []),
                     "confidence": (said[0].extra or {}).get("confidence")}
        else:
            reply = {"text": "\n\n".join(m.text for m in said), "citations": [], "confidence": None}
        chars += len(reply["text"]) + len(mid)
        if chars > SEEN_CHARS:
            break
        seen.append({"message_id": mid, "seq": s, "reply": reply})
    return seen[::-1]


def get_conversation(session: Session, tenant_id: str, conversation_id: str) -> Conversation:
    row = session.get(Conversation, conversation_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound("conversation not found")
    return row


def list_messages(session: Session, tenant_id: str, conversation_id: str) -> list[ConversationMessage]:
    stmt = (select(ConversationMessage)
            .where(ConversationMessage.tenant_id == tenant_id,
                   ConversationMessage.conversation_id == conversation_id)
            .order_by(ConversationMessage.seq))
    return list(session.exec(stmt))


def list_conversations(session: Session, tenant_id: str, status: str | None = None,
                       limit: int = 100) -> list[Conversation]:
    stmt = select(Conversation).where(Conversation.tenant_id == tenant_id)
    if status:
        stmt = stmt.where(Conversation.status == status)
    return list(session.exec(stmt.order_by(Conversation.updated_at.desc()).limit(limit)))


def set_rating(session: Session, tenant_id: str, conversation_id: str, rating: int) -> Conversation:
    row = get_conversation(session, tenant_id, conversation_id)
    row.rating = rating
    session.add(row)
    commit_or_conflict(session, "could not store the rating")
    return row

"""Channel events (de-duplication) and per-tenant channel configuration."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, insert, literal, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from db.engine import sqlite_begin_write
from db.errors import NotFound
from db.models import ChannelConfig, ChannelEvent, InboundMessage, utcnow
from db.secrets import get_secrets, set_secret
from db.writes import commit_or_conflict, dialect_insert, insert_ignore


def first_time(session: Session, tenant_id: str, channel: str, external_id: str, kind: str = "message",
               data: dict | None = None) -> bool:
    """Record an inbound event; False when it was seen before (the unique key decides)."""
    row = ChannelEvent(tenant_id=tenant_id, channel=channel, external_id=external_id[:300], kind=kind,
                       data=dict(data or {}))
    return insert_ignore(session, row, ["channel", "external_id"])


def accept_inbound(session: Session, *, tenant_id: str, channel: str, external_id: str, thread: str,
                   text: str, customer: dict, message_id: str, data: dict | None = None,
                   attachments: list[dict] | None = None, kind: str = "message",
                   key_kind: str = "message") -> bool:
    """Record an inbound message once: the de-duplication key and the outbox row in ONE
    transaction, so an accepted message is never lost and a replay adds nothing. True when it
    was new. The channel has normalized `text` (channels.text.inbound_text).

    PostgreSQL: one statement (a data-modifying CTE) on an autocommit connection of its own,
    so the acknowledgement waits for one round trip, not four (BEGIN, two INSERTs, COMMIT); a
    statement is atomic on its own. SQLite: both INSERTs in one transaction of the session."""
    events, outbox = ChannelEvent.__table__, InboundMessage.__table__
    now = utcnow()
    key = {"tenant_id": tenant_id, "channel": channel, "external_id": external_id[:300], "kind": key_kind,
           "data": dict(data or {}), "created_at": now}
    row = {"tenant_id": tenant_id, "channel": channel, "thread": thread, "text": text,
           "customer": dict(customer or {}), "message_id": message_id[:300], "created_at": now, "attempts": 0,
           "kind": kind, "attachments": list(attachments or [])}
    taken = (dialect_insert(session)(events).values(**key)
             .on_conflict_do_nothing(index_elements=["channel", "external_id"]).returning(events.c.id))
    try:
        if session.get_bind().dialect.name == "postgresql":
            taken = taken.cte("taken")
            columns = list(row)
            stmt = (insert(outbox)
                    .from_select(columns, sa_select(*(literal(row[c], outbox.c[c].type) for c in columns))
                                 .select_from(taken))
                    .returning(outbox.c.id))
            # its own pooled connection in autocommit mode: the session's transaction (if any)
            # neither delays nor swallows it
            with session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                return conn.execute(stmt).first() is not None
        sqlite_begin_write(session)
        if session.execute(taken).first() is None:
            session.rollback()
            return False
        session.execute(insert(outbox).values(**row))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return True


def pending_inbound(session: Session, limit: int = 100, now: datetime | None = None) -> list[InboundMessage]:
    """Accepted messages to hand to their conversation now, oldest first: not forwarded, not
    given up, due (a row that failed waits until its next_attempt_at), and not behind an
    earlier row of the same thread that is still waiting (a thread's messages go in order)."""
    now = now or utcnow()
    m, earlier = InboundMessage, aliased(InboundMessage)
    waiting = (exists().where(earlier.tenant_id == m.tenant_id, earlier.channel == m.channel,
                              earlier.thread == m.thread, earlier.id < m.id, earlier.forwarded_at.is_(None),
                              earlier.failed_at.is_(None), earlier.next_attempt_at > now))
    stmt = (select(m).where(m.forwarded_at.is_(None), m.failed_at.is_(None),
                            or_(m.next_attempt_at.is_(None), m.next_attempt_at <= now), ~waiting)
            .order_by(m.id).limit(limit))
    return list(session.exec(stmt))


def mark_forwarded(session: Session, ids: list[int]) -> None:
    if ids:
        session.execute(update(InboundMessage).where(InboundMessage.id.in_(ids)).values(forwarded_at=utcnow()))
        session.commit()


def mark_failed(session: Session, message_id: int, error: str, *, retry_at: datetime | None = None,
                give_up: bool = False) -> None:
    """Count a failed attempt; the row waits until `retry_at` (None: due again at once), or is
    given up (`failed_at`: no more attempts, listed by GET /v1/channels/inbound)."""
    values = {"attempts": InboundMessage.attempts + 1, "last_error": error[:500], "next_attempt_at": retry_at}
    if give_up:
        values["failed_at"] = utcnow()
    session.execute(update(InboundMessage).where(InboundMessage.id == message_id).values(**values))
    session.commit()


def inbound_messages(session: Session, tenant_id: str, status: str = "failed", limit: int = 100) -> list[InboundMessage]:
    """The tenant's outbox rows that were given up (`failed`) or are not forwarded yet (`pending`)."""
    m = InboundMessage
    stmt = select(m).where(m.tenant_id == tenant_id)
    if status == "failed":
        stmt = stmt.where(m.failed_at.is_not(None))
    else:
        stmt = stmt.where(m.forwarded_at.is_(None), m.failed_at.is_(None))
    return list(session.exec(stmt.order_by(m.id).limit(limit)))


def retry_inbound(session: Session, tenant_id: str, message_id: int) -> InboundMessage:
    """Make a given-up row pending again (attempts from zero); NotFound unless it is the
    tenant's and given up."""
    row = session.get(InboundMessage, message_id)
    if row is None or row.tenant_id != tenant_id or row.failed_at is None:
        raise NotFound(f"no failed inbound message {message_id}")
    row.failed_at, row.next_attempt_at, row.attempts = None, None, 0
    session.add(row)
    session.commit()
    return row


def recorded_event(session: Session, channel: str, external_id: str) -> dict | None:
    """The data of a recorded event key (e.g. an outbound part already sent), None if absent."""
    row = session.exec(select(ChannelEvent).where(ChannelEvent.channel == channel,
                                                  ChannelEvent.external_id == external_id[:300])).first()
    return dict(row.data or {}) if row else None


def was_recorded(session: Session, channel: str, external_id: str) -> bool:
    """Whether this event key is recorded."""
    return recorded_event(session, channel, external_id) is not None


def list_events(session: Session, tenant_id: str, channel: str, kind: str | None = None) -> list[ChannelEvent]:
    stmt = select(ChannelEvent).where(ChannelEvent.tenant_id == tenant_id, ChannelEvent.channel == channel)
    if kind:
        stmt = stmt.where(ChannelEvent.kind == kind)
    return list(session.exec(stmt.order_by(ChannelEvent.id)))


def secret_name(channel: str, name: str) -> str:
    """Where a channel credential is kept among the tenant's secrets."""
    return f"channel_{channel}_{name}"


def put_channel(session: Session, box, tenant_id: str, channel: str, settings: dict,
                secrets: dict[str, str]) -> ChannelConfig:
    """Create or replace a channel's configuration; credentials are stored encrypted."""
    row = session.exec(select(ChannelConfig).where(ChannelConfig.tenant_id == tenant_id,
                                                   ChannelConfig.channel == channel)).first()
    row = row or ChannelConfig(tenant_id=tenant_id, channel=channel)
    for name, value in secrets.items():
        set_secret(session, box, tenant_id, secret_name(channel, name), value)
    row.settings = dict(settings)
    row.secret_names = sorted(set(row.secret_names or []) | set(secrets))
    row.updated_at = utcnow()
    session.add(row)
    commit_or_conflict(session, f"channel {channel!r} was configured concurrently; retry")
    return row


def get_channel(session: Session, tenant_id: str, channel: str) -> ChannelConfig:
    row = session.exec(select(ChannelConfig).where(ChannelConfig.tenant_id == tenant_id,
                                                   ChannelConfig.channel == channel)).first()
    if row is None:
        raise NotFound(f"channel {channel!r} is not configured for this tenant")
    return row


def list_channels(session: Session, tenant_id: str) -> list[ChannelConfig]:
    return list(session.exec(select(ChannelConfig).where(ChannelConfig.tenant_id == tenant_id)
                             .order_by(ChannelConfig.channel)))


def channel_credentials(session: Session, box, tenant_id: str, channel: str) -> tuple[dict, dict[str, str]]:
    """(settings, decrypted credentials) of a tenant's channel; for webhooks and outbound adapters."""
    row = get_channel(session, tenant_id, channel)
    names = {name: secret_name(channel, name) for name in row.secret_names}
    values = get_secrets(session, box, tenant_id, names.values()) if names else {}
    return dict(row.settings), {name: values[stored] for name, stored in names.items()}

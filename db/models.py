"""SQLModel tables of Flywheel. Every row except UsedLink/RunMessage lookups is scoped by tenant."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, LargeBinary, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Tenant(SQLModel, table=True):
    """A customer organisation; `settings` = {allowed_hosts: [...], connector_base_urls: {id: url}}."""

    __tablename__ = "tenants"
    id: str = Field(primary_key=True, max_length=64)
    name: str
    created_at: datetime = _created()
    settings: dict = Field(default_factory=dict, sa_type=JSON, nullable=False)


class ApiKey(SQLModel, table=True):
    """An API key of a tenant; only its sha256 is stored, `prefix` identifies it to humans."""

    __tablename__ = "api_keys"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    created_at: datetime = _created()


class ProcedureVersion(SQLModel, table=True):
    """One immutable published version of a procedure (spec §8)."""

    __tablename__ = "procedure_versions"
    __table_args__ = (UniqueConstraint("tenant_id", "procedure_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    procedure_id: str = Field(max_length=64)
    version: int
    sha256: str = Field(max_length=64)
    source_text: str
    source_format: str = Field(max_length=8)
    definition: dict = Field(sa_type=JSON, nullable=False)
    created_at: datetime = _created()
    note: str | None = None


class Secret(SQLModel, table=True):
    """A tenant secret, encrypted (Fernet token in `ciphertext`)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    name: str = Field(max_length=64)
    ciphertext: str
    updated_at: datetime = _created()


class Connector(SQLModel, table=True):
    """A tenant's custom connector: its normalized spec (spec §5)."""

    __tablename__ = "connectors"
    __table_args__ = (UniqueConstraint("tenant_id", "connector_id"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    connector_id: str = Field(max_length=64)
    spec: dict = Field(sa_type=JSON, nullable=False)
    created_at: datetime = _created()


class Run(SQLModel, table=True):
    """A started run, pinned to (procedure, version, sha256)."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("tenant_id", "run_id"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    run_id: str = Field(max_length=64)
    procedure_id: str = Field(max_length=64)
    version: int
    sha256: str = Field(max_length=64)
    workflow_id: str = Field(unique=True)
    inputs: dict = Field(default_factory=dict, sa_type=JSON, nullable=False)
    created_at: datetime = _created()


class UsedLink(SQLModel, table=True):
    """An approval link that has been used; the primary key refuses a second use."""

    __tablename__ = "used_links"
    link_id: str = Field(primary_key=True, max_length=128)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    workflow_id: str
    step_id: str
    approver: str
    decision: str = Field(max_length=16)
    used_at: datetime = _created()


class RunMessage(SQLModel, table=True):
    """A message a run sent (seq-th message of a step); the unique key makes retries no-ops."""

    __tablename__ = "run_messages"
    __table_args__ = (UniqueConstraint("run_id", "step_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    run_id: str = Field(max_length=64)
    step_id: str
    seq: int
    text: str
    created_at: datetime = _created()


class Conversation(SQLModel, table=True):
    """A conversation (projection of its workflow) for listing, the inbox and analytics."""

    __tablename__ = "conversations"
    id: str = Field(primary_key=True, max_length=300)  # the workflow id
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    channel: str = Field(max_length=32)
    thread: str = Field(max_length=128)
    status: str = Field(max_length=16, index=True)
    outcome: str | None = Field(default=None, max_length=16)
    rating: int | None = None
    customer: dict = Field(default_factory=dict, sa_type=JSON, nullable=False)
    handoff: dict | None = Field(default=None, sa_type=JSON)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class ConversationMessage(SQLModel, table=True):
    """One message of a conversation; (conversation, seq) is unique so a retry inserts nothing.

    `message_id`: a customer message's id from its channel or client (de-duplicates retries
    across runs of the thread); None for every other message."""

    __tablename__ = "conversation_messages"
    __table_args__ = (UniqueConstraint("conversation_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    conversation_id: str = Field(max_length=300, index=True)
    seq: int
    role: str = Field(max_length=16)
    text: str
    citations: list = Field(default_factory=list, sa_type=JSON, nullable=False)
    extra: dict = Field(default_factory=dict, sa_type=JSON, nullable=False)
    at: datetime = _created()
    message_id: str | None = Field(default=None, max_length=300)


class KnowledgeArticle(SQLModel, table=True):
    """One immutable version of a knowledge article (Markdown body); a delete is a version too.

    `questions`: example customer questions the article answers (routing only, never quoted).
    `handoff`: a hand-off article: its questions are ones the knowledge base does NOT answer,
    which the assistant hands to a person (its text is never indexed nor quoted).
    `indexed_at` is bookkeeping, not content: set once this version's chunks are in the index.
    """

    __tablename__ = "knowledge_articles"
    __table_args__ = (UniqueConstraint("tenant_id", "article_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    article_id: str = Field(max_length=128, index=True)
    version: int
    title: str
    body: str
    url: str | None = None
    questions: list = Field(default_factory=list, sa_type=JSON, nullable=False)
    source_id: str | None = Field(default=None, max_length=64, index=True)
    sha256: str = Field(max_length=64)
    deleted: bool = False
    handoff: bool = False
    note: str | None = None
    created_at: datetime = _created()
    indexed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class KnowledgeSource(SQLModel, table=True):
    """A URL (help-center crawl) or a set of uploaded files, ingested by an IngestWorkflow.

    status: pending | running | succeeded | failed | deleting | deleted; progress: {phase,
    pages_fetched, pages_seen, pages_indexed, articles_changed, errors, cycle, next_sync_at}
    (recorded by the crawl every few pages and by the workflow after each step).
    """

    __tablename__ = "knowledge_sources"
    __table_args__ = (UniqueConstraint("tenant_id", "source_id"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    source_id: str = Field(max_length=64)
    type: str = Field(max_length=8)
    url: str | None = None
    filename: str | None = None
    max_pages: int = 50
    max_depth: int = 3
    status: str = Field(default="pending", max_length=16)
    progress: dict = Field(default_factory=dict, sa_type=JSON, nullable=False)
    error: str | None = None
    resync_every_s: int | None = None
    workflow_id: str = Field(max_length=300)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class KnowledgeUpload(SQLModel, table=True):
    """The bytes of one uploaded file of a file source (read by its IngestWorkflow; kept so a
    failed or retried ingestion can read them again)."""

    __tablename__ = "knowledge_uploads"
    __table_args__ = (UniqueConstraint("tenant_id", "source_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    source_id: str = Field(max_length=64)
    seq: int
    filename: str
    content_type: str | None = None
    sha256: str = Field(max_length=64)
    data: bytes = Field(sa_type=LargeBinary, nullable=False)
    created_at: datetime = _created()


class ChannelEvent(SQLModel, table=True):
    """An inbound channel event (a message id, an event id) seen once: a replayed or concurrent
    delivery of the same event finds the key taken and changes nothing."""

    __tablename__ = "channel_events"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    channel: str = Field(max_length=32)
    external_id: str = Field(max_length=300)
    kind: str = Field(default="message", max_length=32)
    data: dict = Field(default_factory=dict, sa_type=JSON, nullable=False)
    created_at: datetime = _created()


class ChannelConfig(SQLModel, table=True):
    """A tenant's configuration of one channel (non-secret settings; credentials are secrets)."""

    __tablename__ = "channel_configs"
    __table_args__ = (UniqueConstraint("tenant_id", "channel"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    channel: str = Field(max_length=32)
    settings: dict = Field(default_factory=dict, sa_type=JSON, nullable=False)
    secret_names: list = Field(default_factory=list, sa_type=JSON, nullable=False)
    updated_at: datetime = _created()


class WidgetKey(SQLModel, table=True):
    """The public key of a tenant's web widget -> the tenant: unique, indexed, one per tenant;
    kept in step with the web channel's settings by channels/web.py."""

    __tablename__ = "widget_keys"
    public_key: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(foreign_key="tenants.id", unique=True)


class InboundMessage(SQLModel, table=True):
    """Outbox of accepted inbound channel messages: written in the same transaction as the
    de-duplication key, acknowledged at once, handed to the conversation by the forwarder.
    `kind` "message" (a customer message, with its `attachments`) or "call_ended" (a phone call's
    end: `customer` holds the call's final status). A row the relay gave up on has `failed_at`;
    one that failed waits until `next_attempt_at`."""

    __tablename__ = "inbound_messages"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    channel: str = Field(max_length=32)
    thread: str = Field(max_length=128)
    text: str
    customer: dict = Field(default_factory=dict, sa_type=JSON, nullable=False)
    message_id: str = Field(max_length=300)
    created_at: datetime = _created()
    forwarded_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True, index=True)
    attempts: int = 0
    last_error: str | None = None
    kind: str = Field(default="message", max_length=32)
    attachments: list = Field(default_factory=list, sa_type=JSON, nullable=False)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    failed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)

"""Per-tenant channel configuration. Each channel declares its settings (public) and its
credentials (channels/config.py): credentials are stored as encrypted tenant secrets, are
write-only and are never returned (a view lists only which ones are set). Also the inbound
outbox's messages that could not be handed to their conversations (channels/forwarder.py)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.deps import current_tenant, get_secret_box, get_session
from channels.config import public_credentials, public_settings, schema_of, validate
from channels.credentials import credential_cache
from db.channels import (
    get_channel,
    inbound_messages,
    list_channels,
    put_channel,
    retry_inbound,
)
from db.errors import NotFound
from db.models import Tenant

router = APIRouter(prefix="/v1/channels", tags=["channels"])
CHANNEL = Path(pattern=r"^[a-z][a-z0-9_]{0,31}$")


class ChannelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] = Field(default_factory=dict, description="public settings (returned)")
    secrets: dict[str, str] = Field(default_factory=dict, description="write-only credentials (never returned)")


def _view(row) -> dict[str, Any]:
    return {"channel": row.channel, "settings": public_settings(row.channel, row.settings),
            "secrets": public_credentials(row.channel, row.secret_names or []),
            "updated_at": row.updated_at.isoformat()}


def _inbound_view(row) -> dict[str, Any]:
    return {"id": row.id, "channel": row.channel, "thread": row.thread, "kind": row.kind,
            "message_id": row.message_id, "attempts": row.attempts, "last_error": row.last_error,
            "created_at": row.created_at.isoformat(),
            "failed_at": row.failed_at.isoformat() if row.failed_at else None,
            "forwarded_at": row.forwarded_at.isoformat() if row.forwarded_at else None}


@router.get("/inbound")
def inbound(status: str = Query(default="failed", pattern="^(failed|pending)$"),
            limit: int = Query(default=100, ge=1, le=1000), tenant: Tenant = Depends(current_tenant),
            session: Session = Depends(get_session)) -> dict[str, Any]:
    """Accepted inbound messages the relay gave up on (`failed`) or has not handed on yet
    (`pending`), oldest first; their text and customer are in the conversation once forwarded."""
    return {"messages": [_inbound_view(r) for r in inbound_messages(session, tenant.id, status, limit)]}


@router.post("/inbound/{message_id}/retry")
def retry(message_id: int = Path(ge=1), tenant: Tenant = Depends(current_tenant),
          session: Session = Depends(get_session)) -> dict[str, Any]:
    """Hand a failed inbound message to its conversation again (attempts start over)."""
    return _inbound_view(retry_inbound(session, tenant.id, message_id))


@router.put("/{channel}")
def configure(body: ChannelBody, request: Request, channel: str = CHANNEL, tenant: Tenant = Depends(current_tenant),
              session: Session = Depends(get_session), box=Depends(get_secret_box)) -> dict[str, Any]:
    """Configure a channel: its settings (public) and credentials (encrypted, write-only); see
    docs/channels.md for each channel's keys. Settings are replaced; credentials are added or
    replaced one by one (those not sent stay)."""
    schema_of(channel)  # 404 for a channel that does not exist
    try:
        stored = get_channel(session, tenant.id, channel).secret_names or []
    except NotFound:
        stored = []
    settings = validate(channel, body.settings, body.secrets, stored)
    row = put_channel(session, box, tenant.id, channel, settings, body.secrets)
    credential_cache(request.app).drop(tenant.id)  # this process verifies with the new ones at once
    return _view(row)


@router.get("")
def channels(tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)) -> dict:
    return {"channels": [_view(r) for r in list_channels(session, tenant.id)]}


@router.get("/{channel}")
def channel(channel: str = CHANNEL, tenant: Tenant = Depends(current_tenant),
            session: Session = Depends(get_session)) -> dict[str, Any]:
    schema_of(channel)
    return _view(get_channel(session, tenant.id, channel))

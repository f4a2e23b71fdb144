"""Conversations over the generic `api` channel, and the inbox where people take over.

`POST /v1/conversations/{thread}/messages` waits for the turn and returns the reply; the
conversation's workflow is started by the same call (update-with-start) when it is new.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.deps import current_tenant, get_session, get_settings, get_temporal
from api.errors import InvalidBody
from api.temporal_errors import Rejected, RunNotFound, temporal_call
from db.conversations import get_conversation, list_conversations, list_messages, set_rating
from db.errors import NotFound
from db.models import Tenant
from workflows import conversation_types as C
from workflows.search import CHANNEL, TENANT_ID

router = APIRouter(tags=["conversations"])


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    name: str | None = Field(default=None, max_length=200)


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content_type: str = Field(default="", max_length=200)
    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://\S+$")


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(default="", max_length=C.MAX_TEXT, description="may be empty with attachments")
    customer: Customer | None = None
    message_id: str = Field(default="", max_length=200, description="de-duplicates retries")
    attachments: list[Attachment] = Field(default_factory=list, max_length=C.MAX_ATTACHMENTS)


class AgentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str = Field(default="", max_length=200)
    text: str = Field(default="", max_length=10_000)


class RatingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rating: int = Field(ge=1, le=5)


def _key(channel: str, thread: str) -> None:
    if not C.CHANNEL.fullmatch(channel):
        raise NotFound("conversation not found")
    if not C.THREAD.fullmatch(thread):
        raise InvalidBody("thread: 1-128 letters, digits and _ . : @ + = -, starting with a letter or digit")


async def send_message(client: Client, settings: Any, tenant_id: str, channel: str, thread: str,
                       text: str, customer: dict, message_id: str = "",
                       attachments: list[dict] | None = None) -> dict[str, Any]:
    """One customer message into its conversation (started if new, reopened if it closed);
    returns the turn's result. Channels call this too."""
    cid = C.conversation_id(tenant_id, channel, thread)
    start = WithStartWorkflowOperation(
        C.WORKFLOW_NAME, C.ConversationInput(tenant_id=tenant_id, channel=channel, thread=thread,
                                             customer=customer, idle_timeout_s=settings.conversation_idle_s,
                                             turn_timeout_s=settings.conversation_turn_s),
        id=cid, task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(TENANT_ID, tenant_id),
                                                 SearchAttributePair(CHANNEL, channel)]))
    async with temporal_call("message"):
        result = await client.execute_update_with_start_workflow(
            "message", C.MessageIn(text=text, message_id=message_id, customer=customer,
                                   attachments=list(attachments or [])),
            start_workflow_operation=start)
    return {"conversation_id": cid, **result}


@router.post("/v1/conversations/{thread}/messages")
async def post_message(thread: str, body: MessageBody, request: Request,
                       tenant: Tenant = Depends(current_tenant),
                       client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """The customer's message; waits for the turn and returns {reply, status, procedure}.
    NUL and other control characters (which no database column holds) are dropped first."""
    _key("api", thread)
    customer = {k: C.clean_text(v) for k, v in (body.customer.model_dump(exclude_none=True)
                                               if body.customer else {}).items()}
    text = C.clean_text(body.text)
    attachments = C.clean_attachments([a.model_dump() for a in body.attachments])
    if not text.strip() and not attachments:
        raise InvalidBody("text: a message needs text (or attachments)")
    return await send_message(client, get_settings(request), tenant.id, "api", thread, text,
                              customer, C.clean_text(body.message_id), attachments)


async def _live_state(client: Client, cid: str) -> dict | None:
    try:
        desc = await client.get_workflow_handle(cid).describe()
        if desc.status is None or desc.status.name != "RUNNING":
            return None
        return await client.get_workflow_handle(cid).query("state")
    except RPCError:
        return None


def _message_view(m) -> dict[str, Any]:
    """A stored message as the live transcript shows it (a customer message's `message_id` too)."""
    view = {"seq": m.seq, "role": m.role, "text": m.text, "citations": m.citations,
            "at": m.at.isoformat(), **m.extra}
    if m.message_id:
        view["message_id"] = m.message_id
    return view


def _with_null_urls(m: dict[str, Any]) -> dict[str, Any]:
    """Citations as the API promises them: a missing url is null (older messages have "")."""
    if not m.get("citations"):
        return m
    return {**m, "citations": [{**c, "url": c.get("url") or None} for c in m["citations"]]}


async def _transcript(session: Session, client: Client, tenant_id: str, channel: str, thread: str) -> dict:
    _key(channel, thread)
    cid = C.conversation_id(tenant_id, channel, thread)
    live = await _live_state(client, cid)
    try:
        row = get_conversation(session, tenant_id, cid)
    except NotFound:
        if live is None:
            raise
        row = None
    stored = [_message_view(m) for m in list_messages(session, tenant_id, cid)] if row else []
    seen = {m["seq"] for m in stored}
    messages = stored + [m for m in (live or {}).get("messages", []) if m["seq"] not in seen]
    state = live or {"status": row.status, "outcome": row.outcome, "rating": row.rating,
                     "customer": row.customer, "handoff": row.handoff, "procedure": None}
    return {"conversation_id": cid, "channel": channel, "thread": thread, "status": state["status"],
            "outcome": state.get("outcome"), "rating": state.get("rating"), "customer": state.get("customer"),
            "handoff": state.get("handoff"), "procedure": state.get("procedure"),
            "messages": [_with_null_urls(m) for m in sorted(messages, key=lambda m: m["seq"])]}


@router.get("/v1/conversations/{thread}")
async def get_api_conversation(thread: str, tenant: Tenant = Depends(current_tenant),
                               session: Session = Depends(get_session),
                               client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Transcript and status of a conversation of the `api` channel."""
    return await _transcript(session, client, tenant.id, "api", thread)


@router.get("/v1/conversations")
async def list_all(tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session),
                   status: str | None = Query(default=None, pattern="^(open|handed_off|closed)$"),
                   limit: int = Query(default=100, ge=1, le=500)) -> dict[str, Any]:
    rows = list_conversations(session, tenant.id, status, limit)
    return {"conversations": [_summary(r) for r in rows]}


def _summary(r) -> dict[str, Any]:
    return {"conversation_id": r.id, "channel": r.channel, "thread": r.thread, "status": r.status,
            "outcome": r.outcome, "rating": r.rating, "handoff": r.handoff,
            "updated_at": r.updated_at.isoformat()}


# ---- inbox: people ---------------------------------------------------------------------------
@router.get("/v1/inbox")
async def inbox(tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)) -> dict:
    """Conversations waiting for a person (handed off), newest first."""
    return {"conversations": [_summary(r) for r in list_conversations(session, tenant.id, C.HANDED_OFF)]}


@router.get("/v1/inbox/{channel}/{thread}")
async def inbox_conversation(channel: str, thread: str, tenant: Tenant = Depends(current_tenant),
                             session: Session = Depends(get_session),
                             client: Client = Depends(get_temporal)) -> dict[str, Any]:
    return await _transcript(session, client, tenant.id, channel, thread)


async def _agent(client: Client, tenant_id: str, channel: str, thread: str, action: C.AgentAction) -> dict:
    _key(channel, thread)
    cid = C.conversation_id(tenant_id, channel, thread)
    async with temporal_call(action.kind):
        await client.get_workflow_handle(cid).signal("agent_action", action)
    return {"conversation_id": cid, "action": action.kind, "accepted": True}


@router.post("/v1/inbox/{channel}/{thread}/reply")
async def agent_reply(channel: str, thread: str, body: AgentBody, tenant: Tenant = Depends(current_tenant),
                      client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """A person's reply; it reaches the customer through the conversation's channel."""
    if not body.text.strip():
        raise InvalidBody("text: a reply needs text")
    return await _agent(client, tenant.id, channel, thread, C.AgentAction("reply", body.agent, body.text))


@router.post("/v1/inbox/{channel}/{thread}/takeover")
async def takeover(channel: str, thread: str, body: AgentBody, tenant: Tenant = Depends(current_tenant),
                   client: Client = Depends(get_temporal)) -> dict[str, Any]:
    return await _agent(client, tenant.id, channel, thread, C.AgentAction("takeover", body.agent))


@router.post("/v1/inbox/{channel}/{thread}/release")
async def release(channel: str, thread: str, body: AgentBody, tenant: Tenant = Depends(current_tenant),
                  client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Return the conversation to the AI."""
    return await _agent(client, tenant.id, channel, thread, C.AgentAction("release", body.agent))


@router.post("/v1/inbox/{channel}/{thread}/close")
async def close(channel: str, thread: str, body: AgentBody, tenant: Tenant = Depends(current_tenant),
                client: Client = Depends(get_temporal)) -> dict[str, Any]:
    return await _agent(client, tenant.id, channel, thread, C.AgentAction("close", body.agent))


@router.post("/v1/conversations/{thread}/rating")
async def rate(thread: str, body: RatingBody, tenant: Tenant = Depends(current_tenant),
               session: Session = Depends(get_session), client: Client = Depends(get_temporal)) -> dict:
    """The customer's rating (1-5): to the running conversation, or onto the row of a closed one
    (also when it finished between the look and the signal)."""
    _key("api", thread)
    cid = C.conversation_id(tenant.id, "api", thread)
    if await _live_state(client, cid) is not None:
        try:
            async with temporal_call("rating"):
                await client.get_workflow_handle(cid).signal("rate", body.rating)
            return {"conversation_id": cid, "rating": body.rating}
        except (Rejected, RunNotFound):
            pass  # it has just finished closing
    set_rating(session, tenant.id, cid, body.rating)
    return {"conversation_id": cid, "rating": body.rating}

"""Twilio: SMS and WhatsApp webhooks, delivery status callbacks, the outbound adapters of `sms`,
`whatsapp` and `voice`, and (channels/twilio_voice.py) phone calls.

Webhooks (no API key: the X-Twilio-Signature over `settings.public_url` + path + query and the
form is checked with the channel's auth token; wrong or missing -> 403, nothing changes; an
unknown tenant or a channel it has not configured gets exactly the same answers):

    POST /webhooks/{tenant}/twilio/sms | /whatsapp   incoming message -> empty TwiML at once
    POST /webhooks/{tenant}/twilio/status            message/call status callback, recorded
    POST /webhooks/{tenant}/twilio/voice[/turn|/silence]   phone calls (twilio_voice.py)
    GET  /v1/channels/twilio/statuses?sid=           recorded status callbacks (API key)

Channel configuration (PUT /v1/channels/sms|whatsapp|voice): settings {phone_number} (or
{messaging_service_sid}), secrets {account_sid, auth_token}; voice settings {phone_number?,
greeting, transfer_number}. A message (or call) to another number or messaging service than the
configured one is refused (403): with one Twilio account shared by several tenants, knowing the
auth token must not let one tenant write into another's conversations.

Thread key: the customer's E.164 number without "+" ("15551234567"), the same on SMS and
WhatsApp (they are different channels, so different conversations); customer {phone[, name]}.
Media (MMS, WhatsApp) reach the conversation as the message's attachments ({content_type, url},
at most 10), with the text (normalized by channels.text.inbound_text, possibly empty): the
conversation decides what to answer, through the same outbound path as every reply.
De-duplication keys are per tenant ("{tenant}:{MessageSid}").

Status callbacks are recorded once per sid and status. The end of a call (CallStatus completed,
busy, failed, no-answer or canceled) also goes through the inbound outbox as a `call_ended` row:
the relay tells the call's conversation (channels/forwarder.py). Twilio sends call status
callbacks only to the number's (or the call's) StatusCallback URL: the operator sets it to
{public_url}/webhooks/{tenant}/twilio/status (Twilio console: the number's Voice configuration,
"Call status changes").
"""
from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlmodel import Session, select

from api.deps import current_tenant, get_session
from channels import outbound
from channels.errors import ChannelError
from channels.text import clean_id, clean_short, inbound_text
from channels.twilio_common import (
    EMPTY_TWIML,
    check_number,
    db_call,
    phone_thread,
    read_form,
    send_text,
    signed_form,
    signed_url,
    twiml,
    verified,
)
from channels.twilio_voice import router as voice_router
from db.channels import accept_inbound, first_time
from db.models import ChannelEvent, Tenant

log = logging.getLogger("flywheel.channels.twilio")
router = APIRouter(tags=["channels: twilio"])
router.include_router(voice_router)

CHANNELS = ("sms", "whatsapp", "voice")
MAX_MEDIA = 10  # Twilio sends at most 10 media per message
CALL_ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


# ---- inbound messages -----------------------------------------------------------------------
def inbound_message(channel: str, params: Any) -> dict[str, Any]:
    """Twilio's form -> one message: sid, thread, customer, text, attachments."""
    sid = (params.get("MessageSid") or params.get("SmsMessageSid") or "").strip()
    if not sid or len(sid) > 64 or not sid.isalnum():
        raise ChannelError("MessageSid: missing or malformed")
    thread, phone = phone_thread(params.get("From") or "")
    count = params.get("NumMedia") or "0"
    count = min(int(count), MAX_MEDIA) if count.isdigit() and len(count) <= 3 else 0
    attachments = []
    for i in range(count):
        url = (params.get(f"MediaUrl{i}") or "").strip()
        if url.startswith("https://") and len(url) <= 2000:
            kind = clean_id((params.get(f"MediaContentType{i}") or "").strip(), 100) or "application/octet-stream"
            attachments.append({"content_type": kind, "url": url})
    customer = {"phone": phone}
    name = clean_short(params.get("ProfileName") or "", 200)
    if name:
        customer["name"] = name
    return {"sid": sid, "thread": thread, "phone": phone, "customer": customer,
            "text": inbound_text(params.get("Body") or ""), "attachments": attachments}


async def _message(request: Request, tenant_id: str, channel: str) -> Response:
    started = time.perf_counter()
    params, (cfg, _) = await signed_form(request, tenant_id, channel)
    check_number(cfg, channel, params)
    msg = inbound_message(channel, params)
    if msg["text"] or msg["attachments"]:
        # the de-duplication key and the outbox row in one transaction; the workers' relay hands
        # the message to its conversation (channels/forwarder.py), so neither Temporal's pace
        # nor its availability touches the acknowledgement
        await db_call(request, lambda session, box: accept_inbound(
            session, tenant_id=tenant_id, channel=channel, external_id=f"{tenant_id}:{msg['sid']}",
            thread=msg["thread"], text=msg["text"], customer=msg["customer"], message_id=msg["sid"],
            data={"from": msg["phone"], "media": len(msg["attachments"])}, attachments=msg["attachments"]))
    response = twiml(EMPTY_TWIML)
    # the acknowledgement's own time (bench/channels.py reads it)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


@router.post("/webhooks/{tenant_id}/twilio/sms")
async def sms_webhook(tenant_id: str, request: Request) -> Response:
    """An incoming SMS (Twilio's messaging webhook); answers empty TwiML at once."""
    return await _message(request, tenant_id, "sms")


@router.post("/webhooks/{tenant_id}/twilio/whatsapp")
async def whatsapp_webhook(tenant_id: str, request: Request) -> Response:
    """An incoming WhatsApp message; answers empty TwiML at once."""
    return await _message(request, tenant_id, "whatsapp")


# ---- status callbacks -----------------------------------------------------------------------
def _status_channel(params: Any) -> str:
    if params.get("CallSid") and params.get("CallStatus") and not params.get("MessageSid"):
        return "voice"
    ends = (params.get("From") or "", params.get("To") or "")
    return "whatsapp" if any(e.lower().startswith("whatsapp:") for e in ends) else "sms"


@router.post("/webhooks/{tenant_id}/twilio/status")
async def status_webhook(tenant_id: str, request: Request) -> Response:
    """A message's (MessageStatus) or a call's (CallStatus, e.g. completed = hung up) status,
    recorded once per sid and status; a call's end is also told to its conversation."""
    params = await read_form(request)
    channel = _status_channel(params)
    url, signature = signed_url(request.app.state.settings, request), request.headers.get("x-twilio-signature", "")
    await verified(request, tenant_id, channel, url, params, signature)

    if channel == "voice":
        sid, status = params.get("CallSid", ""), params.get("CallStatus", "")
    else:
        sid, status = params.get("MessageSid", ""), params.get("MessageStatus") or params.get("SmsStatus") or ""
    if not sid.isalnum() or not status.replace("-", "").isalpha() or len(sid) > 64 or len(status) > 32:
        raise ChannelError("status callback without a sid and status")
    data = {"sid": sid, "status": status, "channel": channel}
    for field, name in (("ErrorCode", "error_code"), ("ErrorMessage", "error_message"), ("To", "to"),
                        ("CallDuration", "duration")):
        if params.get(field):
            data[name] = clean_short(params.get(field), 200)
    key = f"{tenant_id}:{sid}:{status}"

    def record(session: Session, box: Any) -> bool:
        if channel == "voice" and status in CALL_ENDED:
            # the key (kind "status") and the outbox row telling the conversation, in one step
            duration = data.get("duration", "")
            event = {"status": status, "duration_s": int(duration) if duration.isdigit() and len(duration) < 9 else None}
            return accept_inbound(session, tenant_id=tenant_id, channel=channel, external_id=key, thread=sid,
                                  text="", customer=event, message_id=f"{sid}:ended", data=data,
                                  kind="call_ended", key_kind="status")
        return first_time(session, tenant_id, channel, key, "status", data)

    await db_call(request, record)
    return twiml(EMPTY_TWIML)


@router.get("/v1/channels/twilio/statuses")
def statuses(sid: str | None = Query(default=None, pattern=r"^[A-Za-z0-9]{2,64}$"),
             limit: int = Query(default=200, ge=1, le=1000),
             tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)) -> dict:
    """Status callbacks received for the tenant's Twilio channels (optionally one message/call)."""
    stmt = select(ChannelEvent).where(ChannelEvent.tenant_id == tenant.id, ChannelEvent.kind == "status",
                                      ChannelEvent.channel.in_(CHANNELS))
    if sid:
        stmt = stmt.where(ChannelEvent.external_id.startswith(f"{tenant.id}:{sid}:", autoescape=True))
    rows = session.exec(stmt.order_by(ChannelEvent.id).limit(limit)).all()
    return {"statuses": [{**r.data, "channel": r.channel, "received_at": r.created_at.isoformat()} for r in rows]}


# ---- outbound -------------------------------------------------------------------------------
def reply_text(message: dict[str, Any]) -> str:
    """The message's text; the cited articles' URLs follow it (a text message has no links)."""
    text = (message.get("text") or "").strip()
    urls = []
    for c in message.get("citations") or []:
        url = (c or {}).get("url") if isinstance(c, dict) else None
        if url and url not in urls and url not in text:
            urls.append(url)
    return text + ("\n\n" + "\n".join(urls[:3]) if urls else "")


async def deliver_text(services: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Adapter of `sms` and `whatsapp`: the reply through Twilio's Messages API, once per
    idempotency key (see send_text)."""
    thread, customer = payload["thread"], payload.get("customer") or {}
    to = f"+{thread}" if thread.isdigit() else (customer.get("phone") or "")
    text = reply_text(payload["message"])
    if not to or not text:
        return {"delivered": False, "reason": "no recipient or no text"}
    return await send_text(services, tenant_id=payload["tenant_id"], channel=payload["channel"], to=to, text=text,
                           key=payload["idempotency_key"])


async def deliver_voice(services: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Adapter of `voice`: replies are spoken in the call (TwiML), so this only records."""
    return {"delivered": False, "reason": "spoken in the call"}


outbound.ADAPTERS["sms"] = deliver_text
outbound.ADAPTERS["whatsapp"] = deliver_text
outbound.ADAPTERS["voice"] = deliver_voice

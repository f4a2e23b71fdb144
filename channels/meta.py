"""Facebook Messenger and Instagram (Meta webhooks) and the Send API reply adapter.

GET  /webhooks/{tenant}/meta?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...
     echoes the challenge (text/plain) when the token matches the verify_token of the tenant's
     "messenger" or "instagram" channel (constant-time compare), else 403.
POST /webhooks/{tenant}/meta
  1. the body is read with a limit (1 MB, channels/body.py: 413 past it); a tenant without a
     Messenger or Instagram channel (or no such tenant) is answered exactly like a forged request
     (channels/credentials.py UNKNOWN);
  2. X-Hub-Signature-256 must be "sha256=" + HMAC-SHA256(app_secret, raw body) with the
     app_secret of a configured channel, checked BEFORE the body is parsed: else 403, nothing
     changes. Then the body's `object` names the channel ("page" -> messenger, "instagram" ->
     instagram), whose own app secret must be one that verified (else 403); a signed body that
     names neither (or is not a JSON object) is acknowledged and ignored;
  3. tenant binding: every entry's `id` and every message's `recipient.id` must be the
     channel's configured `page_id` (Messenger) / `account_id` (Instagram): a body for another
     Page is 403 and nothing of it is recorded (with one app shared by several tenants, knowing
     the app secret must not let one tenant write into another's conversations);
  4. every entry[].messaging[] item with a message that is not an echo of our own reply is one
     customer message: thread = the sender id (PSID / IGSID), customer = {"name": id}, text
     normalized (channels.text.inbound_text), attachments ([{type, payload: {url}}]) passed as
     {content_type, url}; every field is type-checked (a field of the wrong type reads as absent);
  5. de-duplicated on the message mid (per tenant) and recorded in the outbox; the answer is
     200 "EVENT_RECEIVED".

Configuration: PUT /v1/channels/messenger {"settings": {"page_id"}, "secrets": {"verify_token",
"app_secret", "page_access_token"}} (Instagram: settings {"account_id"}). Credentials are only
read from the secrets (channels/config.py refuses them in settings).

Outbound: POST {meta_graph_base}/me/messages?access_token=PAGE_TOKEN
{recipient: {id}, messaging_type: "RESPONSE", message: {text}}; texts over 2000 characters go as
several messages. Graph errors: rate limits / temporary codes and HTTP 5xx raise so Temporal
retries; others (bad token 190, permissions, user unavailable) raise a non-retryable
ApplicationError. Parts already sent for an idempotency key are recorded and not sent again.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from temporalio.exceptions import ApplicationError

from api.deps import ensure_engine, get_secret_box
from channels.body import META_LIMIT, as_dict, as_list, as_str, parse_json, read_body
from channels.credentials import UNKNOWN, configured_credentials, credential_cache, lookup
from channels.errors import Forbidden, NotConfigured
from channels.outbound import ADAPTERS
from channels.text import clean_id, inbound_text
from channels.text import split_text as split_parts
from db.channels import accept_inbound, channel_credentials, first_time, was_recorded
from db.engine import run_in_session
from db.errors import NotFound
from workflows import conversation_types as C

log = logging.getLogger("flywheel.channels.meta")

CHANNELS = ("messenger", "instagram")
OBJECTS = {"page": "messenger", "instagram": "instagram"}
OWN_ID = {"messenger": "page_id", "instagram": "account_id"}  # the setting entries must name
MAX_TEXT = 2000                   # the Send API's text limit
MAX_ATTACHMENTS = 10
REFUSED = "invalid X-Hub-Signature-256"
# Graph error codes worth retrying: unknown/temporary errors and rate limits
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 341, 368, 613, 80006})

router = APIRouter(prefix="/webhooks/{tenant}/meta", tags=["webhooks"])


# ---- credentials and verification -----------------------------------------------------------
async def credentials(request: Request, tenant: str) -> dict[str, tuple[dict, dict[str, str]]]:
    """channel -> (settings, secrets) of the tenant's configured Meta channels (cached per
    process); {"messenger": UNKNOWN} when there is none (refused like a forged request)."""
    cache, engine, box = credential_cache(request.app), ensure_engine(request.app), get_secret_box(request)
    out = {}
    for channel in CHANNELS:
        try:
            out[channel] = await lookup(cache, tenant, channel, lambda channel=channel: run_in_session(
                engine, configured_credentials, box, tenant, channel))
        except NotConfigured:
            continue
    return out or {"messenger": UNKNOWN}


def signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signed_by(app_secret: str, header: str, body: bytes) -> bool:
    return bool(app_secret) and hmac.compare_digest(signature(app_secret, body).encode(),
                                                    header.strip().lower().encode())


async def _verified(request: Request, tenant: str, header: str, body: bytes) -> tuple[set[str], dict]:
    """(the configured channels whose app secret signed the body, the credentials that decided
    it): the cached ones, or freshly loaded ones when none of the cached ones signed it (a
    rotation works at once); Forbidden when none did."""
    def signers(creds: dict) -> set[str]:
        return {ch for ch, (_, secrets) in creds.items() if signed_by(secrets.get("app_secret", ""), header, body)}
    creds = await credentials(request, tenant)
    found = signers(creds)
    if not found:
        for channel in CHANNELS:
            credential_cache(request.app).drop(tenant, channel)
        creds = await credentials(request, tenant)
        found = signers(creds)
    if not found:
        raise Forbidden(REFUSED)
    return found, creds


@router.get("")
async def challenge(tenant: str, request: Request) -> PlainTextResponse:
    """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
    q = request.query_params
    creds = await credentials(request, tenant)
    token = q.get("hub.verify_token", "")
    ok = q.get("hub.mode") == "subscribe" and any(
        secrets.get("verify_token") and hmac.compare_digest(secrets["verify_token"].encode(), token.encode())
        for _, secrets in creds.values())
    if not ok:
        raise Forbidden("verify token mismatch")
    return PlainTextResponse(q.get("hub.challenge", "")[:1000])


# ---- normalization --------------------------------------------------------------------------
def attachments_of(message: dict) -> list[dict[str, str]]:
    """Meta's attachments ([{type: image|video|audio|file, payload: {url}}]) as {content_type, url}."""
    out = []
    for item in as_list(message.get("attachments"))[:MAX_ATTACHMENTS]:
        item = as_dict(item)
        url = as_str(as_dict(item.get("payload")).get("url")).strip()
        if url.startswith("https://") and len(url) <= 2000:
            out.append({"content_type": (as_str(item.get("type")) or "file")[:100], "url": url})
    return out


def messages(envelope: dict) -> list[dict[str, Any]]:
    """The customer messages of a webhook body (echoes and other events left out), each with the
    ids it was sent to (entry id, recipient id)."""
    out = []
    for entry in as_list(envelope.get("entry")):
        entry = as_dict(entry)
        for item in as_list(entry.get("messaging")):
            item = as_dict(item)
            msg = as_dict(item.get("message"))
            if not msg or msg.get("is_echo"):
                continue
            sender, mid = clean_id(as_dict(item.get("sender")).get("id")), clean_id(msg.get("mid"))
            text, attachments = inbound_text(msg.get("text")), attachments_of(msg)
            if not mid or not (text or attachments) or not C.THREAD.fullmatch(sender):
                continue
            out.append({"thread": sender, "text": text, "mid": mid, "attachments": attachments,
                        "entry": clean_id(entry.get("id")), "recipient": clean_id(as_dict(item.get("recipient")).get("id"))})
    return out


@router.post("")
async def webhook(tenant: str, request: Request) -> PlainTextResponse:
    body = await read_body(request, META_LIMIT)
    signers, creds = await _verified(request, tenant, request.headers.get("x-hub-signature-256", ""), body)
    envelope = parse_json(body)
    channel = OBJECTS.get(envelope.get("object")) if isinstance(envelope, dict) and \
        isinstance(envelope.get("object"), str) else None
    if channel is None:
        return PlainTextResponse("EVENT_RECEIVED")  # signed, but nothing we handle
    if channel not in signers:
        raise Forbidden(REFUSED)  # e.g. an Instagram body signed with Messenger's app secret
    settings, _ = creds[channel]
    own = str(settings.get(OWN_ID[channel]) or "")
    found = messages(envelope)
    if not own or any(m["entry"] != own or m["recipient"] != own for m in found):
        log.warning("meta webhook for tenant %s refused: a message for another %s than the configured one",
                    tenant, OWN_ID[channel])
        raise Forbidden(f"the body names another {OWN_ID[channel]} than this tenant's {channel} channel")

    def record(session) -> None:  # recorded; the workers' relay hands them to the conversations
        for m in found:
            accept_inbound(session, tenant_id=tenant, channel=channel, external_id=f"{tenant}:{m['mid']}",
                           thread=m["thread"], text=m["text"], customer={"name": m["thread"]},
                           message_id=m["mid"], data={"recipient": m["recipient"]}, attachments=m["attachments"])
    if found:
        await run_in_session(ensure_engine(request.app), record)
    return PlainTextResponse("EVENT_RECEIVED")


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """The Send API's parts of a reply (at most 2000 characters each)."""
    return split_parts(text, limit)


# ---- outbound -------------------------------------------------------------------------------
def message_text(message: dict[str, Any]) -> str:
    """The reply's text with its sources (title and link) under it."""
    text = str(message.get("text") or "")
    lines = [f"[{i}] {c.get('title') or ''} {c.get('url') or ''}".rstrip()
             for i, c in enumerate(message.get("citations") or [], 1)
             if isinstance(c, dict) and (c.get("title") or c.get("url"))]
    return text + ("\n\nSources:\n" + "\n".join(lines) if lines else "")


async def send_api(base: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """One Send API call; returns {recipient_id, message_id} or raises (retryable or not).
    Messages never include the URL: it carries the page access token."""
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            r = await http.post(f"{base.rstrip('/')}/me/messages", params={"access_token": token}, json=body)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"Graph API unreachable: {type(exc).__name__}") from None
    try:
        data = r.json()
    except ValueError:
        data = None
    if r.status_code == 200 and isinstance(data, dict) and data.get("message_id"):
        return data
    error = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), dict) else {}
    code = error.get("code")
    text = f"Send API HTTP {r.status_code}: {str(error.get('message') or 'unexpected answer')[:200]} (code {code})"
    if r.status_code >= 500 or r.status_code == 429 or code in TRANSIENT_CODES or not error:
        raise ApplicationError(text, type="MetaTransient")
    raise ApplicationError(text, type="MetaPermanent", non_retryable=True)


async def send(services: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one reply to the sender of the thread (ADAPTERS["messenger"] and ["instagram"])."""
    tenant, channel = payload["tenant_id"], payload["channel"]
    try:
        _, secrets = await services.db(channel_credentials, services.box, tenant, channel)
    except NotFound:
        raise ApplicationError(f"{channel} is not configured for this tenant", type="NotConfigured",
                               non_retryable=True) from None
    token = secrets.get("page_access_token", "")
    if not token:
        raise ApplicationError(f"the {channel} channel has no page_access_token", type="NotConfigured",
                               non_retryable=True)
    sent = []
    for i, text in enumerate(split_text(message_text(payload["message"]))):
        key = f"{payload['idempotency_key']}:{i}"
        if await services.db(was_recorded, channel, key):
            continue
        data = await send_api(services.settings.meta_graph_base, token, {
            "recipient": {"id": payload["thread"]}, "messaging_type": "RESPONSE", "message": {"text": text}})
        sent.append(str(data.get("message_id")))
        await services.db(first_time, tenant, channel, key, "outbound", {"message_id": data.get("message_id")})
    return {"delivered": True, "recipient": payload["thread"], "message_ids": sent}


for _channel in CHANNELS:
    ADAPTERS[_channel] = send

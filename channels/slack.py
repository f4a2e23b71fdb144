"""Slack: the Events API webhook and the chat.postMessage reply adapter.

Inbound: POST /webhooks/{tenant}/slack/events
  1. the body is read with a limit (512 KB, channels/body.py: 413 past it); a tenant without a
     Slack channel (or no such tenant) is answered exactly like a forged request
     (channels/credentials.py UNKNOWN);
  2. verify Slack's v0 signature over the raw body with the tenant's `signing_secret`
     (X-Slack-Request-Timestamp within 5 minutes, X-Slack-Signature = "v0=" +
     HMAC-SHA256(secret, "v0:{ts}:{body}"), constant-time compare) BEFORE parsing it: else 403,
     nothing changes;
  3. parse it (not JSON, or nested too deep: 400); `url_verification` answers {"challenge"};
     an `event_callback` must carry the tenant's configured `team_id` and `api_app_id` (else
     403 and nothing recorded: with an app shared by several tenants, knowing its signing secret
     must not let one tenant write into another's conversations);
  4. a human `message` event (no bot_id, no subtype other than `file_share`, not our own bot
     user) is normalized to one message: text through channels.text.inbound_text, shared files
     as attachments {content_type, url}; every field is type-checked;
  5. de-duplicated on the event id (Slack retries with X-Slack-Retry-Num and the same event_id);
  6. recorded for the conversation of thread "{channel}-{thread_ts or ts}" and acknowledged.

The thread key carries where to reply: Slack channel ids ([A-Z0-9]) and timestamps
(digits.digits) always fit `conversation_types.THREAD`, so the adapter splits the key back into
(channel, thread_ts); an event whose ids do not have Slack's shape is acknowledged and ignored.

Configuration: PUT /v1/channels/slack {"settings": {"team_id", "api_app_id", "bot_user_id"?},
"secrets": {"signing_secret", "bot_token"}}.

Outbound: chat.postMessage (Bearer bot token) in the thread; the text is escaped for Slack's
mrkdwn (&, <, >), so a reply can never mention @channel or forge a link; citations are links
<url|title> with both parts escaped. Slack answers errors with HTTP 200 and {"ok": false,
"error"}: transient ones (ratelimited, internal_error, HTTP 429/5xx) raise so Temporal retries;
permanent ones (channel_not_found, invalid_auth, ...) raise a non-retryable ApplicationError.
Parts already posted for an idempotency key are recorded (channel event kind "outbound") and
not posted again by a retry.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from datetime import timedelta
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from temporalio.exceptions import ApplicationError

from api.deps import ensure_engine, get_secret_box
from channels.body import SLACK_LIMIT, as_dict, as_list, as_str, parse_json, read_body
from channels.credentials import configured_credentials, credential_cache, or_unknown
from channels.errors import ChannelError, Forbidden
from channels.outbound import ADAPTERS
from channels.text import clean_id, inbound_text
from channels.text import split_text as split_parts
from db.channels import accept_inbound, channel_credentials, first_time, was_recorded
from db.engine import run_in_session
from db.errors import NotFound
from workflows import conversation_types as C
from workflows.conversation_types import conversation_id

log = logging.getLogger("flywheel.channels.slack")

CHANNEL = "slack"
MAX_SKEW_S = 300                  # Slack's replay window: 5 minutes
MAX_TEXT = 39_000                 # chat.postMessage truncates text beyond 40,000 characters
MAX_FILES = 10
REFUSED = "invalid Slack signature"
SLACK_CHANNEL_ID = re.compile(r"[A-Z0-9]{1,40}")
SLACK_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
# chat.postMessage errors that a retry cannot fix
PERMANENT = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "token_expired", "no_permission", "missing_scope",
    "msg_too_long", "no_text", "restricted_action", "invalid_arguments", "invalid_arg_name",
    "invalid_form_data", "invalid_charset", "invalid_blocks", "too_many_attachments",
    "team_access_not_granted", "ekm_access_denied", "org_login_required", "as_user_not_supported",
    "cannot_reply_to_message", "invalid_thread_ts", "thread_reply_not_found", "duplicate_channel_not_found",
})

router = APIRouter(prefix="/webhooks/{tenant}/slack", tags=["webhooks"])


# ---- verification ---------------------------------------------------------------------------
def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature of `body` sent at `timestamp`."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Any, body: bytes, now: float | None = None) -> None:
    """Raise Forbidden unless the request is signed by `secret` within the last 5 minutes."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    given = headers.get("x-slack-signature", "")
    if not secret:
        raise Forbidden("the Slack channel has no signing_secret")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise Forbidden("missing or malformed X-Slack-Request-Timestamp")
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW_S:
        raise Forbidden("stale Slack request (timestamp more than 5 minutes away)")
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), given.encode()):
        raise Forbidden(REFUSED)


def check_binding(envelope: dict, settings: dict) -> None:
    """Forbidden unless the event is for the tenant's configured workspace and app."""
    for field in ("team_id", "api_app_id"):
        configured = str(settings.get(field) or "")
        if not configured or as_str(envelope.get(field)) != configured:
            log.warning("slack event refused: %s does not match the tenant's configured one", field)
            raise Forbidden(f"the event's {field} is not this tenant's Slack {field}")


# ---- normalization --------------------------------------------------------------------------
def thread_key(channel: str, ts: str) -> str:
    return f"{channel}-{ts}"


def thread_target(thread: str) -> tuple[str, str]:
    """(Slack channel id, thread_ts) of a conversation thread key."""
    channel, _, ts = thread.partition("-")
    if not (SLACK_CHANNEL_ID.fullmatch(channel) and SLACK_TS.fullmatch(ts)):
        raise ValueError(f"{thread!r} is not a Slack thread key")
    return channel, ts


def own_bot_users(envelope: dict, settings: dict) -> set[str]:
    """User ids of this app's bot: the configured bot_user_id and the bot authorizations."""
    users = {str(settings["bot_user_id"])} if settings.get("bot_user_id") else set()
    for auth in as_list(envelope.get("authorizations")):
        auth = as_dict(auth)
        if auth.get("is_bot") is True and as_str(auth.get("user_id")):
            users.add(auth["user_id"])
    return users


def files_of(event: dict) -> list[dict[str, str]]:
    """Files shared with the message as {content_type, url} (Slack's private URLs: fetching
    them needs the bot token)."""
    out = []
    for f in as_list(event.get("files"))[:MAX_FILES]:
        f = as_dict(f)
        url = as_str(f.get("url_private")).strip()
        if url.startswith("https://") and len(url) <= 2000:
            out.append({"content_type": (as_str(f.get("mimetype")) or "file")[:100], "url": url})
    return out


def normalize(envelope: dict, settings: dict) -> dict[str, Any] | None:
    """The customer message of an event_callback, or None when it is not one to answer."""
    event = as_dict(envelope.get("event"))
    if event.get("type") != "message":
        return None
    if event.get("bot_id") or event.get("bot_profile") or event.get("subtype") not in (None, "file_share"):
        return None  # bots (us included), edits, joins, deletions...
    user, text, files = clean_id(event.get("user")), inbound_text(event.get("text")), files_of(event)
    if not user or user in own_bot_users(envelope, settings) or not (text or files):
        return None
    channel, ts = as_str(event.get("channel")), as_str(event.get("ts"))
    root = as_str(event.get("thread_ts")) or ts
    if not (SLACK_CHANNEL_ID.fullmatch(channel) and SLACK_TS.fullmatch(ts) and SLACK_TS.fullmatch(root)):
        log.warning("slack event ignored: unexpected channel/ts shape")
        return None
    thread = thread_key(channel, root)
    if not C.THREAD.fullmatch(thread):
        return None
    return {"thread": thread, "text": text, "customer": {"name": user}, "attachments": files,
            "message_id": f"slack:{channel}:{ts}", "event_id": clean_id(envelope.get("event_id")) or f"{channel}:{ts}"}


def _credentials(session: Any, box: Any, tenant: str) -> tuple[dict, dict[str, str]]:
    return configured_credentials(session, box, tenant, CHANNEL, "Slack")


# ---- the webhook ----------------------------------------------------------------------------
@router.post("/events")
async def events(tenant: str, request: Request) -> JSONResponse:
    cache, engine, box = credential_cache(request.app), ensure_engine(request.app), get_secret_box(request)
    load = or_unknown(lambda: run_in_session(engine, _credentials, box, tenant))
    body = await read_body(request, SLACK_LIMIT)
    conf, _ = await cache.verified(tenant, CHANNEL, load,
                                   lambda creds: verify(creds[1].get("signing_secret", ""), request.headers, body))
    envelope = parse_json(body)
    if not isinstance(envelope, dict):
        raise ChannelError("the body is not a JSON object")
    kind = as_str(envelope.get("type"))
    if kind == "url_verification":
        return JSONResponse({"challenge": as_str(envelope.get("challenge"))[:1000]})
    if kind != "event_callback":
        return JSONResponse({"ok": True, "ignored": kind[:100]})
    check_binding(envelope, conf)
    msg = normalize(envelope, conf)
    if msg is None:
        return JSONResponse({"ok": True, "ignored": "not a customer message"})
    key = f"{tenant}:{msg['event_id']}"
    retry = request.headers.get("x-slack-retry-num", "")[:10]
    if not await run_in_session(engine, lambda session: accept_inbound(
            session, tenant_id=tenant, channel=CHANNEL, external_id=key, thread=msg["thread"], text=msg["text"],
            customer=msg["customer"], message_id=msg["message_id"], data={"retry": retry or None},
            attachments=msg["attachments"])):
        return JSONResponse({"ok": True, "duplicate": True})
    # acknowledged now (Slack wants an answer within 3 s); the workers' relay hands it on
    return JSONResponse({"ok": True, "conversation_id": conversation_id(tenant, CHANNEL, msg["thread"])})


# ---- outbound -------------------------------------------------------------------------------
def mrkdwn_escape(text: str) -> str:
    """Text shown as-is in Slack's mrkdwn: &, < and > escaped (no mentions, no links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message_text(message: dict[str, Any]) -> str:
    """The reply's text (escaped) with its sources under it: <url|title> links for http(s) URLs
    (the URL's | percent-encoded, the title escaped), plain escaped titles otherwise."""
    text = mrkdwn_escape(str(message.get("text") or ""))
    lines = []
    for i, c in enumerate(message.get("citations") or [], 1):
        if not isinstance(c, dict) or not (c.get("title") or c.get("url")):
            continue
        url = str(c.get("url") or "")
        label = mrkdwn_escape(str(c.get("title") or url)).replace("|", "\u2223")
        if url.startswith(("https://", "http://")):
            lines.append(f"[{i}] <{mrkdwn_escape(url).replace('|', '%7C')}|{label}>")
        else:
            lines.append(f"[{i}] {label}")
    return text + ("\n\nSources:\n" + "\n".join(lines) if lines else "")


async def post_message(base: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """chat.postMessage; returns Slack's answer or raises (retryable or not)."""
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            r = await http.post(f"{base.rstrip('/')}/chat.postMessage", json=body,
                                headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise RuntimeError(f"Slack unreachable: {type(exc).__name__}") from None
    if r.status_code == 429 or r.status_code >= 500:
        delay = _retry_after(r.headers.get("retry-after"))
        raise ApplicationError(f"Slack HTTP {r.status_code}", type="SlackTransient", next_retry_delay=delay)
    try:
        data = r.json()
    except ValueError:
        raise ApplicationError(f"Slack HTTP {r.status_code}: not JSON", type="SlackTransient") from None
    if not isinstance(data, dict) or r.status_code >= 400:
        raise ApplicationError(f"Slack HTTP {r.status_code}", type="SlackError", non_retryable=r.status_code < 500)
    if not data.get("ok"):
        error = str(data.get("error") or "unknown_error")
        if error in PERMANENT:
            raise ApplicationError(f"Slack chat.postMessage: {error}", type="SlackPermanent", non_retryable=True)
        raise ApplicationError(f"Slack chat.postMessage: {error}", type="SlackTransient",
                               next_retry_delay=_retry_after(r.headers.get("retry-after")))
    return data


def _retry_after(value: str | None) -> timedelta | None:
    try:
        return timedelta(seconds=min(max(float(value), 1.0), 60.0)) if value else None
    except ValueError:
        return None


async def send(services: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Post one reply in the conversation's Slack thread (the ADAPTERS["slack"] adapter)."""
    tenant = payload["tenant_id"]
    try:
        _, secrets = await services.db(channel_credentials, services.box, tenant, CHANNEL)
    except NotFound:
        raise ApplicationError("Slack is not configured for this tenant", type="NotConfigured",
                               non_retryable=True) from None
    token = secrets.get("bot_token", "")
    if not token:
        raise ApplicationError("the Slack channel has no bot_token", type="NotConfigured", non_retryable=True)
    try:
        channel, thread_ts = thread_target(payload["thread"])
    except ValueError as exc:
        raise ApplicationError(str(exc), type="BadThread", non_retryable=True) from None
    parts = split_parts(message_text(payload["message"]), MAX_TEXT)
    base = services.settings.slack_api_base
    posted = []
    for i, text in enumerate(parts):
        key = f"{payload['idempotency_key']}:{i}"
        if await services.db(was_recorded, CHANNEL, key):
            continue
        data = await post_message(base, token, {"channel": channel, "thread_ts": thread_ts, "text": text})
        posted.append(str(data.get("ts") or ""))
        await services.db(first_time, tenant, CHANNEL, key, "outbound", {"ts": data.get("ts")})
    return {"delivered": True, "channel": channel, "thread_ts": thread_ts, "posted": posted}


ADAPTERS[CHANNEL] = send

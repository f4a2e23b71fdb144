"""What Twilio's webhooks and its REST client share: the signed URL, the form (read with a 64 KB
limit, channels/body.py), the signature check (an unknown tenant or channel is answered exactly
like a forged request: channels/credentials.py UNKNOWN), phone-number thread keys,
the REST client (pointed at `settings.twilio_api_base` when set) and idempotent sending."""
from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import ImmutableMultiDict
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client as TwilioClient
from twilio.twiml.messaging_response import MessagingResponse

from api.deps import ensure_engine, get_secret_box
from channels.body import TWILIO_LIMIT, read_body
from channels.credentials import configured_credentials, credential_cache, or_unknown
from channels.errors import ChannelError, Forbidden, NotConfigured
from channels.text import split_text
from db.channels import first_time, recorded_event
from db.engine import run_in_session

log = logging.getLogger("flywheel.channels.twilio")
R = TypeVar("R")

REFUSED = "invalid Twilio signature"
SMS_LIMIT = 1600                 # Twilio rejects longer bodies (error 21617)
REST_TIMEOUT_S = 10.0            # below the deliver activity's 30 s start-to-close timeout
PHONE = re.compile(r"\+?[0-9]{3,20}")
EMPTY_TWIML = str(MessagingResponse())  # <?xml ...?><Response />


# ---- the request ----------------------------------------------------------------------------
def signed_url(settings: Any, request: Request) -> str:
    """The URL Twilio signed: the public base URL (as Twilio sees this API, e.g. behind a proxy)
    + the request's path + query."""
    query = request.url.query
    return settings.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


async def read_form(request: Request) -> ImmutableMultiDict:
    """The form-encoded body as a multi-dict (the signature covers every value), at most 64 KB."""
    body = await read_body(request, TWILIO_LIMIT, "form")
    try:
        pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=500)
    except ValueError:
        raise ChannelError("the form has too many fields") from None
    return ImmutableMultiDict(pairs)


def verify(auth_token: str, url: str, params: ImmutableMultiDict, signature: str) -> None:
    """X-Twilio-Signature (HMAC-SHA1 of URL + sorted params with the account's auth token)."""
    if not signature or not auth_token or not RequestValidator(auth_token).validate(url, params, signature):
        raise Forbidden(REFUSED)


def db_call(request: Request, fn: Callable[..., R], *args: Any) -> Awaitable[R]:
    """Run `fn(session, box, *args)` in a thread (the database driver is synchronous)."""
    return run_in_session(ensure_engine(request.app), fn, get_secret_box(request), *args)


def _loader(request: Request, tenant_id: str, channel: str):
    return or_unknown(lambda: db_call(request, configured_credentials, tenant_id, channel))


async def signed_form(request: Request, tenant_id: str, channel: str) -> tuple[ImmutableMultiDict, tuple[dict, dict]]:
    """(form, (settings, secrets)) of a webhook for `channel` whose signature checked out: the
    form is read (bounded), then verified."""
    params = await read_form(request)
    creds = await verified(request, tenant_id, channel, signed_url(request.app.state.settings, request), params,
                           request.headers.get("x-twilio-signature", ""))
    return params, creds


async def verified(request: Request, tenant_id: str, channel: str, url: str, params: ImmutableMultiDict,
                   signature: str) -> tuple[dict, dict[str, str]]:
    """The channel's (settings, secrets) once the request's signature checked out (credentials
    cached per process: channels/credentials.py); Forbidden otherwise."""
    return await credential_cache(request.app).verified(
        tenant_id, channel, _loader(request, tenant_id, channel),
        lambda creds: verify(creds[1].get("auth_token", ""), url, params, signature))


def check_number(cfg: dict, channel: str, params: ImmutableMultiDict) -> None:
    """Tenant binding: a message or call to another number (or messaging service) than the
    channel's configured one is refused (Forbidden), so a tenant sharing a Twilio account with
    another cannot write into the other's conversations."""
    if cfg.get("messaging_service_sid") and params.get("MessagingServiceSid"):
        if params.get("MessagingServiceSid") != cfg["messaging_service_sid"]:
            raise Forbidden(f"the request is for another messaging service than this tenant's {channel} channel")
        return
    number = str(cfg.get("phone_number") or "")
    if number:
        try:
            to = phone_thread(params.get("To") or "")[1]
        except ChannelError:
            to = ""
        if to != "+" + number.lstrip("+"):
            raise Forbidden(f"the request is for another number than this tenant's {channel} channel")


def twiml(xml: str) -> Response:
    return Response(content=xml, media_type="text/xml")


# ---- phone numbers and thread keys ----------------------------------------------------------
def phone_thread(address: str) -> tuple[str, str]:
    """("15551234567", "+15551234567") of "+15551234567" or "whatsapp:+15551234567": the thread
    key is the E.164 number without "+" (a thread key starts with a letter or digit)."""
    number = address.split(":", 1)[1] if address.lower().startswith("whatsapp:") else address
    number = re.sub(r"[\s().-]", "", number)
    if not PHONE.fullmatch(number):
        raise ChannelError("From: not a phone number")
    digits = number.lstrip("+")
    return digits, "+" + digits


def address(channel: str, number: str) -> str:
    """A number as Twilio addresses it on the channel ("whatsapp:+1..." on WhatsApp)."""
    number = number.strip()
    if channel == "whatsapp" and not number.lower().startswith("whatsapp:"):
        return f"whatsapp:{number}"
    return number


# ---- the REST client ------------------------------------------------------------------------
_clients: dict[tuple[str, str, str], TwilioClient] = {}
_clients_lock = threading.Lock()


def rest_client(account_sid: str, auth_token: str, api_base: str) -> TwilioClient:
    """One client (and HTTP connection pool) per account; `api_base` replaces
    https://api.twilio.com (the Api domain's base_url) when set."""
    key = (account_sid, auth_token, api_base)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) > 256:
                _clients.clear()
            client = TwilioClient(account_sid, auth_token, http_client=TwilioHttpClient(timeout=REST_TIMEOUT_S))
            if api_base:
                client.api.base_url = api_base.rstrip("/")
            _clients[key] = client
        return client


class PermanentFailure(Exception):
    """Twilio refused the message for good (bad number, unverified sender ...): no retry."""


def _create(client: TwilioClient, **kwargs: Any) -> dict[str, Any]:
    try:
        msg = client.messages.create(**kwargs)
    except TwilioRestException as err:
        if 400 <= (err.status or 0) < 500 and err.status not in (408, 429):
            raise PermanentFailure(f"twilio {err.status} {err.code}: {err.msg}") from None
        raise  # 5xx, 429: Temporal retries the activity
    return {"sid": msg.sid, "status": msg.status}


async def send_text(services: Any, *, tenant_id: str, channel: str, to: str, text: str, key: str) -> dict[str, Any]:
    """Send `text` to `to` on sms/whatsapp once per `key`.

    Idempotency: a part whose key was recorded as sent (channel event kind "outbound") is not sent
    again, so a retried activity after success sends nothing. The key is recorded right after
    Twilio accepted the message; a crash between the two sends it again on retry (at least once)."""
    try:
        cfg, secrets = await services.db(configured_credentials, services.box, tenant_id, channel)
    except NotConfigured as err:
        return {"delivered": False, "reason": err.message}
    sender = cfg.get("phone_number") or ""
    if not sender and not cfg.get("messaging_service_sid"):
        return {"delivered": False, "reason": f"channel {channel!r} has no phone_number"}
    if not secrets.get("account_sid") or not secrets.get("auth_token"):
        return {"delivered": False, "reason": f"channel {channel!r} has no account_sid/auth_token"}
    client = rest_client(secrets["account_sid"], secrets["auth_token"], services.settings.twilio_api_base)
    status_callback = f"{services.settings.public_url.rstrip('/')}/webhooks/{tenant_id}/twilio/status"
    sent: list[str] = []
    for i, part in enumerate(split_text(text, SMS_LIMIT)):
        part_key = key if i == 0 else f"{key}#{i}"
        before = await services.db(recorded_event, channel, part_key)
        if before is not None:
            sent.append(before.get("sid", ""))
            continue
        args: dict[str, Any] = {"to": address(channel, to), "body": part, "status_callback": status_callback}
        if sender:
            args["from_"] = address(channel, sender)
        else:
            args["messaging_service_sid"] = cfg["messaging_service_sid"]
        try:
            result = await asyncio.to_thread(_create, client, **args)
        except PermanentFailure as err:
            log.warning("twilio refused a message on %s for tenant %s: %s", channel, tenant_id, err)
            return {"delivered": False, "reason": str(err), "sids": sent}
        await services.db(first_time, tenant_id, channel, part_key, "outbound",
                          {"sid": result["sid"], "to": args["to"], "status": result["status"]})
        sent.append(result["sid"])
    return {"delivered": bool(sent), "sids": sent}

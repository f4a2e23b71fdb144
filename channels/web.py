"""Web messenger: an embeddable chat widget and its public JSON/SSE endpoints.

Embedding (any page, any origin the tenant allows):

    <script src="https://flywheel.example/widget.js" data-key="pk_..." async></script>

Configuration: PUT /v1/channels/web {"settings": {"public_key"?, "allowed_origins": [...],
"title"?, "greeting"?}}. The public key is NOT a secret (it is in the page's HTML): it only names
the tenant's widget. When absent it is generated ("pk_" + 22 url-safe characters) and stored in
the channel settings; a later PUT without it keeps the existing key. Generation and validation run
in a mapper hook on ChannelConfig rows of the "web" channel (registered when this module is
imported, which the API app does at start), so the generic channels route needs no web-specific
code. POST /v1/channels/web/rotate-key issues a new key.

Public endpoints (no API key; the public key in the path names the tenant):

    GET  /widget.js, /widget.css                  the widget (static, cacheable)
    GET  /widget/demo                             web/demo.html with the snippet filled in
    GET  /public/v1/{key}/config                  {title, greeting}
    POST /public/v1/{key}/conversations/{visitor}/messages  {text, message_id} -> the turn's result
    GET  /public/v1/{key}/conversations/{visitor}          transcript (resume after a reload)
    GET  /public/v1/{key}/conversations/{visitor}/events   Server-Sent Events: new messages
    POST /public/v1/{key}/conversations/{visitor}/person   ask for a person (hands off)

The visitor id is 128 random bits chosen by the browser (kept in localStorage); it is the thread
of the conversation, so it works as the visitor's bearer secret for the transcript. Visitors are
anonymous: identity fields (email, phone) are not accepted from the page, since nothing verifies
them and procedures may act on them.

CORS: responses carry Access-Control-Allow-Origin only for the tenant's `allowed_origins` (or
"*") and the API's own origin; a browser request from any other origin (an Origin header that is
not allowed) gets 403 and changes nothing. Requests without Origin (curl, servers) are served.

Public views never show internal data: system notes are replaced by short notices (or dropped),
confidences, procedure ids, agent names and non-http(s) citation links are removed.

Outbound: delivery to the web is the SSE stream reading the transcript, so ADAPTERS["web"]
returns delivered without I/O.

Order of checks on every public endpoint: the key (404), the Origin (403), the visitor id and
the rate limits (429) come first; only then is the body read (at most 32 KB, channels/body.py:
413 past it) and Temporal reached. So a forged or over-limit request never waits on Temporal
(with Temporal away it gets its 403/429, not 503) and never makes the API buffer a body.

The visitor's text goes through channels.text.inbound_text (NUL and control characters removed,
newlines normalized) like every channel's inbound text.

Limits (per API process, in memory): messages per visitor and per client address (token
buckets); concurrent event streams per visitor (4), per tenant (settings.web_streams_per_tenant)
and per client address (settings.web_streams_per_address); over a limit -> 429 with
Retry-After. A stream polls the conversation every 0.5 s after something changed and backs off
(x1.5 per quiet poll) to MAX_POLL_S while nothing does.
"""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import weakref
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select as sa_select
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError

from api.deps import current_tenant, ensure_engine, get_settings, get_temporal
from api.errors import ApiError, InvalidBody, error_json
from channels.body import WEB_LIMIT, read_body
from channels.config import InvalidConfig
from channels.errors import ChannelError, NotConfigured
from channels.outbound import ADAPTERS
from channels.text import inbound_text
from db.channels import get_channel
from db.conversations import get_conversation, list_messages
from db.engine import call_in_session
from db.errors import NotFound, StoreError
from db.models import ChannelConfig, Tenant, WidgetKey
from workflows import conversation_types as C

CHANNEL = "web"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PUBLIC_KEY = re.compile(r"pk_[A-Za-z0-9_-]{16,64}")
VISITOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{15,63}")
MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
PERSON_TEXT = "I'd like to talk to a person"

POLL_S = 0.5              # SSE: transcript poll right after something changed ...
MAX_POLL_S = 4.0          # ... backing off to this while nothing does
IDLE_POLL_S = 10.0        # ... once the conversation is closed (a new message starts a new one)
HEARTBEAT_S = 15.0        # SSE comment line keeping proxies from closing the stream
STREAM_MAX_S = 15 * 60    # a stream ends after this long; EventSource reconnects (Last-Event-ID)
KEY_CACHE_S = 5.0         # public key -> tenant lookups are cached this long
MAX_STREAMS_PER_VISITOR = 4
VISITOR_RATE = (8, 1 / 3)     # token bucket: burst, tokens per second (20 messages/minute sustained)
ADDRESS_RATE = (60, 1.0)      # per client address (all visitors behind it)

PUBLIC_ROLES = {"customer", "assistant", "agent"}
# System notes of the workflow shown to the visitor as neutral notices; every other note (handoff
# reasons, procedure starts, ratings) stays internal.
SYSTEM_NOTICES = (("taken over by", "A person from our team joined the conversation."),
                  ("returned to the AI", "You are chatting with our assistant again."),
                  ("conversation closed", "This conversation has ended."))


class WidgetSettings(BaseModel):
    """The web channel's settings (public: they are served to the widget)."""

    model_config = ConfigDict(extra="forbid")
    public_key: str | None = Field(default=None, pattern=PUBLIC_KEY.pattern)
    allowed_origins: list[str] = Field(default_factory=list, max_length=50)
    title: str = Field(default="Chat with us", max_length=80)
    greeting: str = Field(default="Hi! How can we help?", max_length=500)


class WebMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4000)
    message_id: str = Field(default="", max_length=100)


class TooManyRequests(ApiError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class UnknownKey(ApiError):
    status, code = 404, "not_found"


# ---- configuration: key generation and validation -------------------------------------------

def new_public_key() -> str:
    return "pk_" + secrets.token_urlsafe(16)


def normalize_origin(value: Any) -> str:
    """"https://Shop.example:443/" -> "https://shop.example"; "*" stays; anything else raises."""
    if value == "*":
        return "*"
    if not isinstance(value, str) or len(value) > 300:
        raise InvalidConfig(f"settings.allowed_origins: {value!r} is not an origin")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidConfig(f"settings.allowed_origins: {value!r} is not an origin like https://shop.example")
    try:
        port = parts.port
    except ValueError:
        raise InvalidConfig(f"settings.allowed_origins: {value!r} has a bad port") from None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _validated(settings: dict, previous: dict | None) -> dict:
    try:
        model = WidgetSettings.model_validate(settings or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise InvalidConfig(f"settings.{where}: {first.get('msg')}") from None
    out = model.model_dump()
    out["allowed_origins"] = sorted({normalize_origin(o) for o in model.allowed_origins})
    out["public_key"] = model.public_key or (previous or {}).get("public_key") or new_public_key()
    return out


def _key_taken(connection, key: str, tenant_id: str) -> bool:
    table = WidgetKey.__table__
    owner = connection.execute(sa_select(table.c.tenant_id).where(table.c.public_key == key)).scalar()
    return owner is not None and owner != tenant_id


def _before_write(mapper, connection, target: ChannelConfig) -> None:
    """Fill in and check the web channel's settings whenever its row is written."""
    if target.channel != CHANNEL:
        return
    history = sa_inspect(target).attrs.settings.history
    previous = history.deleted[0] if history.deleted else None
    settings = _validated(dict(target.settings or {}), previous)
    if _key_taken(connection, settings["public_key"], target.tenant_id):
        raise InvalidConfig("settings.public_key: used by another widget; omit it to generate one")
    target.settings = settings


def _after_write(mapper, connection, target: ChannelConfig) -> None:
    """The key -> tenant row, in the same transaction (a concurrent claim of the same key by
    another tenant fails on the primary key: 409)."""
    if target.channel != CHANNEL:
        return
    table = WidgetKey.__table__
    connection.execute(table.delete().where(table.c.tenant_id == target.tenant_id))
    connection.execute(table.insert().values(public_key=target.settings["public_key"], tenant_id=target.tenant_id))


event.listen(ChannelConfig, "before_insert", _before_write)
event.listen(ChannelConfig, "before_update", _before_write)
event.listen(ChannelConfig, "after_insert", _after_write)
event.listen(ChannelConfig, "after_update", _after_write)


# ---- public key -> tenant ---------------------------------------------------------------------

_key_cache: dict[str, tuple[float, tuple[str, dict] | None]] = {}
_backfilled = False


def backfill_widget_keys(session: Session) -> int:
    """Key rows for web channels configured before widget_keys existed; returns how many."""
    have = set(session.exec(select(WidgetKey.tenant_id)))
    added = 0
    for row in session.exec(select(ChannelConfig).where(ChannelConfig.channel == CHANNEL)):
        key = (row.settings or {}).get("public_key")
        if row.tenant_id in have or not key or session.get(WidgetKey, key) is not None:
            continue
        session.add(WidgetKey(public_key=key, tenant_id=row.tenant_id))
        added += 1
    if added:
        session.commit()
    return added


def find_widget(session: Session, public_key: str) -> tuple[str, dict] | None:
    """(tenant id, settings) of the web channel with this public key (an indexed lookup)."""
    global _backfilled
    if not _backfilled:  # once per process
        backfill_widget_keys(session)
        _backfilled = True
    owner = session.get(WidgetKey, public_key)
    if owner is None:
        return None
    row = session.exec(select(ChannelConfig).where(ChannelConfig.tenant_id == owner.tenant_id,
                                                   ChannelConfig.channel == CHANNEL)).first()
    if row is None or (row.settings or {}).get("public_key") != public_key:
        return None
    return row.tenant_id, dict(row.settings)


async def _db(request: Request, fn: Callable, *args: Any) -> Any:
    """Run `fn(session, *args)` in a worker thread with its own session."""
    return await run_in_threadpool(call_in_session, ensure_engine(request.app), fn, *args)


async def _widget(request: Request, public_key: str) -> tuple[str, dict]:
    if not PUBLIC_KEY.fullmatch(public_key):
        raise UnknownKey("unknown widget key")
    now = time.monotonic()
    hit = _key_cache.get(public_key)
    if hit is None or now - hit[0] > KEY_CACHE_S:
        if len(_key_cache) > 10_000:
            _key_cache.clear()
        hit = (now, await _db(request, find_widget, public_key))
        _key_cache[public_key] = hit
    if hit[1] is None:
        raise UnknownKey("unknown widget key")
    return hit[1]


# ---- CORS -------------------------------------------------------------------------------------

def _own_origin(request: Request) -> str:
    try:
        return normalize_origin(get_settings(request).public_url.rstrip("/"))
    except ChannelError:
        return ""


def _cors(request: Request, settings: dict) -> dict[str, str]:
    """CORS headers for the request's Origin when the widget allows it; Forbidden for a browser
    request from any other origin; {} without Origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return {}
    try:
        normalized = normalize_origin(origin)
    except ChannelError:
        normalized = ""
    allowed = settings.get("allowed_origins") or []
    if normalized and ("*" in allowed or normalized in allowed or normalized == _own_origin(request)):
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    raise Forbidden("this origin may not use the widget")


def _respond(content: Any, cors: dict[str, str], status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers={**cors, "Cache-Control": "no-store"})


def _error(exc: Exception, cors: dict[str, str]) -> JSONResponse:
    """Errors after the widget is known carry CORS headers, so the widget can read them."""
    if isinstance(exc, ApiError):
        response = error_json(exc.status, exc.code, exc.message)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, ChannelError):
        code = {403: "forbidden", 404: "not_found", 413: "too_large"}.get(exc.status, "bad_request")
        response = error_json(exc.status, code, exc.message)
    elif isinstance(exc, NotFound):
        response = error_json(404, "not_found", str(exc))
    else:
        raise exc
    response.headers.update(cors)
    return response


# ---- rate limits ------------------------------------------------------------------------------

class Buckets:
    """Token buckets by key (in memory, per process)."""

    def __init__(self, burst: float, per_s: float, max_keys: int = 50_000) -> None:
        self.burst, self.per_s, self.max_keys = burst, per_s, max_keys
        self.state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed (a token is taken), else seconds until the next token."""
        now = time.monotonic() if now is None else now
        tokens, at = self.state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_s)
        if tokens < 1:
            self.state[key] = (tokens, now)
            return (1 - tokens) / self.per_s
        if len(self.state) >= self.max_keys and key not in self.state:
            self.state.clear()
        self.state[key] = (tokens - 1, now)
        return 0.0


_visitor_buckets = Buckets(*VISITOR_RATE)
_address_buckets = Buckets(*ADDRESS_RATE)


class StreamSlots:
    """Concurrent event streams by key (visitor, tenant, client address), per process. A slot is
    taken before the response starts and given back when the stream ends, or when its generator
    is collected without ever having run (a client that left before the first byte)."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def take(self, limits: list[tuple[str, int, str]]) -> Callable[[], None]:
        """Take one slot of every (key, limit, what); TooManyRequests naming the first full one."""
        for key, limit, what in limits:
            if self.open[key] >= limit:
                raise TooManyRequests(f"too many open streams {what}", 5)
        for key, _, _ in limits:
            self.open[key] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if given_back:
                return
            given_back = True
            for key, _, _ in limits:
                self.open[key] -= 1
                if self.open[key] <= 0:
                    del self.open[key]
        return give_back


_streams = StreamSlots()


def next_poll(interval: float, changed: bool, closed: bool) -> float:
    """The stream's next poll interval: POLL_S after a change, x1.5 per quiet poll up to
    MAX_POLL_S, IDLE_POLL_S once the conversation is closed."""
    if closed:
        return IDLE_POLL_S
    return POLL_S if changed else min(MAX_POLL_S, interval * 1.5)


def _address(request: Request) -> str:
    return request.client.host if request.client else "-"


def _limit(request: Request, tenant_id: str, visitor: str) -> None:
    address = _address(request)
    for buckets, key in ((_visitor_buckets, f"{tenant_id}/{visitor}"), (_address_buckets, f"{tenant_id}/{address}")):
        wait = buckets.take(key)
        if wait:
            raise TooManyRequests("too many messages; wait a moment", wait)


# ---- public views -----------------------------------------------------------------------------

def _safe_url(url: Any) -> str | None:
    if not isinstance(url, str) or len(url) > 2000:
        return None
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def public_message(m: dict) -> dict | None:
    """What the visitor may see of one transcript message (None: internal)."""
    role, text = m.get("role"), m.get("text") or ""
    if role == "system":
        notice = next((n for prefix, n in SYSTEM_NOTICES if text.startswith(prefix)), None)
        if notice is None:
            return None
        role, text = "system", notice
    elif role not in PUBLIC_ROLES:
        return None
    citations = []
    for c in m.get("citations") or []:
        if isinstance(c, dict):
            citations.append({"title": str(c.get("title") or "")[:300], "url": _safe_url(c.get("url"))})
    return {"seq": m["seq"], "role": role, "text": text, "citations": citations, "at": m.get("at")}


def public_messages(messages: list[dict]) -> list[dict]:
    return [p for p in (public_message(m) for m in messages) if p is not None]


def _db_transcript(session: Session, tenant_id: str, cid: str) -> tuple[str, list[dict]] | None:
    try:
        row = get_conversation(session, tenant_id, cid)
    except NotFound:
        return None
    return row.status, [{"seq": m.seq, "role": m.role, "text": m.text, "citations": m.citations,
                         "at": m.at.isoformat(), **m.extra} for m in list_messages(session, tenant_id, cid)]


async def _live(client: Client, cid: str) -> dict | None:
    """The running conversation's state in one call (None when it does not run)."""
    try:
        return await client.get_workflow_handle(cid).query(
            "state", reject_condition=QueryRejectCondition.NOT_OPEN, rpc_timeout=timedelta(seconds=10))
    except (WorkflowQueryRejectedError, RPCError):
        return None


async def snapshot(request: Request, client: Client, tenant_id: str, cid: str,
                   full: bool = False) -> tuple[str | None, list[dict]]:
    """(status, messages) of a conversation: the running workflow's state (its last 50 messages)
    merged with the database projection when `full` or when the workflow does not run."""
    live = await _live(client, cid)
    stored = None
    if live is None or full:
        stored = await _db(request, _db_transcript, tenant_id, cid)
    if live is None and stored is None:
        return None, []
    by_seq = {m["seq"]: m for m in (stored[1] if stored else [])}
    by_seq.update({m["seq"]: m for m in (live or {}).get("messages", [])})
    status = (live or {}).get("status") or (stored[0] if stored else None)
    return status, [by_seq[s] for s in sorted(by_seq)]


def _check_visitor(visitor: str) -> None:
    if not VISITOR.fullmatch(visitor) or not C.THREAD.fullmatch(visitor):
        raise InvalidBody("visitor: 16-64 letters, digits, _ and -")


# ---- routes -----------------------------------------------------------------------------------

router = APIRouter(tags=["web messenger"])


def _static(name: str, media_type: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, media_type=media_type,
                        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"})


@router.get("/widget.js", include_in_schema=False)
def widget_js() -> FileResponse:
    return _static("widget.js", "text/javascript; charset=utf-8")


@router.get("/widget.css", include_in_schema=False)
def widget_css() -> FileResponse:
    return _static("widget.css", "text/css; charset=utf-8")


DEMO_TENANT = "demo"


def _demo_key(session: Session) -> str | None:
    """The demo tenant's widget key; its web channel is configured on first use (dev demo)."""
    from db.channels import put_channel
    if session.get(Tenant, DEMO_TENANT) is None:
        return None
    try:
        return get_channel(session, DEMO_TENANT, CHANNEL).settings.get("public_key")
    except NotFound:
        return put_channel(session, None, DEMO_TENANT, CHANNEL, {"title": "Demo shop support"}, {}) \
            .settings.get("public_key")


@router.get("/widget/demo", include_in_schema=False)
async def demo_page(request: Request, key: str | None = None) -> HTMLResponse:
    """web/demo.html with the snippet for `?key=` or the demo tenant's widget."""
    if key is not None and not PUBLIC_KEY.fullmatch(key):
        raise InvalidBody("key: not a widget key")
    key = key or await _db(request, _demo_key)
    if not key:
        raise NotConfigured("no demo tenant: pass ?key=pk_... or run `flywheel dev`")
    base = get_settings(request).public_url.rstrip("/")
    html = (WEB_DIR / "demo.html").read_text().replace("{{API_BASE}}", base).replace("{{PUBLIC_KEY}}", key)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.post("/v1/channels/web/rotate-key")
async def rotate_key(request: Request, tenant: Tenant = Depends(current_tenant)) -> dict[str, Any]:
    """A new public key for the tenant's widget (pages embedding the old one stop working)."""
    from db.channels import put_channel

    def rotate(session: Session) -> dict:
        row = get_channel(session, tenant.id, CHANNEL)
        return put_channel(session, None, tenant.id, CHANNEL, {**row.settings, "public_key": new_public_key()},
                           {}).settings
    settings = await _db(request, rotate)
    _key_cache.clear()
    return {"channel": CHANNEL, "settings": settings}


@router.options("/public/v1/{public_key}/{rest:path}", include_in_schema=False)
async def preflight(public_key: str, rest: str, request: Request) -> Response:
    _, settings = await _widget(request, public_key)
    cors = _cors(request, settings)
    return Response(status_code=204, headers={
        **cors, "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Last-Event-ID", "Access-Control-Max-Age": "600"})


@router.get("/public/v1/{public_key}/config")
async def widget_config(public_key: str, request: Request) -> Response:
    """The widget's title and greeting."""
    _, settings = await _widget(request, public_key)
    cors = _cors(request, settings)
    return _respond({"title": settings.get("title"), "greeting": settings.get("greeting")}, cors)


async def _turn(request: Request, public_key: str, visitor: str, text: str | None) -> Response:
    tenant_id, settings = await _widget(request, public_key)
    cors = _cors(request, settings)
    try:
        _check_visitor(visitor)
        _limit(request, tenant_id, visitor)
        if text is None:  # a message: the body is read and parsed here so errors carry CORS headers
            try:
                body = WebMessage.model_validate_json(await read_body(request, WEB_LIMIT, "message"))
            except ValidationError as err:
                first = err.errors()[0]
                raise InvalidBody(f"{'.'.join(str(p) for p in first.get('loc', ())) or 'body'}: "
                                  f"{first.get('msg')}") from None
            if body.message_id and not MESSAGE_ID.fullmatch(body.message_id):
                raise InvalidBody("message_id: letters, digits and _ . : -")
            text, message_id = inbound_text(body.text), body.message_id
        else:
            message_id = ""
        if not text:
            raise InvalidBody("text: a message needs text")
        client = await get_temporal(request)  # only now: a refused request never waits on Temporal
        from api.routes.conversations import send_message
        result = await send_message(client, get_settings(request), tenant_id, CHANNEL, visitor, text, {},
                                    message_id)
        cid = C.conversation_id(tenant_id, CHANNEL, visitor)
        status, messages = await snapshot(request, client, tenant_id, cid)
        reply = result.get("reply") or {}
        return _respond({"reply": {"text": reply.get("text", ""),
                                   "citations": public_message({"seq": 0, "role": "assistant", "text": "",
                                                                "citations": reply.get("citations")})["citations"]},
                         "status": result.get("status") or status,
                         "messages": public_messages(messages)}, cors)
    except (ApiError, ChannelError, StoreError) as exc:
        return _error(exc, cors)


@router.post("/public/v1/{public_key}/conversations/{visitor}/messages")
async def post_message(public_key: str, visitor: str, request: Request) -> Response:
    """The visitor's message; waits for the turn: {reply: {text, citations}, status, messages}."""
    return await _turn(request, public_key, visitor, None)


@router.post("/public/v1/{public_key}/conversations/{visitor}/person")
async def ask_for_person(public_key: str, visitor: str, request: Request) -> Response:
    """"Talk to a person": the customer's request, which hands the conversation off."""
    return await _turn(request, public_key, visitor, PERSON_TEXT)


@router.get("/public/v1/{public_key}/conversations/{visitor}")
async def transcript(public_key: str, visitor: str, request: Request) -> Response:
    """The visitor's transcript (empty when the conversation has not started)."""
    tenant_id, settings = await _widget(request, public_key)
    cors = _cors(request, settings)
    try:
        _check_visitor(visitor)
        client = await get_temporal(request)
        status, messages = await snapshot(request, client, tenant_id, C.conversation_id(tenant_id, CHANNEL, visitor),
                                          full=True)
        return _respond({"status": status, "messages": public_messages(messages)}, cors)
    except (ApiError, ChannelError, StoreError) as exc:
        return _error(exc, cors)


def _sse(event_name: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@router.get("/public/v1/{public_key}/conversations/{visitor}/events")
async def events(public_key: str, visitor: str, request: Request, after: int = 0) -> Response:
    """Server-Sent Events: `message` (id = seq) for every new public message after `after` (or
    Last-Event-ID), `status` when the conversation's status changes, comment heartbeats."""
    tenant_id, settings = await _widget(request, public_key)
    cors = _cors(request, settings)
    try:
        _check_visitor(visitor)
        last = request.headers.get("last-event-id", "")
        after = int(last) if last.isdigit() and len(last) < 12 else max(0, after)
        app_settings = get_settings(request)
        give_back = _streams.take([
            (f"visitor:{tenant_id}/{visitor}", MAX_STREAMS_PER_VISITOR, "for this visitor"),
            (f"tenant:{tenant_id}", app_settings.web_streams_per_tenant, "for this widget"),
            (f"address:{_address(request)}", app_settings.web_streams_per_address, "from this address")])
    except (ApiError, ChannelError) as exc:
        return _error(exc, cors)
    try:
        client = await get_temporal(request)
    except ApiError as exc:
        give_back()
        return _error(exc, cors)
    cid = C.conversation_id(tenant_id, CHANNEL, visitor)

    async def stream():
        nonlocal after
        try:
            yield b"retry: 2000\n: connected\n\n"
            started = beat = time.monotonic()
            status_seen: str | None = None
            interval = POLL_S
            while time.monotonic() - started < STREAM_MAX_S:
                if await request.is_disconnected():
                    return
                status, messages = await snapshot(request, client, tenant_id, cid)
                changed = False
                for m in messages:
                    if m["seq"] > after:
                        after, changed = m["seq"], True
                        view = public_message(m)
                        if view is not None:
                            yield _sse("message", view, m["seq"])
                            beat = time.monotonic()
                if status != status_seen and status is not None:
                    status_seen, changed = status, True
                    yield _sse("status", {"status": status})
                if time.monotonic() - beat > HEARTBEAT_S:
                    yield b": ping\n\n"
                    beat = time.monotonic()
                interval = next_poll(interval, changed, status == C.CLOSED)
                await asyncio.sleep(interval)
        finally:
            give_back()

    body = stream()
    weakref.finalize(body, give_back)  # a stream that never ran gives its slot back too
    return StreamingResponse(body, media_type="text/event-stream", headers={
        **cors, "Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# ---- outbound ---------------------------------------------------------------------------------

async def deliver_web(services: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """The web's delivery is the event stream reading the transcript, which already holds the
    message: nothing to send."""
    return {"delivered": True, "via": "transcript", "seq": (payload.get("message") or {}).get("seq")}


ADAPTERS[CHANNEL] = deliver_web

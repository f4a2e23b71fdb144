"""E-mail: inbound by SMTP listener (channels/email_smtp.py) or inbound-parse webhook, replies by
SMTP.

Addresses: mail to `{tenant}@{FLYWHEEL_EMAIL_INBOUND_DOMAIN}` or `support+{tenant}@...` (the part
after '+' names the tenant) reaches the tenant when its `email` channel is configured; the SMTP
listener answers 550 for any other recipient and 552 above `FLYWHEEL_EMAIL_MAX_BYTES`.

Inbound-parse webhook: POST /webhooks/{tenant}/email/inbound, multipart/form-data (or urlencoded)
with `from`, `to`, `subject`, `text`, `html`, `headers` (the raw header block) and/or `email`
(the whole raw MIME message). Verified per tenant: HTTP basic auth whose password is the channel
secret `webhook_secret` (inbound-parse services put it in the URL: https://any:SECRET@host/...);
missing or wrong -> 403 and nothing changes (checked before the body is read; the body is then
read with its limit, 413 past it); an unknown tenant or one without the e-mail channel gets
exactly the same answers.

Both paths: read the mail in a resource-limited child (channels/email_sandbox.py: a tag flood or
a mail that cannot be read within 5 s and 512 MB is refused, webhook 422 `refused_mail`, SMTP
550 5.6.0, because reading it again would cost the same) and normalize it (channels.email_parse:
new text only, quotes and signature stripped; then channels.text.inbound_text) -> thread = hash of the root Message-ID (References' first id, else
In-Reply-To, else the own id; an id of one of our replies maps back to its conversation through
the channel event recorded when it was sent) -> the thread's owner check -> de-duplicate on the
Message-ID (channel event) and record the message in the inbound outbox, one transaction ->
acknowledge; the workers' relay (channels/forwarder.py) signals-with-start the conversation.

Thread owner: a thread belongs to the address of its first mail (recorded as a channel event of
kind "thread"). A mail from another address that names the thread (References, In-Reply-To)
does NOT join it: it starts a thread of its own (keyed on its own Message-ID). So knowing a
thread's Message-IDs (a CC, a forwarded mail) never lets anyone write into someone else's
conversation, nor change where its replies go (the conversation's customer address).
Auto-replies, bounces, bulk mail and mail from the tenant's own address are acknowledged and
never answered (no mail loops).

The conversation's customer carries what a reply needs: `email`, `name`, `email_subject` (the
subject without Re:), `email_message_id` (the customer's last Message-ID) and
`email_references` (the chain, for References).

Credentials: PUT /v1/channels/email {"settings": {"from_address", "display_name"?, "reply_to"?},
"secrets": {"webhook_secret"?}}.

Outbound (ADAPTERS["email"]): a multipart/alternative reply (text: citations as a numbered list;
HTML: citations as links) from the tenant's address to the customer, Subject "Re: <subject>",
In-Reply-To / References of the customer's last mail, and a Message-ID derived from the
idempotency key (a retried send carries the same id). Sent once: a delivery whose key was
recorded as sent (after the SMTP server accepted the mail) sends nothing again; a crash between
the two sends it again on retry (at least once, like the other channels). SMTP 5xx answers are
permanent (non-retryable); anything else raises so Temporal retries.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import logging
import smtplib
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from activities.mail import send_mail
from api.deps import ensure_engine, get_secret_box, get_settings
from channels.email_parse import (
    Inbound,
    base_subject,
    format_ids,
    references_chain,
    reply_subject,
    thread_key,
)
from channels.email_sandbox import parse_form
from channels.body import read_body
from channels.credentials import configured_credentials, or_unknown
from channels.errors import Forbidden
from channels.outbound import ADAPTERS
from channels.text import clean_short, inbound_text
from db.channels import accept_inbound, channel_credentials, first_time, get_channel, recorded_event, was_recorded
from db.engine import run_in_session
from db.errors import NotFound
from db.models import ChannelEvent, InboundMessage
from workflows import conversation_types as C

log = logging.getLogger("flywheel.channels.email")

CHANNEL = "email"
TENANT = Path(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")

router = APIRouter(prefix="/webhooks/{tenant}/email", tags=["webhooks"])


REFUSED = "invalid webhook credentials"


# ---- keys -----------------------------------------------------------------------------------
def _digest(tenant: str, message_id: str) -> str:
    return hashlib.sha256(f"{tenant}\x00{message_id}".encode()).hexdigest()[:48]


def inbound_key(tenant: str, message_id: str) -> str:
    """The channel event key of an inbound Message-ID (per tenant: one mail may reach several)."""
    return f"in:{_digest(tenant, message_id)}"


def outbound_key(tenant: str, message_id: str) -> str:
    """The channel event key of one of our replies' Message-ID (maps it back to its thread)."""
    return f"out:{_digest(tenant, message_id)}"


def sent_key(tenant: str, message_id: str) -> str:
    """The channel event key recorded once one of our replies was accepted by the SMTP server."""
    return f"sent:{_digest(tenant, message_id)}"


def owner_key(tenant: str, thread: str) -> str:
    """The channel event key of a thread's owner (the address of its first mail)."""
    return f"thread:{_digest(tenant, thread)}"


def reply_message_id(idempotency_key: str, from_address: str) -> str:
    """Our Message-ID of a reply (bare): stable across retries of the same delivery."""
    domain = from_address.rpartition("@")[2] or "flywheel.invalid"
    return f"fw.{hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]}@{domain}"


# ---- the common inbound path ----------------------------------------------------------------
DbRunner = Callable[..., Awaitable[Any]]


def engine_runner(engine: Engine) -> DbRunner:
    """`await run(fn, *args)` runs fn(session, *args) in a thread."""
    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_session(engine, fn, *args)
    return run


def configured(session: Session, tenant: str) -> dict | None:
    """The tenant's e-mail channel settings, or None when the channel is not configured."""
    try:
        return dict(get_channel(session, tenant, CHANNEL).settings)
    except NotFound:
        return None


def known_thread(session: Session, tenant: str, ids: list[str]) -> str | None:
    """The thread of the first id that is one of our replies' Message-IDs."""
    keys = [outbound_key(tenant, i) for i in ids if i]
    if not keys:
        return None
    rows = session.exec(select(ChannelEvent).where(ChannelEvent.channel == CHANNEL,
                                                   ChannelEvent.tenant_id == tenant,
                                                   ChannelEvent.external_id.in_(keys))).all()
    by_key = {r.external_id: (r.data or {}).get("thread") for r in rows}
    for key in keys:
        if by_key.get(key):
            return by_key[key]
    return None


def message_text(mail: Inbound) -> str:
    """What the conversation receives: the new text; a first mail with an empty body is its subject."""
    if inbound_text(mail.text):
        return inbound_text(mail.text)
    if not (mail.in_reply_to or mail.references):
        return inbound_text(base_subject(mail.subject))
    return ""


def thread_owner(session: Session, tenant: str, thread: str, sender: str) -> str:
    """The address a thread belongs to: recorded with its first mail (`sender` claims a thread
    nobody owns yet; for a thread from before owners were recorded, its first outbox row's
    customer address owns it)."""
    key = owner_key(tenant, thread)
    owner = (recorded_event(session, CHANNEL, key) or {}).get("email")
    if owner:
        return owner
    first = session.exec(select(InboundMessage).where(
        InboundMessage.tenant_id == tenant, InboundMessage.channel == CHANNEL, InboundMessage.thread == thread)
        .order_by(InboundMessage.id).limit(1)).first()
    claim = str((first.customer or {}).get("email") or "").lower() if first else ""
    first_time(session, tenant, CHANNEL, key, "thread", {"email": claim or sender, "thread": thread})
    return (recorded_event(session, CHANNEL, key) or {}).get("email") or sender


def customer_of(mail: Inbound) -> dict[str, Any]:
    return {"email": mail.from_address, "name": mail.from_name,
            "email_subject": base_subject(mail.subject),
            "email_message_id": f"<{mail.message_id}>",
            "email_references": format_ids(references_chain(mail.references, mail.message_id))}


def accept(session: Session, tenant: str, mail: Inbound, text: str) -> tuple[str, str]:
    """(status, thread): 'new' when the Message-ID is seen for the first time (its key and the
    outbox row recorded in one transaction), 'duplicate', 'ignored:<why>'."""
    conf = configured(session, tenant)
    if conf is None:
        return "ignored:the e-mail channel is not configured", ""
    own = {str(conf.get(k) or "").lower() for k in ("from_address", "reply_to")} - {""}
    if mail.from_address in own:
        return "ignored:mail from our own address", ""
    thread = known_thread(session, tenant, [*mail.references, mail.in_reply_to]) or mail.thread
    if not C.THREAD.fullmatch(thread):  # an outbound mapping always holds a valid thread
        thread = thread_key(mail.root)
    owner = thread_owner(session, tenant, thread, mail.from_address)
    if owner != mail.from_address:
        # someone else's thread: this mail starts one of its own (and never changes the other's
        # customer address)
        log.warning("mail %s from another address than the thread's names thread %s: new thread",
                    clean_short(mail.message_id, 300), thread)
        thread = thread_key(mail.message_id)
        thread_owner(session, tenant, thread, mail.from_address)
    fresh = accept_inbound(session, tenant_id=tenant, channel=CHANNEL,
                           external_id=inbound_key(tenant, mail.message_id), thread=thread, text=text,
                           customer=customer_of(mail), message_id=clean_short(f"email:{mail.message_id}", 300),
                           data={"thread": thread, "message_id": mail.message_id[:300]})
    return ("new" if fresh else "duplicate"), thread


async def ingest(db: DbRunner, tenant: str, mail: Inbound) -> dict[str, Any]:
    """Accept one inbound mail for its conversation (the workers' relay hands it on); returns
    what happened."""
    if mail.auto:
        return {"ok": True, "ignored": "automatic message (auto-reply, bounce or bulk)"}
    text = message_text(mail)
    if not text:
        return {"ok": True, "ignored": "no new text"}
    status, thread = await db(accept, tenant, mail, text)
    if status == "duplicate":
        return {"ok": True, "duplicate": True}
    if status != "new":
        return {"ok": True, "ignored": status.partition(":")[2]}
    return {"ok": True, "conversation_id": C.conversation_id(tenant, CHANNEL, thread)}


# ---- the inbound-parse webhook --------------------------------------------------------------
def basic_password(authorization: str) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


def verify(secret: str, authorization: str) -> None:
    """Raise Forbidden unless the basic-auth password is the tenant's webhook secret."""
    if not secret:
        raise Forbidden("the e-mail channel has no webhook_secret")
    given = basic_password(authorization)
    if given is None:
        raise Forbidden("missing basic-auth credentials")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise Forbidden(REFUSED)


def _credentials(session: Session, box: Any, tenant: str) -> tuple[dict, dict[str, str]]:
    return configured_credentials(session, box, tenant, CHANNEL, "e-mail")


@router.post("/inbound")
async def inbound(request: Request, tenant: str = TENANT) -> JSONResponse:
    settings = get_settings(request)
    db = engine_runner(ensure_engine(request.app))
    box = get_secret_box(request)
    _, secrets = await or_unknown(lambda: db(_credentials, box, tenant))()
    verify(secrets.get("webhook_secret", ""), request.headers.get("authorization", ""))
    # The raw `email` field plus text/html copies and form overhead: twice the mail limit.
    body = await read_body(request, 2 * settings.email_max_bytes + 65_536, "mail")
    # read in a resource-limited child (channels/email_sandbox.py): 400 for a body that is no
    # usable form, 422 for a mail that cannot be read within the limits
    mail = await parse_form(request.headers.get("content-type", ""), body)
    result = await ingest(db, tenant, mail)
    return JSONResponse(result)


# ---- outbound -------------------------------------------------------------------------------
def _safe_url(url: Any) -> str | None:
    url = str(url or "")
    return url if urlsplit(url).scheme in ("http", "https") else None


def render_text(message: dict[str, Any]) -> str:
    """The plain-text part: the reply, then its sources as a numbered list."""
    text = str(message.get("text") or "").strip()
    lines = []
    for c in [c for c in message.get("citations") or [] if isinstance(c, dict)]:
        title, url = str(c.get("title") or "").strip(), _safe_url(c.get("url"))
        if title or url:
            lines.append(f"{len(lines) + 1}. {title}" + (f" <{url}>" if url and title else url or ""))
    return text + ("\n\nSources:\n" + "\n".join(lines) if lines else "") + "\n"


def render_html(message: dict[str, Any]) -> str:
    """The HTML part: the reply's paragraphs, then its sources as links."""
    text = str(message.get("text") or "").strip()
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    items = []
    for c in [c for c in message.get("citations") or [] if isinstance(c, dict)]:
        title, url = str(c.get("title") or "").strip(), _safe_url(c.get("url"))
        label = html.escape(title or url or "")
        if url:
            items.append(f'<li><a href="{html.escape(url, quote=True)}">{label}</a></li>')
        elif title:
            items.append(f"<li>{label}</li>")
    if items:
        body += "<p>Sources:</p><ol>" + "".join(items) + "</ol>"
    return f"<!doctype html><html><body>{body}</body></html>\n"


def build_reply(payload: dict[str, Any], conf: dict[str, Any], default_from: str) -> EmailMessage:
    """The reply mail of a delivery payload (pure)."""
    customer, message = payload.get("customer") or {}, payload.get("message") or {}
    from_address = str(conf.get("from_address") or default_from)
    msg = EmailMessage()
    msg["From"] = formataddr((str(conf.get("display_name") or ""), from_address))
    msg["To"] = formataddr((str(customer.get("name") or ""), str(customer["email"])))
    if conf.get("reply_to"):
        msg["Reply-To"] = str(conf["reply_to"])
    msg["Subject"] = reply_subject(customer.get("email_subject"))
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{reply_message_id(payload['idempotency_key'], from_address)}>"
    if customer.get("email_message_id"):
        msg["In-Reply-To"] = str(customer["email_message_id"])
    if customer.get("email_references"):
        msg["References"] = str(customer["email_references"])
    if message.get("role") != "agent":
        msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: autoresponders must not answer it
    msg.set_content(render_text(message))
    msg.add_alternative(render_html(message), subtype="html")
    return msg


def _record_outbound(session: Session, tenant: str, message_id: str, thread: str) -> None:
    first_time(session, tenant, CHANNEL, outbound_key(tenant, message_id), "outbound", {"thread": thread})


async def send_reply(services: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """ADAPTERS["email"]: send one reply by SMTP."""
    tenant, customer = payload["tenant_id"], payload.get("customer") or {}
    if not customer.get("email"):
        raise ApplicationError("the conversation has no customer e-mail address", non_retryable=True)
    try:
        conf, _ = await services.db(channel_credentials, services.box, tenant, CHANNEL)
    except NotFound:
        raise ApplicationError("e-mail is not configured for this tenant", non_retryable=True) from None
    settings = services.settings
    default_from = (f"{tenant}@{settings.email_inbound_domain}" if settings.email_inbound_domain
                    else settings.smtp_from)
    msg = build_reply(payload, conf, default_from)
    message_id = msg["Message-ID"].strip("<>")
    if await services.db(was_recorded, CHANNEL, sent_key(tenant, message_id)):
        return {"delivered": True, "message_id": msg["Message-ID"], "already_sent": True}
    # Recorded before sending: the customer's reply to it finds this conversation again.
    await services.db(_record_outbound, tenant, message_id, payload["thread"])
    try:
        await send_mail(settings, msg)
    except smtplib.SMTPResponseException as exc:
        if 500 <= exc.smtp_code < 600:
            raise ApplicationError(f"the mail server refused the reply: {exc.smtp_code}",
                                   non_retryable=True) from None
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        raise ApplicationError(f"the mail server refused the recipient: {list(exc.recipients)}",
                               non_retryable=True) from None
    # after the server accepted it: a retried delivery sends nothing more
    await services.db(first_time, tenant, CHANNEL, sent_key(tenant, message_id), "sent", {"thread": payload["thread"]})
    return {"delivered": True, "message_id": msg["Message-ID"]}


ADAPTERS[CHANNEL] = send_reply

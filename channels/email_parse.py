"""E-mail parsing for the e-mail channel. Pure: no I/O, no settings.

- `parse_message` / `from_form` turn a raw MIME message or an inbound-parse form (fields `from`,
  `to`, `subject`, `text`, `html`, `headers`, or a raw `email`) into one `Inbound`;
  `mail_of_form` reads the form's body first (`form_fields`).
- Untrusted mail is never parsed with these in a worker or API process: Python's MIME and
  header parsers and html.parser are slow or memory-hungry on hostile input (measured: 20,000
  encoded words in a Subject took 2.7 GB, 200,000 addresses in To over 2 minutes, 16 kB of
  unclosed tags 1.7 s and growing quadratically), so channels/email_sandbox.py runs them in a
  resource-limited child. HTML bodies also have a tag budget (`MAX_TAGS`): a tag flood is
  refused (`RefusedMail`) before any tree is built.
- Threading: the thread key is a hash of the thread's root Message-ID: the first id of
  `References`, else `In-Reply-To`, else the message's own `Message-ID` (customers' replies
  carry the root in `References`, so the key stays stable across the whole exchange).
- `strip_reply` keeps only what the customer just wrote: quoted history (`On ... wrote:`,
  `> ` lines, Outlook `-----Original Message-----` and `From:/Sent:` blocks) and signatures
  (`-- `, `Sent from my iPhone`, a sign-off block at the very end) are removed. It is
  deliberately conservative: a sign-off is only dropped when it is the last few short lines
  after real content.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, Parser
from email.utils import getaddresses, parseaddr
from typing import Any
from urllib.parse import parse_qs

from channels.errors import ChannelError
from channels.text import MAX_INBOUND, clean_short, inbound_text

MAX_TEXT = MAX_INBOUND  # what a conversation accepts per message
MAX_SCAN = 200_000  # characters of a body looked at (the new part is at the top)
MAX_HTML = 500_000  # characters of an HTML body parsed (the new part is at the top)
MAX_TAGS = 20_000  # tags of an HTML body: a long newsletter has a few thousand; 20,000 parse in 1-1.6 s
MAX_REFERENCES = 20  # ids kept in the References chain (the root and the newest ones)

_ID = re.compile(r"<([^<>\s]{1,900})>")
_SUBJECT_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|vs|antw|tr|rif)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_AUTO_SENDERS = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?)([+.-].*)?$", re.IGNORECASE)

# ---- quoted history -----------------------------------------------------------------------
# A reply header such as Gmail's "On Tue, 5 Mar 2024 at 10:00, Support <s@x.com> wrote:" (which
# clients wrap over up to three lines) and its translations.
_WROTE = re.compile(
    r"^\s*(on\b.{0,300}\bwrote|am\b.{0,300}\bschrieb.{0,120}|le\b.{0,300}\ba\s+écrit|"
    r"el\b.{0,300}\bescribió|il\b.{0,300}\bha\s+scritto|op\b.{0,300}\bschreef.{0,120}|"
    r"em\b.{0,300}\bescreveu)\s*:\s*$", re.IGNORECASE | re.DOTALL)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|"
                       r"mensaje original|forwarded message)\s*-{2,}\s*$", re.IGNORECASE)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_HEADER_FROM = re.compile(r"^\s*\*?(from|von|de|van)\s*:\*?\s+\S", re.IGNORECASE)
_HEADER_NEXT = re.compile(r"^\s*\*?(sent|date|gesendet|datum|envoyé|enviado|to|an|subject|betreff)\s*:", re.IGNORECASE)

# ---- signatures -----------------------------------------------------------------------------
_MOBILE = re.compile(
    r"^\s*(sent from my \w[\w\s-]{0,40}|sent from (mail|outlook) for \w+|get outlook for \w+|"
    r"sent from (yahoo mail|proton ?mail|my mobile)[\w\s]{0,30}|von meinem \w+ gesendet|"
    r"envoyé de mon \w+)\.?\s*$", re.IGNORECASE)
_SIGN_OFF = re.compile(
    r"^\s*(thanks|thank you|many thanks|thanks again|thanks in advance|thx|best|best regards|"
    r"best wishes|regards|kind regards|warm regards|warmly|cheers|sincerely|yours( truly| sincerely)?|"
    r"all the best|br|mfg|viele grüße|beste grüße|cordialement|saludos)\s*[,.!]?\s*$", re.IGNORECASE)
SIGN_OFF_TAIL = 3  # at most this many short lines (name, role, company) after a sign-off
SIGN_OFF_LINE = 60  # ... each at most this long


class RefusedMail(ChannelError):
    """A mail refused for good because reading it would take unbounded time or memory (a tag
    flood, a parse past its time or memory limit): 422 on the webhook, 550 by SMTP."""

    status, code = 422, "refused_mail"


@dataclass(frozen=True)
class Inbound:
    """One inbound e-mail, normalized. Message ids are bare (without angle brackets)."""

    message_id: str
    in_reply_to: str
    references: tuple[str, ...]
    from_address: str
    from_name: str
    to: tuple[str, ...]
    subject: str
    text: str  # the new part only (quotes and signature removed)
    auto: bool = False  # an auto-reply, bounce or bulk mail: never answered
    headers: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def root(self) -> str:
        return thread_root(self.message_id, self.in_reply_to, self.references)

    @property
    def thread(self) -> str:
        return thread_key(self.root)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (how the parsing child hands a mail back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inbound:
        return cls(**{**data, "references": tuple(data["references"]), "to": tuple(data["to"])})


# ---- ids and threading ----------------------------------------------------------------------
def msg_ids(value: str | None) -> list[str]:
    """The bare message ids of a Message-ID / In-Reply-To / References value, in order."""
    if not value:
        return []
    found = _ID.findall(str(value))
    if found:
        return found
    token = str(value).strip().strip("<>").split()
    return [token[0]] if token and "@" in token[0] and len(token[0]) <= 900 else []


def thread_root(message_id: str, in_reply_to: str, references: tuple[str, ...] | list[str]) -> str:
    """The root of a thread: References' first id, else In-Reply-To, else the message's own id."""
    if references:
        return references[0]
    return in_reply_to or message_id


def thread_key(root: str) -> str:
    """The conversation thread of a root Message-ID (fits the conversation thread pattern)."""
    return "m" + hashlib.sha256(root.strip().strip("<>").encode()).hexdigest()[:32]


def references_chain(references: tuple[str, ...] | list[str], message_id: str) -> list[str]:
    """References of a reply to a message: its References plus its own id; long chains keep the
    root and the newest ids (as RFC 5322 suggests)."""
    chain = [i for i in references if i] + ([message_id] if message_id else [])
    seen: list[str] = []
    for i in chain:
        if i not in seen:
            seen.append(i)
    if len(seen) > MAX_REFERENCES:
        seen = seen[:1] + seen[-(MAX_REFERENCES - 1):]
    return seen


def format_ids(ids: list[str] | tuple[str, ...]) -> str:
    return " ".join(f"<{i}>" for i in ids)


def base_subject(subject: str | None) -> str:
    """The subject without its Re:/Fwd:/AW: prefixes."""
    text = re.sub(r"\s+", " ", str(subject or "")).strip()
    return _SUBJECT_PREFIX.sub("", text).strip()[:300]


def reply_subject(subject: str | None) -> str:
    return f"Re: {base_subject(subject) or 'Your message'}"


def synthetic_id(*parts: str) -> str:
    """A stable id for a message that has no Message-ID (so a redelivery is still a duplicate)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:40]
    return f"no-id-{digest}@flywheel.invalid"


# ---- recipients -----------------------------------------------------------------------------
def tenant_of_address(address: str, domain: str) -> str | None:
    """The tenant an inbound address belongs to: `{tenant}@{domain}` or `support+{tenant}@{domain}`
    (the part after '+' when there is one). Any domain when `domain` is empty."""
    _, addr = parseaddr(address or "")
    local, at, host = addr.rpartition("@")
    if not at or not local:
        return None
    if domain and host.lower() != domain.lower():
        return None
    tenant = local.rsplit("+", 1)[-1].lower()
    return tenant if re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?", tenant) else None


# ---- bodies ---------------------------------------------------------------------------------
_QUOTE_HTML = ("blockquote", ".gmail_quote", ".gmail_extra", ".gmail_signature", ".moz-cite-prefix", ".moz-signature", ".yahoo_quoted",
               "#Signature", ".OutlookMessageHeader", "div[type=cite]")


def html_to_plain(html: str) -> str:
    """Text of an HTML mail body, with quoted history and marked signatures removed first.
    RefusedMail when it has more than MAX_TAGS tags (counted before any tree is built)."""
    from knowledge.extract_html import count_tags, parse_html, soup_to_extracted

    html = html[:MAX_HTML]
    tags = count_tags(html.encode("utf-8", "replace"), MAX_TAGS)
    if tags > MAX_TAGS:
        raise RefusedMail(f"the message's HTML has {tags:,} tags, the limit is {MAX_TAGS:,} (a tag flood); "
                          f"if it is genuine, send it as plain text")
    soup = parse_html(html)
    for selector in _QUOTE_HTML:
        for node in soup.select(selector):
            node.decompose()
    # Outlook marks where the quoted mail begins (<div id=appendonsend>, <hr id=stopSpelling>,
    # <div id=divRplyFwdMsg>): everything from the first marker on is history.
    marker = soup.find(id=("appendonsend", "stopSpelling", "divRplyFwdMsg"))
    if marker is not None:
        for node in list(marker.find_all_next()):
            node.decompose()
        marker.decompose()
    return soup_to_extracted(soup, None).text


def _unwrap(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _cut_quote_header(lines: list[str]) -> list[str]:
    """Lines before the first header of quoted history."""
    for i, line in enumerate(lines):
        if _ORIGINAL.match(line):
            return lines[:i]
        for span in (1, 2, 3):  # "On ... wrote:" wrapped over up to three lines
            joined = " ".join(x.strip() for x in lines[i:i + span])
            if _WROTE.match(joined) and len(joined) < 400:
                return lines[:i]
        if _HEADER_FROM.match(line) and any(_HEADER_NEXT.match(x) for x in lines[i + 1:i + 5]):
            cut = i - 1 if i and _UNDERSCORES.match(lines[i - 1]) else i
            return lines[:cut]
        if _UNDERSCORES.match(line) and any(_HEADER_FROM.match(x) for x in lines[i + 1:i + 3]):
            return lines[:i]
    return lines


def _cut_signature(lines: list[str]) -> list[str]:
    # The standard delimiter "-- " (clients often drop the trailing space), after some content.
    for i, line in enumerate(lines):
        if line.rstrip() in ("--", "-- ") and any(x.strip() for x in lines[:i]):
            lines = lines[:i]
            break
    # Mobile signatures at the end.
    while lines and (not lines[-1].strip() or _MOBILE.match(lines[-1])):
        lines = lines[:-1]
    # A sign-off ("Thanks,") followed by at most a few short lines (name, role) at the very end.
    content = [i for i, line in enumerate(lines) if line.strip()]
    for pos in range(max(0, len(content) - SIGN_OFF_TAIL - 1), len(content)):
        i = content[pos]
        tail = [lines[j] for j in content[pos + 1:]]
        if (_SIGN_OFF.match(lines[i]) and pos > 0
                and all(len(t.strip()) <= SIGN_OFF_LINE and not t.strip().endswith("?") for t in tail)):
            return lines[:i]
    return lines


def strip_reply(text: str) -> str:
    """The new part of a customer's mail: quoted history and signature removed."""
    lines = _cut_quote_header(_unwrap((text or "")[:MAX_SCAN]))
    lines = [line for line in lines if not line.lstrip().startswith(">")]
    lines = _cut_signature(lines)
    out = "\n".join(line.rstrip() for line in lines)
    out = re.sub(r"\n{3,}", "\n\n", out).strip()
    return inbound_text(out, MAX_TEXT)  # cut with a visible marker when longer


def body_text(msg: Message) -> str:
    """The readable body of a message: its text/plain part, else its HTML converted to text."""
    if not isinstance(msg, EmailMessage):
        return ""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    if not isinstance(content, str):
        return ""
    return html_to_plain(content) if part.get_content_subtype() == "html" else content


# ---- messages -------------------------------------------------------------------------------
def is_automatic(headers: Message, from_address: str) -> bool:
    """Auto-replies (RFC 3834), bounces, bulk and list mail: answering them would loop."""
    auto = str(headers.get("Auto-Submitted", "") or "").strip().lower()
    if auto and auto != "no":
        return True
    if str(headers.get("Precedence", "") or "").strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if any(headers.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Reply")):
        return True
    if str(headers.get("Content-Type", "") or "").lower().startswith("multipart/report"):
        return True
    local = (from_address or "").rpartition("@")[0]
    return bool(_AUTO_SENDERS.match(local)) or not from_address


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header the policy cannot parse
        return ""
    return str(value or "").strip()


def _normalize(headers: Message, raw_text: str, *, from_field: str = "", to_field: str = "",
               subject_field: str = "") -> Inbound:
    name, addr = parseaddr(from_field or _header(headers, "From"))
    if addr != clean_short(addr, 998):
        addr = ""  # controls in the address: no one to answer (an empty sender is automatic)
    to_values = [to_field] if to_field else [_header(headers, "To"), _header(headers, "Cc")]
    to = tuple(a.lower() for _, a in getaddresses([v for v in to_values if v]) if a)
    subject = clean_short(re.sub(r"\s+", " ", subject_field or _header(headers, "Subject")), 300)
    text = strip_reply(raw_text)
    ids = msg_ids(_header(headers, "Message-ID"))
    message_id = ids[0] if ids else synthetic_id(addr, _header(headers, "Date"), subject, raw_text)
    in_reply = msg_ids(_header(headers, "In-Reply-To"))
    refs = tuple(msg_ids(_header(headers, "References")))[:200]
    return Inbound(message_id=message_id, in_reply_to=in_reply[0] if in_reply else "", references=refs,
                   from_address=addr.lower(), from_name=clean_short(name, 200), to=to, subject=subject, text=text,
                   auto=is_automatic(headers, addr),
                   headers={k: _header(headers, k) for k in ("Message-ID", "In-Reply-To", "References")})


def parse_message(raw: bytes | str) -> Inbound:
    """An Inbound from a whole raw MIME message."""
    if isinstance(raw, str):
        msg = Parser(policy=policy.default).parsestr(raw)
    else:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    return _normalize(msg, body_text(msg))


def from_form(fields: dict[str, str]) -> Inbound:
    """An Inbound from an inbound-parse webhook form: a raw `email` field (the whole MIME
    message), or `from`, `to`, `subject`, `text`, `html` and `headers` (the raw header block)."""
    raw = fields.get("email") or ""
    if raw.strip():
        return parse_message(raw)
    header_block = (fields.get("headers") or "").replace("\r\n", "\n").strip("\n")
    headers = Parser(policy=policy.default).parsestr(header_block + "\n\n", headersonly=True)
    text = fields.get("text") or ""
    if not text.strip() and (fields.get("html") or "").strip():
        text = html_to_plain(fields["html"])
    return _normalize(headers, text, from_field=fields.get("from") or "", to_field=fields.get("to") or "",
                      subject_field=fields.get("subject") or "")


# ---- inbound-parse forms --------------------------------------------------------------------
def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """Text fields of a multipart/form-data or urlencoded body (files are ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            raise ChannelError("the form is not valid") from None
        return {k: v[0] for k, v in pairs.items()}
    if media != "multipart/form-data":
        raise ChannelError("expected multipart/form-data or application/x-www-form-urlencoded")
    msg = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise ChannelError("the multipart form could not be parsed")
    raw: dict[str, bytes] = {}
    charsets: dict[str, str] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.get_filename():
            continue
        payload = part.get_payload(decode=True) or b""
        raw[str(name)] = payload
        if part.get_content_charset():
            charsets[str(name)] = part.get_content_charset()
    try:  # SendGrid names each field's charset in a JSON `charsets` field
        charsets.update({k: v for k, v in json.loads(raw.get("charsets", b"{}")).items()
                         if isinstance(v, str)})
    except (ValueError, AttributeError, RecursionError):
        pass
    fields = {}
    for name, payload in raw.items():
        try:
            fields[name] = payload.decode(charsets.get(name) or "utf-8")
        except (LookupError, UnicodeDecodeError):
            fields[name] = payload.decode("utf-8", "replace")
    return fields


def mail_of_form(content_type: str, body: bytes) -> Inbound:
    """The Inbound of an inbound-parse webhook's body; ChannelError when it is not a form or has
    none of the fields email, text, html, subject."""
    fields = form_fields(content_type, body)
    if not any((fields.get(k) or "").strip() for k in ("email", "text", "html", "subject")):
        raise ChannelError("the form has none of the fields email, text, html, subject")
    return from_form(fields)

"""Text in and out of the channels: one normalizer for every channel's inbound text, and
splitting a reply into the parts a channel accepts (SMS 1600, Messenger 2000, Slack 39000)."""
from __future__ import annotations

import re

MAX_INBOUND = 10_000          # characters of one inbound message (what a conversation accepts)
TRUNCATED = "\n[message truncated]"
MAX_ID = 200                  # characters of a channel's own message id

# C0 controls except \t and \n (\r is handled with the newlines), DEL, and lone UTF-16
# surrogates (a JSON "\ud800" escape decodes to one; PostgreSQL cannot store it)
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def inbound_text(text: object, limit: int = MAX_INBOUND) -> str:
    """A customer's message as every channel hands it to its conversation: NUL and the other
    control characters removed (newlines and tabs kept; \\r\\n and \\r become \\n), surrounding
    whitespace trimmed, and cut to `limit` characters with a visible marker when longer. Not a
    str -> "". PostgreSQL refuses NUL in text, so this is what keeps "hi\\x00" from failing the
    whole delivery (and the sender retrying forever)."""
    if not isinstance(text, str):
        return ""
    text = _CONTROLS.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if len(text) > limit:
        text = text[:limit - len(TRUNCATED)].rstrip() + TRUNCATED
    return text


def clean_short(text: object, limit: int) -> str:
    """A short value (a name, a status detail, an id for a log line): controls removed like
    inbound_text, newlines too, cut to `limit` without a marker."""
    return inbound_text(text, 10 * limit).replace("\n", " ").replace("\t", " ")[:limit].strip()


def clean_id(value: object, limit: int = MAX_ID) -> str:
    """A channel's own id (message id, sender id) as stored: a str without control characters
    or spaces, at most `limit` long; anything else -> "" (the caller ignores the message)."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return ""
    value = str(value)
    if not value or len(value) > limit or _CONTROLS.search(value) or any(c.isspace() for c in value):
        return ""
    return value


def split_text(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` characters, cut at a paragraph, line or word boundary when there is
    one in the second half of the part; an empty text has no parts."""
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        cut = max(text.rfind(sep, 0, limit) for sep in ("\n\n", "\n", " "))
        cut = cut if cut > limit // 2 else limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return parts + ([text] if text else [])

"""Reading a webhook's body: streamed with a limit, and JSON parsed defensively.

Every webhook reads its body through `read_body` (never `await request.body()`), so no request
is buffered past its channel's limit, whatever its Content-Length says (a chunked body has
none): a declared length over the limit is refused before anything is read, a stream that goes
past it is cut off there, both with 413. The limits (bytes):

    Twilio (SMS, WhatsApp, voice, status callbacks)   64 KB    (Twilio's forms are a few KB)
    Slack Events API                                  512 KB
    Meta (Messenger, Instagram)                       1 MB     (Meta batches up to 1000 events)
    web widget message                                32 KB    (4,000 characters of text)
    e-mail inbound-parse webhook          2 x FLYWHEEL_EMAIL_MAX_BYTES + 64 KB (raw mail + copies)
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from channels.errors import ChannelError

TWILIO_LIMIT = 64_000
SLACK_LIMIT = 512_000
META_LIMIT = 1_000_000
WEB_LIMIT = 32_000


class TooLarge(ChannelError):
    """The body is larger than the channel accepts: 413, nothing read past the limit."""

    status = 413


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The raw body, at most `limit` bytes (TooLarge otherwise), read as it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise TooLarge(f"the {what} is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the {what} is larger than {limit} bytes")
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """The JSON value of a body; ChannelError (400) when it is not JSON, not UTF-8, or nested
    deeper than the parser goes (RecursionError)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ChannelError("the body is not valid JSON") from None


def as_dict(value: Any) -> dict:
    """`value` when it is a JSON object, else {} (a field of the wrong type reads as absent)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    """`value` when it is a JSON array, else []."""
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    """`value` when it is a string, else ""."""
    return value if isinstance(value, str) else ""

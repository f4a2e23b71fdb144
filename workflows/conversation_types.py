"""Data of conversations: what channels, the API and agents send to a conversation workflow. Pure."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

WORKFLOW_NAME = "Conversation"
DECIDE_TURN = "decide_turn"
RECORD_CONVERSATION = "record_conversation"
DELIVER_MESSAGE = "deliver_message"
LOAD_CONVERSATION = "load_conversation"
MESSAGE_SIGNAL = "message_signal"
CHANNEL_EVENT = "channel_event"  # what happened on the channel outside a message (a call's end)

OPEN, HANDED_OFF, CLOSED = "open", "handed_off", "closed"
RESOLVED, ABANDONED = "resolved", "abandoned"

THREAD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}")
CHANNEL = re.compile(r"[a-z][a-z0-9_-]{0,31}")

MAX_TEXT = 10_000         # characters of one message (the API refuses more, the signal path truncates)
TRUNCATED = "\n[message truncated]"
MAX_ATTACHMENTS = 10
# C0 control characters but tab and newline, and lone surrogates: PostgreSQL's text and JSON cannot
# hold NUL, and a lone surrogate cannot be encoded at all.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` without what no database column can hold or no reader wants (NUL and the other C0
    controls but tab and newline; line breaks as \\n)."""
    return _UNPRINTABLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def truncate(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters with a visible marker (nothing vanishes silently)."""
    return text if len(text) <= limit else text[:limit - len(TRUNCATED)].rstrip() + TRUNCATED


def clean_short(value: Any, limit: int) -> str:
    """A short label from outside (an event's kind, a call's status): a string cleaned like text,
    on one line, at most `limit` characters; "" for anything that is not a string."""
    if not isinstance(value, str):
        return ""
    return " ".join(clean_text(value).split())[:limit]


def clean_attachments(items: Any) -> list[dict[str, str]]:
    """The well-formed attachments of a message ({content_type, url} strings, url required),
    at most MAX_ATTACHMENTS, cleaned like text."""
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"].strip():
            continue
        content_type = item.get("content_type") if isinstance(item.get("content_type"), str) else ""
        out.append({"content_type": clean_text(content_type).strip()[:200],
                    "url": clean_text(item["url"]).strip()[:2000]})
    return out[:MAX_ATTACHMENTS]


def conversation_id(tenant_id: str, channel: str, thread: str) -> str:
    """The business key of a conversation: one workflow per thread."""
    return f"conversation/{tenant_id}/{channel}/{thread}"


@dataclass
class ConversationInput:
    tenant_id: str
    channel: str
    thread: str
    customer: dict[str, Any] = field(default_factory=dict)
    idle_timeout_s: float = 24 * 3600
    turn_timeout_s: float = 60.0
    carried: dict[str, Any] | None = None  # state handed over by continue-as-new


@dataclass
class MessageIn:
    """One customer message; `message_id` de-duplicates a channel's retries. `attachments` lists
    what came with it (`{"content_type", "url"}`, e.g. WhatsApp media); `text` may then be empty."""

    text: str
    message_id: str = ""
    customer: dict[str, Any] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AgentAction:
    """What a person in the inbox does: reply, take over, return to the AI, close."""

    kind: str  # reply | takeover | release | close
    agent: str = ""
    text: str = ""

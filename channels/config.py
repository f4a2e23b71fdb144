"""What each channel's configuration holds: its settings (public, returned by the API) and its
credentials (secret: stored encrypted, write-only, never returned; `GET /v1/channels` lists
only which ones are set).

`PUT /v1/channels/{channel}` is checked against the channel's schema before anything is stored:
an unknown channel is 404; a settings key the channel does not take is 422 naming the key, and a
credential sent in `settings` is 422 saying it belongs in `secrets` (the value is never echoed);
a missing required setting or credential (required credentials may have been stored by an
earlier PUT) and a malformed value are 422 naming the field. Views of a channel show only its
declared settings, so a value stored before these schemas existed (e.g. a Meta app secret put in
settings) is never returned either.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from channels.errors import ChannelError

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
SHORT_CODE = re.compile(r"[0-9]{5,6}")
EMAIL = re.compile(r"[^@\s<>\"(),;:]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidConfig(ChannelError):
    """A channel configuration the channel's schema does not accept: 422, nothing stored."""

    status = 422


class UnknownChannel(ChannelError):
    """No such channel: 404."""

    status, code = 404, "not_found"


Check = Callable[[Any], Any]  # returns the stored value or raises ValueError(why)


def text(max_length: int, multiline: bool = False) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or len(value) > max_length:
            raise ValueError(f"a text of at most {max_length} characters")
        if _CONTROL.search(value.replace("\n", "") if multiline else value):
            raise ValueError("a text without control characters")
        return value.strip()
    return check


def pattern(regex: str, what: str) -> Check:
    compiled = re.compile(regex)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value.strip()):
            raise ValueError(what)
        return value.strip()
    return check


def phone(value: Any) -> str:
    """An E.164 number (+15551234567) or an SMS short code."""
    if not isinstance(value, str) or not (E164.fullmatch(value.strip()) or SHORT_CODE.fullmatch(value.strip())):
        raise ValueError("an E.164 number such as +15551234567 (or a short code)")
    return value.strip()


def e164(value: Any) -> str:
    if not isinstance(value, str) or not E164.fullmatch(value.strip()):
        raise ValueError("an E.164 number such as +15551234567")
    return value.strip()


def email(value: Any) -> str:
    if not isinstance(value, str) or not EMAIL.fullmatch(value.strip()):
        raise ValueError("an e-mail address such as support@shop.example")
    return value.strip().lower()


def passthrough(value: Any) -> Any:
    """Checked by the channel's own module (the web channel validates its settings itself)."""
    return value


@dataclass(frozen=True)
class Setting:
    check: Check
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Schema:
    channel: str
    settings: dict[str, Setting]
    credentials: tuple[str, ...] = ()
    required_credentials: tuple[str, ...] = ()
    # settings of which at least one must be set (e.g. a sender number or a messaging service)
    one_of: tuple[str, ...] = ()


_TWILIO = ("account_sid", "auth_token")
_META = ("verify_token", "app_secret", "page_access_token")
_SENDER = {"phone_number": Setting(phone, doc="the Twilio number customers write to (E.164)"),
           "messaging_service_sid": Setting(pattern(r"MG[0-9a-fA-F]{32}", "a Messaging Service SID (MG + 32 hex)"),
                                            doc="a Twilio Messaging Service instead of one number")}

SCHEMAS: dict[str, Schema] = {s.channel: s for s in (
    Schema("web", {"public_key": Setting(passthrough), "allowed_origins": Setting(passthrough),
                   "title": Setting(passthrough), "greeting": Setting(passthrough)}),
    Schema("email", {"from_address": Setting(email), "display_name": Setting(text(100)),
                     "reply_to": Setting(email)},
           credentials=("webhook_secret",)),
    Schema("sms", dict(_SENDER), credentials=_TWILIO, required_credentials=_TWILIO,
           one_of=("phone_number", "messaging_service_sid")),
    Schema("whatsapp", dict(_SENDER), credentials=_TWILIO, required_credentials=_TWILIO,
           one_of=("phone_number", "messaging_service_sid")),
    Schema("voice", {"phone_number": Setting(phone, doc="when set, calls to another number are refused"),
                     "greeting": Setting(text(2000)),
                     "transfer_number": Setting(e164, doc="where a handed-off call is transferred (E.164)")},
           credentials=_TWILIO, required_credentials=_TWILIO),
    Schema("slack", {"team_id": Setting(pattern(r"[TE][A-Z0-9]{2,40}", "a Slack workspace id such as T061EG9R6"),
                                        required=True, doc="the workspace id events must come from"),
                     "api_app_id": Setting(pattern(r"A[A-Z0-9]{2,40}", "a Slack app id such as A0PNCHHK2"),
                                           required=True, doc="the app id events must be sent to"),
                     "bot_user_id": Setting(pattern(r"[UW][A-Z0-9]{2,40}", "a Slack user id such as U0BOT1234"))},
           credentials=("signing_secret", "bot_token"), required_credentials=("signing_secret", "bot_token")),
    Schema("messenger", {"page_id": Setting(pattern(r"[0-9]{1,30}", "a Facebook Page id (digits)"), required=True,
                                         doc="the Page whose messages this tenant receives")},
           credentials=_META, required_credentials=_META),
    Schema("instagram", {"account_id": Setting(pattern(r"[0-9]{1,30}", "an Instagram account id (digits)"),
                                               required=True, doc="the Instagram professional account "
                                               "whose messages this tenant receives")},
           credentials=_META, required_credentials=_META),
)}


def schema_of(channel: str) -> Schema:
    schema = SCHEMAS.get(channel)
    if schema is None:
        raise UnknownChannel(f"no channel {channel!r}; channels: {', '.join(sorted(SCHEMAS))}")
    return schema


def validate(channel: str, settings: dict[str, Any], secrets: dict[str, Any],
             stored_credentials: Iterable[str] = ()) -> dict[str, Any]:
    """The settings to store for a PUT of `channel` (checked, normalized); InvalidConfig names
    the first field that is wrong. `secrets` values are never part of a message."""
    schema = schema_of(channel)
    for key in settings:
        if key in schema.credentials:
            raise InvalidConfig(f"settings.{key}: {key} is a credential of the {channel} channel: send it in "
                                "`secrets` (stored encrypted, never returned)")
        if key not in schema.settings:
            raise InvalidConfig(f"settings.{key}: not a setting of the {channel} channel "
                                f"(settings: {', '.join(schema.settings) or 'none'})")
    for key, value in secrets.items():
        if key not in schema.credentials:
            where = ("it is a setting: send it in `settings`" if key in schema.settings
                     else f"credentials: {', '.join(schema.credentials) or 'none'}")
            raise InvalidConfig(f"secrets.{key}: not a credential of the {channel} channel ({where})")
        if not isinstance(value, str) or not value or len(value) > 4096 or _CONTROL.search(value):
            raise InvalidConfig(f"secrets.{key}: a non-empty text of at most 4096 characters")
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if value is None:
            continue  # null: not set
        try:
            out[key] = schema.settings[key].check(value)
        except ValueError as err:
            raise InvalidConfig(f"settings.{key}: expected {err}") from None
    for key, setting in schema.settings.items():
        if setting.required and out.get(key) in (None, ""):
            raise InvalidConfig(f"settings.{key}: required by the {channel} channel ({setting.doc})")
    if schema.one_of and not any(out.get(k) for k in schema.one_of):
        raise InvalidConfig(f"settings: the {channel} channel needs one of {', '.join(schema.one_of)}")
    have = set(stored_credentials) | set(secrets)
    for name in schema.required_credentials:
        if name not in have:
            raise InvalidConfig(f"secrets.{name}: required by the {channel} channel")
    return out


def public_settings(channel: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What a view of the channel shows: its declared settings only."""
    schema = SCHEMAS.get(channel)
    if schema is None:
        return {}
    return {k: v for k, v in (settings or {}).items() if k in schema.settings}


def public_credentials(channel: str, names: Iterable[str]) -> list[str]:
    """Which of the channel's credentials are set (names only)."""
    schema = SCHEMAS.get(channel)
    return sorted(n for n in names if schema is not None and n in schema.credentials)

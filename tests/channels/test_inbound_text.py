"""One normalizer for every channel's inbound text (channels.text.inbound_text), on SQLite and
PostgreSQL: NUL and other control characters never reach the database (PostgreSQL refuses NUL:
the webhook used to answer 500 and the sender retried for ever; SMTP answered 451), newlines are
normalized, and a text over the limit is cut with a visible marker instead of being forwarded
and dropped by the conversation."""
from __future__ import annotations

import base64
import smtplib
import uuid
from email.message import EmailMessage

import pytest

from channels.email_smtp import start_email_listener
from channels.text import MAX_INBOUND, TRUNCATED, clean_id, inbound_text
from runtime.devserver import free_port
from tests.channels.conftest import (
    EMAIL_SECRET,
    PUBLIC_URL,
    meta_event,
    meta_headers,
    slack_event,
    slack_headers,
    sms_form,
    twilio_headers,
)

LONG = ("All about my order. " * 1200).strip()  # 23,999 characters


def test_the_normalizer():
    assert inbound_text("hi\x00 there") == "hi there"
    assert inbound_text("a\r\nb\rc\n\td\x07\x1b[31m\x7f") == "a\nb\nc\n\td[31m"
    assert inbound_text("lone \ud800 surrogate") == "lone  surrogate"
    assert inbound_text("  \x00 \n ") == "" and inbound_text(None) == "" and inbound_text(["x"]) == ""
    assert inbound_text("é ü 日本 🙂") == "é ü 日本 🙂"
    cut = inbound_text(LONG)
    assert len(cut) <= MAX_INBOUND and cut.endswith(TRUNCATED) and LONG.startswith(cut[:-len(TRUNCATED)])
    assert inbound_text("x" * MAX_INBOUND) == "x" * MAX_INBOUND
    assert inbound_text("x" * (MAX_INBOUND + 1)).endswith(TRUNCATED)
    assert clean_id("m_1") == "m_1" and clean_id(12) == "12"
    assert clean_id("m\x00") == clean_id("a b") == clean_id({"a": 1}) == clean_id(True) == clean_id("x" * 201) == ""


def texts(store, tenant) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in store.outbox(tenant.id):
        out.setdefault(row.channel, []).append(row.text)
    return out


def send_all(client, tenant, text: str) -> None:
    body = slack_event(text)
    r = client.post(f"/webhooks/{tenant.id}/slack/events", content=body, headers=slack_headers(body))
    assert r.status_code == 200 and "conversation_id" in r.json(), r.text
    body = meta_event(text)
    r = client.post(f"/webhooks/{tenant.id}/meta", content=body, headers=meta_headers(body))
    assert r.status_code == 200 and r.text == "EVENT_RECEIVED", r.text
    path = f"/webhooks/{tenant.id}/twilio/sms"
    form = sms_form(body=text)
    r = client.post(path, data=form, headers=twilio_headers(PUBLIC_URL + path, form))
    assert r.status_code == 200, r.text
    auth = {"Authorization": "Basic " + base64.b64encode(f"x:{EMAIL_SECRET}".encode()).decode()}
    r = client.post(f"/webhooks/{tenant.id}/email/inbound", headers=auth, data={
        "from": "alice@example.com", "to": f"{tenant.id}@mail.flywheel.test", "subject": "Order",
        "text": text, "headers": f"Message-ID: <{uuid.uuid4().hex}@example.com>\n"})
    assert r.status_code == 200 and "conversation_id" in r.json(), r.text


def test_nul_and_control_characters_are_removed_by_every_webhook(client, tenant, store):
    send_all(client, tenant, "hi\x00 there\r\nsecond\x1b line")
    assert texts(store, tenant) == {c: ["hi there\nsecond line"] for c in ("slack", "messenger", "sms", "email")}


def test_long_messages_are_cut_with_a_marker_by_every_webhook(client, tenant, store):
    send_all(client, tenant, LONG)
    got = texts(store, tenant)
    assert sorted(got) == ["email", "messenger", "slack", "sms"]
    for channel, [text] in got.items():
        assert len(text) <= MAX_INBOUND and text.endswith(TRUNCATED), (channel, len(text))


def test_a_message_of_control_characters_only_is_acknowledged_and_not_forwarded(client, tenant, store):
    body = slack_event("\x00\x00")
    r = client.post(f"/webhooks/{tenant.id}/slack/events", content=body, headers=slack_headers(body))
    assert r.status_code == 200 and "ignored" in r.json()
    path = f"/webhooks/{tenant.id}/twilio/sms"
    form = sms_form(body="\x00 \x07")
    assert client.post(path, data=form, headers=twilio_headers(PUBLIC_URL + path, form)).status_code == 200
    assert store.outbox() == []


@pytest.fixture
def listener(settings, tenant):
    smtp = start_email_listener(settings.model_copy(update={"email_inbound_port": free_port()}))
    yield smtp
    smtp.stop()


def test_the_smtp_listener_accepts_nul_and_long_mail_once(listener, tenant, store):
    for n, body in enumerate(("hi\x00 there, where is my parcel?", LONG)):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "Alice <alice@example.com>", f"{tenant.id}@mail.flywheel.test", "Hi"
        msg["Message-ID"] = f"<nul-{n}-{uuid.uuid4().hex}@example.com>"
        msg.set_content(body)
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as smtp:
            refused = smtp.send_message(msg)  # 250: raises on 451 / 5xx
        assert refused == {}
    first, second = [r.text for r in store.outbox(tenant.id)]
    assert first == "hi there, where is my parcel?"
    assert len(second) <= MAX_INBOUND and second.endswith(TRUNCATED)


def test_short_values_are_cleaned_and_cut_without_a_marker():
    from channels.text import clean_short
    assert clean_short("Dana\x00 \nSmith\t", 200) == "Dana  Smith"
    assert clean_short("x" * 500, 200) == "x" * 200
    assert clean_short(None, 10) == ""

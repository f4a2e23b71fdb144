"""Hostile inbound mail is read under limits (channels/email_sandbox.py), through the real paths:
the SMTP listener (aiosmtpd, as the worker runs it) and the inbound-parse webhook (the whole
API), on the test database. Each hostile mail would stall a thread for half a minute or more
if it were parsed in-process (html.parser is quadratic on unclosed tags, Python's header parser
on huge address lists); here it is refused within the sandbox's time limit with a clear reason,
nothing is recorded, and the next genuine mail is read at once."""
from __future__ import annotations

import base64
import smtplib
import threading
import time
import uuid
from email.message import EmailMessage

import pytest

from channels.email_parse import MAX_TAGS, RefusedMail, html_to_plain, parse_message
from channels.email_sandbox import TIMEOUT
from channels.email_smtp import start_email_listener
from runtime.devserver import free_port
from tests.channels.conftest import EMAIL_SECRET, configure, new_tenant

# 60 kB of unclosed tags (under the tag budget): html.parser takes 1.7 s for 16 kB and grows
# quadratically (24 s for this one, measured in-process)
QUADRATIC = "<p>" + "a <b" * 15_000
FLOOD = "<br>" * (MAX_TAGS + 10_000)  # a tag flood, refused before any tree is built
GENUINE_HTML = "<html><body><p>I want a <b>refund</b> for order 5678.</p></body></html>"
BOUND_S = TIMEOUT + 7.0  # the sandbox's limit plus a loaded machine's slack
DOMAIN = "mail.flywheel.test"


def html_mail(html: str, *, message_id: str | None = None, plain: str | None = None,
              sender: str = "Eve <eve@example.com>", to: str = f"acme@{DOMAIN}") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Refund"
    msg["Message-ID"] = f"<{message_id or uuid.uuid4().hex}@example.com>"
    if plain is None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content(plain)
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))  # SMTP's line ends


def nested_mail(depth: int) -> bytes:
    head = (b"From: eve@example.com\r\nTo: acme@" + DOMAIN.encode() + b"\r\nSubject: deep\r\n"
            b"Message-ID: <deep@example.com>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n")
    parts = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(depth))
    return head + parts + b"--b%d\r\nContent-Type: text/plain\r\n\r\nhello\r\n" % depth


def address_bomb() -> bytes:
    """60,000 addresses in To (1.3 MB, folded): Python's header parser takes ~1 minute."""
    to = b",\r\n ".join(b"u%d@example.org" % i for i in range(60_000))
    return (b"From: eve@example.com\r\nTo: " + to + b"\r\nSubject: hi\r\nMessage-ID: <bomb@example.com>\r\n\r\n"
            b"hello\r\n")


def test_a_tag_flood_is_refused_before_any_tree_is_built():
    started = time.monotonic()
    with pytest.raises(RefusedMail) as info:
        html_to_plain(FLOOD)
    assert time.monotonic() - started < 1.0
    assert f"{MAX_TAGS + 10_000:,} tags, the limit is {MAX_TAGS:,}" in info.value.message
    assert "send it as plain text" in info.value.message
    assert html_to_plain(GENUINE_HTML) == "I want a refund for order 5678."
    # the in-process parser itself is untouched for genuine mail
    assert parse_message(html_mail(GENUINE_HTML)).text == "I want a refund for order 5678."


# ---- the SMTP listener ------------------------------------------------------------------------
@pytest.fixture
def smtp(settings, client, store):
    tenant = new_tenant(client)
    configure(client, tenant, "email")
    conf = settings.model_copy(update={"email_inbound_port": free_port(), "email_inbound_domain": DOMAIN,
                                       "email_max_bytes": 2_000_000})
    listener = start_email_listener(conf)
    try:
        yield {"address": ("127.0.0.1", conf.email_inbound_port), "tenant": tenant, "to": f"{tenant.id}@{DOMAIN}"}
    finally:
        listener.stop()


def send(smtp, raw: bytes) -> tuple[int, str, float]:
    """(SMTP code, reply text, seconds) of one mail's DATA."""
    started = time.monotonic()
    with smtplib.SMTP(*smtp["address"], timeout=60) as conn:
        try:
            conn.sendmail("eve@example.com", [smtp["to"]], raw)
            code, text = 250, ""
        except smtplib.SMTPDataError as err:
            code, text = err.smtp_code, err.smtp_error.decode()
    return code, text, time.monotonic() - started


def test_hostile_mails_by_smtp_get_550_in_bounded_time_and_the_next_mail_is_read(smtp, store):
    to = smtp["to"]
    code, text, seconds = send(smtp, html_mail(QUADRATIC, to=to))
    assert code == 550 and text.startswith("5.6.0 message refused: reading the message took more than 5 s"), text
    assert seconds < BOUND_S

    code, text, seconds = send(smtp, html_mail(FLOOD, to=to))
    assert code == 550 and f"{MAX_TAGS + 10_000:,} tags, the limit is {MAX_TAGS:,}" in text, text
    assert seconds < 5.0

    code, text, seconds = send(smtp, nested_mail(3_000))
    assert code == 550 and "nested too deeply" in text, text

    code, text, seconds = send(smtp, address_bomb())
    assert code == 550 and "took more than 5 s or 512 MB" in text, text
    assert seconds < BOUND_S
    assert store.outbox(smtp["tenant"].id) == []  # nothing of them recorded

    # A hostile HTML part next to a text/plain one: the plain part is read, the HTML never.
    code, _, seconds = send(smtp, html_mail(QUADRATIC, plain="My order 1234 is late.", to=to))
    assert code == 250 and seconds < 5.0
    # And a genuine HTML-only mail right after the killed parses: read at once.
    code, _, seconds = send(smtp, html_mail(GENUINE_HTML, to=to))
    assert code == 250 and seconds < 5.0
    assert [r.text for r in store.outbox(smtp["tenant"].id)] == ["My order 1234 is late.",
                                                                  "I want a refund for order 5678."]


def test_a_hostile_mail_being_read_does_not_hold_up_a_genuine_one(smtp, store):
    hostile: list[tuple[int, str, float]] = []
    sender = threading.Thread(target=lambda: hostile.append(send(smtp, html_mail(QUADRATIC, to=smtp["to"]))))
    sender.start()
    time.sleep(1.0)  # the hostile mail is in its parser now
    try:
        code, _, seconds = send(smtp, html_mail(GENUINE_HTML, to=smtp["to"]))
        assert code == 250 and seconds < 4.0
        assert [r.text for r in store.outbox(smtp["tenant"].id)] == ["I want a refund for order 5678."]
    finally:
        sender.join(timeout=60)
    assert hostile and hostile[0][0] == 550


def test_smtp_names_and_subjects_lose_their_control_characters(smtp, store):
    raw = (b"From: Eve\x07 Doe <eve@example.com>\r\nTo: " + smtp["to"].encode() + b"\r\n"
           b"Subject: Parcel\x00 status\r\nMessage-ID: <ctl-1@example.com>\r\n\r\nWhere is it?\r\n")
    assert send(smtp, raw)[0] == 250
    bad_sender = (b"From: <ev\x00e@example.com>\r\nTo: " + smtp["to"].encode() + b"\r\n"
                  b"Subject: hi\r\nMessage-ID: <ctl-2@example.com>\r\n\r\nhello\r\n")
    assert send(smtp, bad_sender)[0] == 250  # accepted, never answered: no usable sender
    [row] = store.outbox(smtp["tenant"].id)
    assert row.text == "Where is it?"
    assert (row.customer["name"], row.customer["email_subject"]) == ("Eve Doe", "Parcel status")


# ---- the inbound-parse webhook ----------------------------------------------------------------
def _auth() -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"inbound:{EMAIL_SECRET}".encode()).decode()}


def test_hostile_mails_by_webhook_get_422_in_bounded_time_and_nothing_changes(client, store):
    tenant = new_tenant(client)
    configure(client, tenant, "email")
    url = f"/webhooks/{tenant.id}/email/inbound"
    form = {"from": "Eve <eve@example.com>", "to": f"{tenant.id}@{DOMAIN}", "subject": "Refund",
            "headers": "Message-ID: <wh-h1@example.com>\n"}
    before = store.snapshot()

    started = time.monotonic()
    r = client.post(url, data={**form, "html": QUADRATIC}, headers=_auth())
    assert r.status_code == 422 and r.json()["error"] == "refused_mail", r.text
    assert "took more than 5 s" in r.json()["message"] and time.monotonic() - started < BOUND_S

    r = client.post(url, data={**form, "html": FLOOD}, headers=_auth())
    assert r.status_code == 422 and f"{MAX_TAGS + 10_000:,} tags" in r.json()["message"], r.text
    r = client.post(url, data={"email": nested_mail(3_000).decode()}, headers=_auth())
    assert r.status_code == 422 and "nested too deeply" in r.json()["message"], r.text
    r = client.post(url, json={"text": "hi"}, headers=_auth())
    assert r.status_code == 400 and "multipart/form-data" in r.json()["message"], r.text
    r = client.post(url, data={"from": "eve@example.com"}, headers=_auth())
    assert r.status_code == 400 and "none of the fields" in r.json()["message"], r.text
    assert store.snapshot() == before

    # text next to hostile HTML: the text is what counts, the HTML is never parsed
    started = time.monotonic()
    r = client.post(url, data={**form, "text": "My order 1234 is late.", "html": QUADRATIC}, headers=_auth())
    assert r.status_code == 200 and r.json()["conversation_id"], r.text
    assert time.monotonic() - started < 5.0
    r = client.post(url, data={**form, "headers": "Message-ID: <wh-h2@example.com>\n", "html": GENUINE_HTML},
                    headers=_auth())
    assert r.status_code == 200, r.text
    assert [m.text for m in store.outbox(tenant.id)] == ["My order 1234 is late.", "I want a refund for order 5678."]


def test_connections_past_the_session_cap_get_421_and_a_freed_slot_serves_again(settings, client, store):
    tenant = new_tenant(client)
    configure(client, tenant, "email")
    conf = settings.model_copy(update={"email_inbound_port": free_port(), "email_inbound_domain": DOMAIN,
                                       "email_max_sessions": 2})
    listener = start_email_listener(conf)
    address = ("127.0.0.1", conf.email_inbound_port)
    held = [smtplib.SMTP(*address, timeout=30) for _ in range(2)]  # two senders hold their sessions
    try:
        for conn in held:
            assert conn.noop()[0] == 250
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP(*address, timeout=30)
        assert refused.value.smtp_code == 421 and b"too many connections" in refused.value.smtp_error
        held.pop().quit()
        deadline = time.monotonic() + 10
        while True:  # the freed slot is counted back once the server saw the connection end
            try:
                with smtplib.SMTP(*address, timeout=30) as conn:
                    conn.sendmail("eve@example.com", [f"{tenant.id}@{DOMAIN}"], html_mail(GENUINE_HTML))
                break
            except smtplib.SMTPConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        for conn in held:
            conn.close()
        listener.stop()

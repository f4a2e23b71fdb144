"""The e-mail channel end to end on real parts: customer mails reach the SMTP listener (run by the
worker, as in production) or the inbound-parse webhook; replies go out by SMTP to the
`mail` catcher, threaded (Subject, In-Reply-To, References) with text and HTML parts; the
customer's replies land in the same conversation with only their new text; forged webhooks get
403 and duplicates change nothing."""
from __future__ import annotations

import base64
import smtplib
import time
from email.message import EmailMessage

import httpx
import pytest
from tests_e2e_helpers import WorkerProcess, make_tenant, publish

from api.app import create_app
from channels.email_parse import thread_key
from demo.server import ThreadedServer
from runtime.devserver import free_port
from runtime.mailcatcher import text_body

DOMAIN = "mail.flywheel.test"
SUPPORT = "support@acme.example"
SECRET = "inbound-parse-secret-1"
PARCEL = """
procedure: parcel-status
title: Parcel status
trigger:
  keywords: [parcel]
steps:
  - id: ask_order
    type: ask
    text: Sure! What is your order number?
    pattern: "^[0-9]{4}$"
    timeout: 1h
    save_as: order_number
  - id: tell
    type: message
    text: "Thanks, order {{ order_number }} is on its way."
    end: true
"""


@pytest.fixture
def email_stack(tmp_path, e2e_settings, shop, mail):
    settings = e2e_settings.model_copy(update={"email_inbound_port": free_port(),
                                               "email_inbound_domain": DOMAIN, "email_max_bytes": 200_000})
    tenant = make_tenant(settings, shop[0])
    api = ThreadedServer(create_app(settings), port=settings.api_port).start()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    worker.wait_ready()  # the worker runs the SMTP listener (email_inbound_port is set), as in production
    try:
        headers = tenant["headers"]
        r = httpx.put(f"{api.url}/v1/channels/email", headers=headers, timeout=15, json={
            "settings": {"from_address": SUPPORT, "display_name": "Acme Support"},
            "secrets": {"webhook_secret": SECRET}})
        assert r.status_code == 200, r.text
        publish(api.url, headers, PARCEL, "application/yaml")
        yield {"api": api.url, "headers": headers, "tenant": tenant["id"], "settings": settings, "mail": mail,
               "smtp": ("127.0.0.1", settings.email_inbound_port), "log": tmp_path / "worker.log"}
    finally:
        worker.kill()
        api.stop()


def customer_mail(*, to: str, message_id: str, subject: str, body: str, in_reply_to: str = "",
                  references: str = "", sender: str = "Alice Liddell <alice@example.com>") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    msg.set_content(body)
    return msg


def smtp_send(stack, msg: EmailMessage) -> None:
    host, port = stack["smtp"]
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.send_message(msg)


def replies_to(mail, address: str, count: int, timeout: float = 90) -> list[EmailMessage]:
    return mail.wait_for(lambda m: address in str(m["To"]), timeout=timeout, count=count)


def conversations(stack) -> list[dict]:
    r = httpx.get(f"{stack['api']}/v1/conversations", headers=stack["headers"], timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["conversations"]


def transcript(stack, thread: str) -> dict:
    r = httpx.get(f"{stack['api']}/v1/inbox/email/{thread}", headers=stack["headers"], timeout=15)
    assert r.status_code == 200, r.text
    return r.json()


def wait_transcript(stack, thread, predicate, timeout=60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        t = transcript(stack, thread)
        if predicate(t):
            return t
        assert time.monotonic() < deadline, t
        time.sleep(0.25)


def customer_texts(t: dict) -> list[str]:
    return [m["text"] for m in t["messages"] if m["role"] == "customer"]


def assert_reply(reply: EmailMessage, *, subject: str, in_reply_to: str, references: str, text: str) -> None:
    assert reply["From"] == f"Acme Support <{SUPPORT}>"
    assert reply["Subject"] == subject
    assert reply["In-Reply-To"] == in_reply_to
    assert " ".join(str(reply["References"]).split()) == references
    assert reply["Message-ID"].endswith("@acme.example>")
    assert reply.get_content_type() == "multipart/alternative"
    assert text in text_body(reply)
    html = reply.get_body(preferencelist=("html",))
    assert html is not None and text in html.get_content()


def test_email_by_smtp_threads_strips_and_deduplicates(email_stack):
    stack, mail = email_stack, email_stack["mail"]
    inbox = f"{stack['tenant']}@{DOMAIN}"

    # Mail for an address that is no tenant's is refused; so is an oversized one.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        smtp_send(stack, customer_mail(to=f"nobody-here@{DOMAIN}", message_id="<x-1@example.com>",
                                       subject="hi", body="hello"))
    assert refused.value.recipients[f"nobody-here@{DOMAIN}"][0] == 550
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp_send(stack, customer_mail(to=f"{stack['tenant']}@elsewhere.test", message_id="<x-2@example.com>",
                                       subject="hi", body="hello"))

    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as too_big:
        smtp_send(stack, customer_mail(to=inbox, message_id="<x-3@example.com>", subject="big",
                                       body="parcel " * 40_000))
    assert too_big.value.smtp_code == 552

    first = customer_mail(to=inbox, message_id="<root-1@example.com>", subject="Parcel question",
                          body="Hi, where is my parcel?\n\nThanks,\nAlice\n")
    smtp_send(stack, first)
    [reply] = replies_to(mail, "alice@example.com", 1)
    assert_reply(reply, subject="Re: Parcel question", in_reply_to="<root-1@example.com>",
                 references="<root-1@example.com>", text="Sure! What is your order number?")
    ours = reply["Message-ID"]

    # The customer answers Gmail-style: new text on top, a signature, our mail quoted below.
    answer = customer_mail(
        to=inbox, message_id="<reply-2@example.com>", subject="Re: Parcel question", in_reply_to=ours,
        references=f"<root-1@example.com> {ours}",
        body="1234\n\n-- \nAlice Liddell\nExample Corp\n\n"
             "On Tue, Mar 5, 2024 at 10:02 AM Acme Support <support@acme.example> wrote:\n"
             "> Sure! What is your order number?\n")
    smtp_send(stack, answer)
    second = replies_to(mail, "alice@example.com", 2)[1]
    assert_reply(second, subject="Re: Parcel question", in_reply_to="<reply-2@example.com>",
                 references=f"<root-1@example.com> {ours} <reply-2@example.com>",
                 text="Thanks, order 1234 is on its way.")

    thread = thread_key("root-1@example.com")
    t = transcript(stack, thread)
    assert customer_texts(t) == ["Hi, where is my parcel?", "1234"]
    assert t["customer"]["email"] == "alice@example.com" and t["customer"]["email_subject"] == "Parcel question"

    # A client that only sends In-Reply-To (our second reply's id): mapped back to the thread.
    smtp_send(stack, customer_mail(to=inbox, message_id="<reply-3@example.com>", subject="Re: Parcel question",
                                   in_reply_to=second["Message-ID"], body="Great, it arrived!\n\nSent from my iPhone\n"))
    t = wait_transcript(stack, thread, lambda t: len(customer_texts(t)) == 3)
    assert customer_texts(t)[-1] == "Great, it arrived!"

    # The same Message-ID again (a retrying MTA), and an out-of-office reply to our mail:
    # accepted, nothing changes (no reply, no message).
    time.sleep(2)
    settled = len(mail.messages)
    smtp_send(stack, answer)
    away = customer_mail(to=inbox, message_id="<ooo-4@example.com>", subject="Out of office: Parcel question",
                         in_reply_to=second["Message-ID"], references=f"<root-1@example.com> {second['Message-ID']}",
                         body="I am away until Monday, where I'll reply about the parcel.")
    away["Auto-Submitted"] = "auto-replied"
    smtp_send(stack, away)
    time.sleep(3)
    assert len(mail.messages) == settled
    assert customer_texts(transcript(stack, thread)) == ["Hi, where is my parcel?", "1234", "Great, it arrived!"]
    email_convs = [c for c in conversations(stack) if c["channel"] == "email"]
    assert [c["thread"] for c in email_convs] == [thread]


def _basic(password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"inbound:{password}".encode()).decode()}


def test_email_by_inbound_parse_webhook(email_stack, shop):
    stack, mail = email_stack, email_stack["mail"]
    url = f"{stack['api']}/webhooks/{stack['tenant']}/email/inbound"
    other = make_tenant(stack["settings"], shop[0])  # another tenant, its own webhook secret
    r = httpx.put(f"{stack['api']}/v1/channels/email", headers=other["headers"], timeout=15, json={
        "settings": {"from_address": "help@globex.example"}, "secrets": {"webhook_secret": "globex-secret-2"}})
    assert r.status_code == 200, r.text
    form = {"from": "Bob Builder <bob@example.org>", "to": f"{stack['tenant']}@{DOMAIN}",
            "subject": "Lost parcel", "text": "My parcel never came.\n\nBest regards,\nBob\n",
            "html": "<p>My parcel never came.</p>",
            "headers": "Received: by mx.example.org\nMessage-ID: <wh-1@example.org>\nSubject: Lost parcel\n"}

    # Forged: no credentials, the wrong secret, this tenant's secret on another tenant's path, an
    # unknown tenant's path: 403 (the same answer) and nothing starts anywhere.
    for headers in ({}, _basic("not-the-secret"), {"Authorization": f"Bearer {SECRET}"}):
        r = httpx.post(url, data=form, headers=headers, timeout=15)
        assert r.status_code == 403, r.text
    for path in (other["id"], "t-nobody"):
        r = httpx.post(url.replace(stack["tenant"], path), data=form, headers=_basic(SECRET), timeout=15)
        assert r.status_code == 403 and r.json()["message"] == "invalid webhook credentials", r.text
    assert conversations(stack) == []
    assert httpx.get(f"{stack['api']}/v1/conversations", headers=other["headers"], timeout=15).json() == {
        "conversations": []}
    # Verified but larger than twice FLYWHEEL_EMAIL_MAX_BYTES: 413.
    r = httpx.post(url, data={**form, "text": "x" * 500_000}, headers=_basic(SECRET), timeout=30)
    assert r.status_code == 413, r.text
    assert conversations(stack) == []

    r = httpx.post(url, data=form, headers=_basic(SECRET), timeout=30)
    assert r.status_code == 200, r.text
    thread = thread_key("wh-1@example.org")
    assert r.json()["conversation_id"].endswith(f"/email/{thread}")
    [reply] = replies_to(mail, "bob@example.org", 1)
    assert_reply(reply, subject="Re: Lost parcel", in_reply_to="<wh-1@example.org>",
                 references="<wh-1@example.org>", text="Sure! What is your order number?")

    # A replayed delivery changes nothing: exactly one reply.
    again = httpx.post(url, data=form, headers=_basic(SECRET), timeout=30)
    assert again.status_code == 200 and again.json().get("duplicate") is True

    # The customer's reply as a whole raw MIME message (`email` field), Outlook style.
    raw = customer_mail(
        to=f"{stack['tenant']}@{DOMAIN}", message_id="<wh-2@example.org>", subject="RE: Lost parcel",
        in_reply_to=reply["Message-ID"], references=f"<wh-1@example.org> {reply['Message-ID']}",
        sender="Bob Builder <bob@example.org>",
        body="4321\n\n________________________________\nFrom: Acme Support <support@acme.example>\n"
             "Sent: Tuesday, March 5, 2024 10:02 AM\nTo: Bob Builder <bob@example.org>\n"
             "Subject: Re: Lost parcel\n\nSure! What is your order number?\n")
    r = httpx.post(url, data={"email": raw.as_string()}, headers=_basic(SECRET), timeout=30)
    assert r.status_code == 200 and r.json()["conversation_id"].endswith(f"/email/{thread}"), r.text
    second = replies_to(mail, "bob@example.org", 2)[1]
    assert_reply(second, subject="Re: Lost parcel", in_reply_to="<wh-2@example.org>",
                 references=f"<wh-1@example.org> {reply['Message-ID']} <wh-2@example.org>",
                 text="Thanks, order 4321 is on its way.")
    assert customer_texts(transcript(stack, thread)) == ["My parcel never came.", "4321"]
    time.sleep(2)
    assert len(replies_to(mail, "bob@example.org", 2)) == 2  # no reply to the replayed delivery
    assert [c["thread"] for c in conversations(stack)] == [thread]


def test_a_second_worker_on_the_host_runs_without_the_smtp_listener(email_stack, tmp_path):
    """The stack's worker holds the SMTP port; a second worker with the same settings logs a
    warning and runs (its relay included) instead of crashing; mail still gets answered."""
    stack, mail = email_stack, email_stack["mail"]
    second = WorkerProcess(stack["settings"], tmp_path / "second.log").start()
    try:
        second.wait_ready()
        log = (tmp_path / "second.log").read_text(errors="replace")
        assert "e-mail listener not started" in log and "address already in use" in log
        assert second.proc.poll() is None
        smtp_send(stack, customer_mail(to=f"{stack['tenant']}@{DOMAIN}", message_id="<second-1@example.com>",
                                       subject="Parcel", body="Where is my parcel?"))
        [reply] = replies_to(mail, "alice@example.com", 1)
        assert "What is your order number?" in text_body(reply)
    finally:
        second.kill()


def test_hostile_html_mail_is_refused_in_bounded_time_and_the_worker_keeps_answering(email_stack):
    """HTML that html.parser needs 24 s for (60 kB of unclosed tags, under the tag budget)
    reaches the worker's SMTP listener and the API's webhook: both refuse it within the mail
    sandbox's limit, with the reason, nothing starts; a genuine HTML-only mail right after is
    answered."""
    stack, mail = email_stack, email_stack["mail"]
    inbox = f"{stack['tenant']}@{DOMAIN}"
    hostile = EmailMessage()
    hostile["From"], hostile["To"], hostile["Subject"] = "Eve <eve@example.com>", inbox, "Parcel"
    hostile["Message-ID"] = "<hostile-1@example.com>"
    hostile.set_content("<p>parcel " + "a <b" * 15_000, subtype="html")
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp_send(stack, hostile)
    assert refused.value.smtp_code == 550, refused.value
    assert b"5.6.0 message refused: reading the message took more than 5 s" in refused.value.smtp_error
    assert time.monotonic() - started < 15

    url = f"{stack['api']}/webhooks/{stack['tenant']}/email/inbound"
    started = time.monotonic()
    r = httpx.post(url, data={"from": "Eve <eve@example.com>", "to": inbox, "subject": "Parcel",
                              "html": "<p>parcel " + "a <b" * 15_000,
                              "headers": "Message-ID: <hostile-2@example.com>\n"}, headers=_basic(SECRET), timeout=60)
    assert r.status_code == 422 and r.json()["error"] == "refused_mail", r.text
    assert time.monotonic() - started < 15
    assert conversations(stack) == []

    genuine = EmailMessage()
    genuine["From"], genuine["To"], genuine["Subject"] = "Eve <eve@example.com>", inbox, "Parcel"
    genuine["Message-ID"] = "<genuine-3@example.com>"
    genuine.set_content("<html><body><p>Where is my <b>parcel</b>?</p></body></html>", subtype="html")
    smtp_send(stack, genuine)
    [reply] = replies_to(mail, "eve@example.com", 1)
    assert "What is your order number?" in text_body(reply)
    assert customer_texts(transcript(stack, thread_key("genuine-3@example.com"))) == ["Where is my parcel?"]

"""E-mail parsing (channels/email_parse.py) over realistic messages: Gmail, Outlook, Apple Mail
quoting, signatures, HTML-only mails, threading ids; and the pure parts of channels/email.py
(reply building, webhook credentials, form parsing)."""
from __future__ import annotations

import base64
from email import message_from_bytes, policy

import httpx
import pytest

from channels.email import basic_password, build_reply, render_html, render_text, verify
from channels.email_parse import (
    base_subject,
    form_fields,
    from_form,
    html_to_plain,
    msg_ids,
    parse_message,
    references_chain,
    reply_subject,
    strip_reply,
    tenant_of_address,
    thread_key,
    thread_root,
)
from channels.errors import ChannelError, Forbidden

# ---- quoted history -------------------------------------------------------------------------
GMAIL = """\
Yes, that's the right address. Can you send it today?

On Tue, Mar 5, 2024 at 10:02 AM Acme Support <support@acme.example> wrote:

> Hi Alice,
>
> Could you confirm your shipping address?
>
> Thanks,
> Acme
"""

GMAIL_WRAPPED = """\
It still hasn't arrived.

On Tue, Mar 5, 2024 at 10:02 AM Acme Customer Support Team <
support@acme.example> wrote:
> We shipped it yesterday.
"""

APPLE = """\
Perfect, thank you!

Sent from my iPhone

> On 5 Mar 2024, at 10:02, Acme Support <support@acme.example> wrote:
>
> Your refund has been issued.
"""

OUTLOOK = """\
Please cancel order 4417, I ordered the wrong size.

________________________________
From: Acme Support <support@acme.example>
Sent: Tuesday, March 5, 2024 10:02 AM
To: Bob Builder <bob@example.org>
Subject: Re: Order 4417

Hello Bob, your order ships tomorrow.
"""

OUTLOOK_ORIGINAL = """\
The tracking link does not work.

-----Original Message-----
From: Acme Support [mailto:support@acme.example]
Sent: Tuesday, March 5, 2024 10:02 AM
To: carol@example.net
Subject: RE: Tracking

Here is your tracking link.
"""

GERMAN = """\
Die Bestellnummer ist 1234.

Am Di., 5. März 2024 um 10:02 Uhr schrieb Acme Support <support@acme.example>:
> Wie lautet Ihre Bestellnummer?
"""

INLINE = """\
> Which size did you order?
Medium.
> And which colour?
Blue, please.
"""

SIGNATURE = """\
1234

-- 
Alice Smith
Head of Purchasing, Example Corp
+1 555 0100
"""

SIGN_OFF = """\
Can you check the status of order 1234?

Thanks,
Alice
"""

SIGN_OFF_BLOCK = """\
The invoice shows the wrong VAT number.

Kind regards,

Bob Builder
Builder & Sons Ltd.
"""


@pytest.mark.parametrize("text, expected", [
    (GMAIL, "Yes, that's the right address. Can you send it today?"),
    (GMAIL_WRAPPED, "It still hasn't arrived."),
    (APPLE, "Perfect, thank you!"),
    (OUTLOOK, "Please cancel order 4417, I ordered the wrong size."),
    (OUTLOOK_ORIGINAL, "The tracking link does not work."),
    (GERMAN, "Die Bestellnummer ist 1234."),
    (INLINE, "Medium.\nBlue, please."),
    (SIGNATURE, "1234"),
    (SIGN_OFF, "Can you check the status of order 1234?"),
    (SIGN_OFF_BLOCK, "The invoice shows the wrong VAT number."),
    ("Line one\r\nLine two\r\n\r\n\r\n\r\nLine three\r\n", "Line one\nLine two\n\nLine three"),
])
def test_strip_reply_keeps_only_the_new_text(text, expected):
    assert strip_reply(text) == expected


@pytest.mark.parametrize("text", [
    "Thanks!",  # a sign-off with nothing before it is the message
    "My order is late.\nThanks\nCould you check why it was not shipped?",  # content after 'Thanks'
    "I got an email from: your billing team, is that legit?",  # 'from:' without a header block
    "The price was -- as agreed -- 20 dollars.",  # dashes inside a line are no delimiter
    "Regards,\nthe parcel you sent arrived broken and I need a replacement for the whole set asap",
    "On Monday I wrote to you already and nobody answered.",  # no 'wrote:' header at the end
])
def test_strip_reply_is_conservative(text):
    assert strip_reply(text) == text


def test_strip_reply_limits_and_empties():
    assert strip_reply("") == ""
    assert strip_reply("> only quoted\n> history") == ""
    cut = strip_reply("x" * 20_000)
    assert len(cut) == 10_000 and cut.endswith("\n[message truncated]")


def test_mobile_signatures_at_the_end_only():
    assert strip_reply("Where is my parcel?\n\nSent from my Galaxy") == "Where is my parcel?"
    assert strip_reply("Ok\n\nGet Outlook for iOS") == "Ok"
    body = "Sent from my iPhone the photos do not upload, see below.\nWhat can I do?"
    assert strip_reply(body) == body


# ---- HTML -----------------------------------------------------------------------------------
GMAIL_HTML = """\
<div dir="ltr">Hi,<div><br></div><div>my order <b>1234</b> arrived broken.</div>
<div><br></div><div>Thanks</div><div>Dana</div></div><br><div class="gmail_quote">
<div dir="ltr" class="gmail_attr">On Tue, Mar 5, 2024 at 10:02 AM Acme &lt;support@acme.example&gt; wrote:<br></div>
<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">Your order has shipped.</blockquote></div>
"""

OUTLOOK_WEB_HTML = """\
<html><body><div style="font-family:Calibri">Please send a new invoice.</div>
<div id="appendonsend"></div><hr style="display:inline-block;width:98%">
<div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Acme Support<br><b>Sent:</b> Tuesday</div>
<div>Here is your invoice.</div></body></html>
"""

APPLE_HTML = """\
<html><body dir="auto">Works now, thanks for the quick help!<br><br><div dir="ltr">Sent from my iPhone</div>
<div dir="ltr"><br><blockquote type="cite">On 5 Mar 2024, at 10:02, Acme wrote:<br><br>
Try restarting the app.</blockquote></div></body></html>
"""


def test_html_mails_become_text_without_quotes():
    assert strip_reply(html_to_plain(GMAIL_HTML)) == "Hi,\n\nmy order 1234 arrived broken."
    assert strip_reply(html_to_plain(OUTLOOK_WEB_HTML)) == "Please send a new invoice."
    assert strip_reply(html_to_plain(APPLE_HTML)) == "Works now, thanks for the quick help!"


# ---- whole messages -------------------------------------------------------------------------
RAW_GMAIL_REPLY = b"""\
Return-Path: <dana@example.com>
From: Dana Scully <dana@example.com>
To: support+acme@mail.flywheel.test
Subject: Re: Re: Broken blender
Date: Tue, 05 Mar 2024 11:00:00 +0000
Message-ID: <CAF=reply2@mail.gmail.com>
In-Reply-To: <fw.abc@acme.example>
References: <CAF=root1@mail.gmail.com>
 <fw.abc@acme.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="000b"

--000b
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

Order 1234, bought in M=C3=BCnchen.

On Tue, Mar 5, 2024 at 10:02 AM Acme <support@acme.example> wrote:
> What is your order number?

--000b
Content-Type: text/html; charset="UTF-8"

<div>Order 1234, bought in M\xc3\xbcnchen.</div>
--000b--
"""

RAW_HTML_ONLY = b"""\
From: "Eve" <eve@example.com>
To: acme@mail.flywheel.test
Subject: Refund
Message-ID: <html-only-1@example.com>
Content-Type: text/html; charset=utf-8

<html><body><p>I want a <b>refund</b> for order 5678.</p><p>-- <br>Eve</p></body></html>
"""


def test_parse_a_gmail_reply():
    mail = parse_message(RAW_GMAIL_REPLY)
    assert mail.message_id == "CAF=reply2@mail.gmail.com"
    assert mail.in_reply_to == "fw.abc@acme.example"
    assert mail.references == ("CAF=root1@mail.gmail.com", "fw.abc@acme.example")
    assert mail.root == "CAF=root1@mail.gmail.com"
    assert mail.thread == thread_key("CAF=root1@mail.gmail.com")
    assert (mail.from_address, mail.from_name) == ("dana@example.com", "Dana Scully")
    assert mail.to == ("support+acme@mail.flywheel.test",)
    assert mail.text == "Order 1234, bought in München."
    assert base_subject(mail.subject) == "Broken blender" and not mail.auto


def test_parse_an_html_only_mail():
    mail = parse_message(RAW_HTML_ONLY)
    assert mail.text == "I want a refund for order 5678."
    assert mail.thread == thread_key("html-only-1@example.com")


def test_a_mail_without_message_id_gets_a_stable_synthetic_one():
    raw = b"From: x@example.com\nTo: acme@t\nSubject: hi\nDate: Tue, 05 Mar 2024 11:00:00 +0000\n\nHello\n"
    first, again = parse_message(raw), parse_message(raw)
    assert first.message_id == again.message_id and first.message_id.endswith("@flywheel.invalid")
    assert parse_message(raw.replace(b"Hello", b"Hello!")).message_id != first.message_id


@pytest.mark.parametrize("headers", [
    "Auto-Submitted: auto-replied", "Auto-Submitted: auto-generated", "Precedence: bulk",
    "X-Autoreply: yes", "Content-Type: multipart/report; report-type=delivery-status",
])
def test_automatic_mails_are_flagged(headers):
    raw = f"From: x@example.com\nTo: acme@t\nSubject: Out of office\nMessage-ID: <a@b>\n{headers}\n\nAway\n"
    assert parse_message(raw.encode()).auto


def test_bounce_senders_are_automatic_and_people_are_not():
    assert parse_message(b"From: MAILER-DAEMON@mx.example\nMessage-ID: <a@b>\n\nfailed\n").auto
    assert parse_message(b"From: no-reply@shop.example\nMessage-ID: <a@b>\n\nhi\n").auto
    assert not parse_message(b"From: noreen@example.com\nAuto-Submitted: no\nMessage-ID: <a@b>\n\nhi\n").auto


def test_inbound_parse_form_fields():
    mail = from_form({
        "from": "Frank <frank@example.com>", "to": "acme@mail.flywheel.test", "subject": "Re: Where is it",
        "text": "Still waiting.\n\nOn Mon, Frank wrote:\n> old", "html": "<p>ignored when text is there</p>",
        "headers": "Received: by mx\r\nMessage-ID: <f-2@example.com>\r\nIn-Reply-To: <f-1@example.com>\r\n"
                   "References: <f-1@example.com>\r\nSubject: Re: Where is it\r\n",
    })
    assert (mail.message_id, mail.in_reply_to, mail.references) == ("f-2@example.com", "f-1@example.com",
                                                                     ("f-1@example.com",))
    assert mail.text == "Still waiting." and mail.from_address == "frank@example.com"
    html_only = from_form({"from": "g@example.com", "subject": "x", "html": "<p>Hello <i>there</i></p>",
                           "headers": "Message-ID: <g@example.com>"})
    assert html_only.text == "Hello there"
    raw = from_form({"email": RAW_GMAIL_REPLY.decode(), "text": "ignored"})
    assert raw.message_id == "CAF=reply2@mail.gmail.com" and raw.text == "Order 1234, bought in München."


# ---- ids, threading, subjects, addresses ----------------------------------------------------
def test_msg_ids_and_thread_root():
    assert msg_ids("<a@b> <c@d>\r\n <e@f>") == ["a@b", "c@d", "e@f"]
    assert msg_ids("bare@id") == ["bare@id"] and msg_ids("") == [] and msg_ids("garbage") == []
    assert thread_root("own@x", "parent@x", ["root@x", "parent@x"]) == "root@x"
    assert thread_root("own@x", "parent@x", []) == "parent@x"
    assert thread_root("own@x", "", []) == "own@x"
    key = thread_key("root@x")
    assert key == thread_key("<root@x>") and key != thread_key("root@y")
    from workflows.conversation_types import THREAD
    assert THREAD.fullmatch(key)


def test_references_chain_keeps_root_and_newest():
    assert references_chain(["a@x", "b@x"], "c@x") == ["a@x", "b@x", "c@x"]
    assert references_chain(["a@x", "a@x"], "a@x") == ["a@x"]
    long = references_chain([f"{i}@x" for i in range(50)], "new@x")
    assert len(long) == 20 and long[0] == "0@x" and long[-1] == "new@x" and long[-2] == "49@x"


@pytest.mark.parametrize("subject, base", [
    ("Re: Broken blender", "Broken blender"), ("RE: AW: Fwd: Broken blender", "Broken blender"),
    ("Re[2]: Invoice", "Invoice"), ("Refund please", "Refund please"), ("", ""),
    ("  Where   is\n my order ", "Where is my order"),
])
def test_base_subject(subject, base):
    assert base_subject(subject) == base


def test_reply_subject():
    assert reply_subject("Re: Broken blender") == "Re: Broken blender"
    assert reply_subject("Order 12") == "Re: Order 12"
    assert reply_subject(None) == "Re: Your message"


@pytest.mark.parametrize("address, domain, tenant", [
    ("acme@mail.flywheel.test", "mail.flywheel.test", "acme"),
    ("support+acme-42@mail.flywheel.test", "mail.flywheel.test", "acme-42"),
    ("Acme Support <ACME@Mail.Flywheel.Test>", "mail.flywheel.test", "acme"),
    ("acme@elsewhere.test", "mail.flywheel.test", None),
    ("acme@anything.test", "", "acme"),
    ("bad_name@mail.flywheel.test", "mail.flywheel.test", None),
    ("not-an-address", "", None),
])
def test_tenant_of_address(address, domain, tenant):
    assert tenant_of_address(address, domain) == tenant


# ---- replies and webhook credentials (pure parts of channels/email.py) ----------------------
PAYLOAD = {
    "tenant_id": "acme", "channel": "email", "thread": "mabc", "idempotency_key": "conversation/acme/email/mabc:3",
    "customer": {"email": "dana@example.com", "name": "Dana Scully", "email_subject": "Broken blender",
                 "email_message_id": "<CAF=reply2@mail.gmail.com>",
                 "email_references": "<CAF=root1@mail.gmail.com> <CAF=reply2@mail.gmail.com>"},
    "message": {"seq": 3, "role": "assistant", "text": "You get a new one.\n\nIt ships <today>.",
                "citations": [{"article_id": "a1", "title": "Returns & refunds", "url": "https://help.acme.example/r"},
                              {"article_id": "a2", "title": "Bad link", "url": "javascript:alert(1)"}]},
}


def test_build_reply_threads_and_renders_both_parts():
    conf = {"from_address": "support@acme.example", "display_name": "Acme Support"}
    msg = build_reply(PAYLOAD, conf, "fallback@flywheel.test")
    again = build_reply(PAYLOAD, conf, "fallback@flywheel.test")
    assert msg["Message-ID"] == again["Message-ID"]  # stable across retries
    assert msg["Message-ID"].endswith("@acme.example>")
    other = build_reply({**PAYLOAD, "idempotency_key": "conversation/acme/email/mabc:4"}, conf, "x@y")
    assert other["Message-ID"] != msg["Message-ID"]
    assert msg["From"] == "Acme Support <support@acme.example>"
    assert msg["To"] == "Dana Scully <dana@example.com>"
    assert msg["Subject"] == "Re: Broken blender"
    assert msg["In-Reply-To"] == "<CAF=reply2@mail.gmail.com>"
    assert msg["References"] == "<CAF=root1@mail.gmail.com> <CAF=reply2@mail.gmail.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    wire = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert wire.get_content_type() == "multipart/alternative"
    text = wire.get_body(("plain",)).get_content()
    assert text.startswith("You get a new one.\n\nIt ships <today>.")
    assert "Sources:\n1. Returns & refunds <https://help.acme.example/r>\n2. Bad link\n" in text
    html = wire.get_body(("html",)).get_content()
    assert '<a href="https://help.acme.example/r">Returns &amp; refunds</a>' in html
    assert "It ships &lt;today&gt;." in html and "javascript:" not in html


def test_agent_replies_are_not_marked_automatic_and_default_from():
    payload = {**PAYLOAD, "message": {"seq": 4, "role": "agent", "text": "Hi, Sam here.", "citations": []}}
    msg = build_reply(payload, {}, "acme@mail.flywheel.test")
    assert msg["Auto-Submitted"] is None and msg["From"] == "acme@mail.flywheel.test"
    assert "Sources" not in render_text(payload["message"]) and "<ol>" not in render_html(payload["message"])


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_webhook_credentials():
    assert basic_password(_basic("inbound", "s3cret")) == "s3cret"
    assert basic_password("Bearer s3cret") is None and basic_password("Basic !!!") is None
    verify("s3cret", _basic("any", "s3cret"))
    for header in ("", _basic("any", "wrong"), "Basic " + base64.b64encode(b"s3cret").decode()):
        with pytest.raises(Forbidden):
            verify("s3cret", header)
    with pytest.raises(Forbidden):
        verify("", _basic("any", ""))


def test_form_fields_multipart_and_urlencoded():
    req = httpx.Request("POST", "http://x/", data={"from": "Zoë <z@example.com>", "text": "Grüße"},
                        files={"attachment1": ("a.bin", b"\x00\xff" * 10)})
    assert form_fields(req.headers["content-type"], req.read()) == {"from": "Zoë <z@example.com>", "text": "Grüße"}
    assert form_fields("application/x-www-form-urlencoded", b"from=a%40b&text=hi") == {"from": "a@b", "text": "hi"}
    with pytest.raises(ChannelError):
        form_fields("application/json", b"{}")

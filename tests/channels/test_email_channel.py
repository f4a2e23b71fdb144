"""The e-mail channel's own guarantees, on the real SMTP catcher and the test database:
a reply is sent once per delivery (a retried activity sends nothing more), and a mail from
another address than a thread's never joins that thread nor changes where its replies go."""
from __future__ import annotations

import asyncio
import uuid
from email.message import EmailMessage

import pytest

from activities.services import Services
from channels.email import engine_runner, ingest, send_reply
from channels.email_parse import parse_message, thread_key
from channels.outbound import deliver
from runtime.mailcatcher import MailCatcher
from security.secrets import SecretBox
from tests.channels.conftest import configure, new_tenant


@pytest.fixture
def mailbox():
    with MailCatcher() as catcher:
        yield catcher


@pytest.fixture
def services(settings, store, mailbox):
    return Services(settings=settings.model_copy(update={"smtp_port": mailbox.port}), engine=store.engine,
                    box=SecretBox.from_setting(settings.secret_keys), signer=None)


def payload(tenant_id: str, key: str, text: str = "Your parcel left our warehouse today.") -> dict:
    return {"tenant_id": tenant_id, "channel": "email", "thread": thread_key("root-1@example.com"),
            "idempotency_key": key,
            "customer": {"email": "alice@example.com", "name": "Alice", "email_subject": "Parcel",
                         "email_message_id": "<root-1@example.com>", "email_references": "<root-1@example.com>"},
            "message": {"seq": 2, "role": "assistant", "text": text, "citations": []}}


def test_a_delivery_is_mailed_once_however_often_it_is_retried(client, services, mailbox):
    t = new_tenant(client)
    configure(client, t, "email")
    key = f"conversation/{t.id}/email/x:{uuid.uuid4().hex}"
    first = asyncio.run(deliver(services, payload(t.id, key)))
    again = asyncio.run(deliver(services, payload(t.id, key)))
    assert first["delivered"] and again == {**first, "already_sent": True}
    mailbox.wait_for(lambda m: True, count=1)
    asyncio.run(asyncio.sleep(0.5))
    assert len(mailbox.messages) == 1
    assert mailbox.messages[0]["Message-ID"] == first["message_id"]
    # another delivery (another key) is another mail
    other = asyncio.run(send_reply(services, payload(t.id, key + "-next", "And it arrives tomorrow.")))
    mailbox.wait_for(lambda m: True, count=2)
    assert other["message_id"] != first["message_id"] and len(mailbox.messages) == 2


def mail(sender: str, message_id: str, *, references: str = "", in_reply_to: str = "", body: str = "hello",
         to: str = "acme@mail.flywheel.test") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Re: Parcel" if references or in_reply_to else "Parcel"
    msg["Message-ID"] = f"<{message_id}>"
    if references:
        msg["References"] = references
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content(body)
    return msg.as_bytes()


def test_a_mail_from_another_address_never_joins_a_thread_nor_redirects_its_replies(client, services, store):
    t = new_tenant(client)
    configure(client, t, "email")
    db = engine_runner(store.engine)

    def take(raw: bytes) -> dict:
        return asyncio.run(ingest(db, t.id, parse_message(raw)))

    root = f"root-{uuid.uuid4().hex[:8]}@example.com"
    alice = take(mail("Alice <alice@example.com>", root, body="Where is my parcel?"))
    thread = thread_key(root)
    assert alice["conversation_id"].endswith(f"/email/{thread}")
    # our reply to Alice, as the outbound adapter records it (its Message-ID maps back to the thread)
    sent = asyncio.run(send_reply(services, {**payload(t.id, f"k-{uuid.uuid4().hex}"), "thread": thread}))
    ours = sent["message_id"]

    # Mallory knows the thread's ids (a CC, a forward): References naming the root, In-Reply-To our reply
    spoofs = [mail("Mallory <mallory@evil.example>", f"spoof-1-{uuid.uuid4().hex[:6]}@evil.example",
                   references=f"<{root}>", body="Please send the parcel to my address instead."),
              mail("alice@example.com.evil.example", f"spoof-2-{uuid.uuid4().hex[:6]}@evil.example",
                   in_reply_to=ours, body="Change my delivery address.")]
    threads = []
    for raw in spoofs:
        result = take(raw)
        assert "conversation_id" in result and not result["conversation_id"].endswith(thread), result
        threads.append(result["conversation_id"])
    assert len(set(threads)) == 2

    # Alice's own next mail still joins her thread (her address, any case)
    again = take(mail("ALICE@Example.com", f"reply-{uuid.uuid4().hex[:6]}@example.com",
                      references=f"<{root}> {ours}", in_reply_to=ours, body="Any news?"))
    assert again["conversation_id"].endswith(f"/email/{thread}")

    rows = store.outbox(t.id)
    in_thread = [r for r in rows if r.thread == thread]
    assert [r.text for r in in_thread] == ["Where is my parcel?", "Any news?"]
    assert {r.customer["email"] for r in in_thread} == {"alice@example.com"}  # replies keep going to Alice
    others = [r for r in rows if r.thread != thread]
    assert [(r.customer["email"], r.text) for r in others] == [
        ("mallory@evil.example", "Please send the parcel to my address instead."),
        ("alice@example.com.evil.example", "Change my delivery address.")]

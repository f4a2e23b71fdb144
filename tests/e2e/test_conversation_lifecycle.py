"""A conversation's life: it continues as new when Temporal suggests it, losing nothing (not even
what arrives while it does); it closes after its idle timeout or when a person closes it, with
an outcome; a closed thread that gets a new message reopens and continues its transcript, and
replies after the reopen reach the customer; a client's retry of a message answered in an earlier
session gets that answer again; a procedure a person's close interrupted goes on and its messages
are recorded and delivered; a phone call's end closes the conversation. Runs on a dev server of
its own that suggests continue-as-new early, with a short idle timeout and a loopback Messenger
Send API."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from api.app import create_app
from api.routes.conversations import send_message
from db.channels import list_events
from db.conversations import get_conversation, list_messages
from db.engine import make_engine, session_scope
from demo.meta_server import MetaState, create_meta_app
from demo.server import ThreadedServer
from runtime.devserver import DevServer, free_port
from runtime.mailcatcher import text_body
from tests_e2e_helpers import WorkerProcess, approval_links, make_tenant, publish
from workflows import conversation_types as C
from workflows.conversation import ATTACHMENT_TEXT, HANDOFF_TEXT

APP_SECRET, PAGE_TOKEN, PAGE_ID = "5c0ffee5b7e4f2aa9d6e1b2c3d4e5f60", "EAAGm0PX4ZCpsBAPageTokenLifecycle", "1045300099"
IDLE_S = 6.0
REFUND = (Path(__file__).resolve().parents[2] / "examples" / "refund-conversation.yaml").read_text()

HOURS = """
procedure: opening-hours
trigger: {keywords: [opening hours]}
steps:
  - id: tell
    type: message
    text: We are open 9 to 5 on weekdays.
"""

VOUCHER = """
procedure: voucher
trigger: {keywords: [voucher]}
steps:
  - id: ask_code
    type: ask
    text: What is your voucher code?
    pattern: "^[A-Z]{4}[0-9]{4}$"
    max_attempts: 60
    timeout: 1h
    save_as: code
  - id: thanks
    type: message
    text: "Thanks, voucher {{ code }} is noted."
"""


@pytest.fixture
def stack(tmp_path, e2e_settings, shop):
    server = DevServer(db_file=tmp_path / "lifecycle.db", port=free_port(),
                       dynamic_config={"limit.historyCount.suggestContinueAsNew": 60}).start()
    meta_state = MetaState(tokens={PAGE_TOKEN})
    meta = ThreadedServer(create_meta_app(meta_state)).start()
    settings = e2e_settings.model_copy(update={"temporal_address": server.address, "conversation_idle_s": IDLE_S,
                                               "meta_graph_base": meta.url + "/v19.0"})
    tenant = make_tenant(settings, shop[0])
    api = ThreadedServer(create_app(settings), port=settings.api_port).start()
    worker = WorkerProcess(settings, tmp_path / "w.log").start()
    yield {"api": api.url, "headers": tenant["headers"], "tenant": tenant["id"], "settings": settings,
           "meta": meta_state}
    worker.kill()
    api.stop()
    meta.stop()
    server.stop()


def say(api, headers, thread, text, message_id="", **extra):
    r = httpx.post(f"{api}/v1/conversations/{thread}/messages", headers=headers,
                   json={"text": text, "message_id": message_id, **extra}, timeout=90)
    assert r.status_code == 200, r.text
    return r.json()


def transcript(s, channel, thread) -> dict:
    path = f"/v1/conversations/{thread}" if channel == "api" else f"/v1/inbox/{channel}/{thread}"
    r = httpx.get(s["api"] + path, headers=s["headers"], timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_transcript(s, channel, thread, predicate, timeout=60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        t = transcript(s, channel, thread) if _exists(s, channel, thread) else None
        if t is not None and predicate(t):
            return t
        assert time.monotonic() < deadline, t
        time.sleep(0.3)


def _exists(s, channel, thread) -> bool:
    path = f"/v1/conversations/{thread}" if channel == "api" else f"/v1/inbox/{channel}/{thread}"
    return httpx.get(s["api"] + path, headers=s["headers"], timeout=30).status_code == 200


def stored(s, cid) -> list:
    engine = make_engine(s["settings"].resolved_database_url())
    try:
        with session_scope(engine) as session:
            return [(m.seq, m.role, m.text) for m in list_messages(session, s["tenant"], cid)]
    finally:
        engine.dispose()


def stored_row(s, cid):
    engine = make_engine(s["settings"].resolved_database_url())
    try:
        with session_scope(engine) as session:
            row = get_conversation(session, s["tenant"], cid)
            return {"status": row.status, "outcome": row.outcome, "rating": row.rating}
    finally:
        engine.dispose()


def runs(s, cid) -> int:
    async def count() -> int:
        client = await Client.connect(s["settings"].temporal_address)
        return len([x async for x in client.list_workflows(f'WorkflowId = "{cid}"')])
    return asyncio.run(count())


def close(s, channel, thread):
    r = httpx.post(f"{s['api']}/v1/inbox/{channel}/{thread}/close", headers=s["headers"], json={}, timeout=30)
    assert r.status_code == 200, r.text


def assert_numbered_once(t: dict, db_rows: list) -> None:
    """Every message once, in order: the transcript's seqs are 1..N, and the database holds the same."""
    seqs = [m["seq"] for m in t["messages"]]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert db_rows == [(m["seq"], m["role"], m["text"]) for m in t["messages"]]


# ---- continue-as-new ------------------------------------------------------------------------

def test_continue_as_new_keeps_the_conversation_and_idle_closes_it(stack):
    api, headers = stack["api"], stack["headers"]
    first = say(api, headers, "long-1", "please connect me to a human", message_id="m0")
    assert first["status"] == "handed_off"
    for i in range(1, 25):  # handed off: each message is recorded for the person, no AI reply
        say(api, headers, "long-1", f"message {i}", message_id=f"m{i}")
    again = say(api, headers, "long-1", "please connect me to a human", message_id="m0")
    assert again == first  # de-duplication survived continue-as-new
    cid = f"conversation/{stack['tenant']}/api/long-1"
    assert runs(stack, cid) >= 2  # it continued as new at least once

    t = transcript(stack, "api", "long-1")
    customer = [m["text"] for m in t["messages"] if m["role"] == "customer"]
    assert customer == ["please connect me to a human"] + [f"message {i}" for i in range(1, 25)]

    t = wait_transcript(stack, "api", "long-1", lambda t: t["status"] == "closed")
    assert t["outcome"] == "handed_off"
    assert_numbered_once(t, stored(stack, cid))


def test_continue_as_new_with_a_waiting_procedure_and_messages_arriving_meanwhile(stack):
    """A procedure waits on an `ask` across several continue-as-new; messages come from three
    clients at once (some while the workflow flushes and continues as new), one is retried."""
    api, headers = stack["api"], stack["headers"]
    publish(api, headers, VOUCHER, "application/yaml")
    asked = say(api, headers, "can-1", "I have a voucher", message_id="v0")
    assert asked["reply"]["text"] == "What is your voucher code?"

    def client(n: int) -> list[dict]:
        # Staggered, with pauses: the workflow finds quiet moments to continue as new, and the
        # other clients' messages arrive while it flushes and continues.
        out = []
        time.sleep(0.15 * n)
        for i in range(12):
            out.append(say(api, headers, "can-1", f"code {n}-{i}", message_id=f"v{n}-{i}"))
            time.sleep(0.4)
        return out

    with ThreadPoolExecutor(3) as pool:
        replies = [r for rs in pool.map(client, range(3)) for r in rs]
    assert all(r["reply"]["text"] == "Sorry, that does not look right. What is your voucher code?"
               and r["procedure"]["id"] == "voucher" for r in replies)
    retried = say(api, headers, "can-1", "code 0-0", message_id="v0-0")  # a client's retry
    assert retried == replies[0]
    done = say(api, headers, "can-1", "ABCD1234", message_id="v-last")
    assert done["reply"]["text"] == "Thanks, voucher ABCD1234 is noted."
    cid = f"conversation/{stack['tenant']}/api/can-1"

    t = wait_transcript(stack, "api", "can-1", lambda t: t["status"] == "closed")
    assert runs(stack, cid) >= 2  # it continued as new (with the procedure waiting on its ask)
    customer = [m["text"] for m in t["messages"] if m["role"] == "customer"]
    sent = ["I have a voucher"] + [f"code {n}-{i}" for n in range(3) for i in range(12)] + ["ABCD1234"]
    assert sorted(customer) == sorted(sent) and len(customer) == len(sent)  # none lost, none twice
    for n in range(3):  # each client's messages in the order it sent them
        mine = [c for c in customer if c.startswith(f"code {n}-")]
        assert mine == [f"code {n}-{i}" for i in range(12)]
    # each customer message answered once, right after it
    talk = [m for m in t["messages"] if m["role"] in ("customer", "assistant")]
    assert [m["role"] for m in talk] == ["customer", "assistant"] * len(sent)
    assert t["outcome"] == "resolved"
    assert_numbered_once(t, stored(stack, cid))


# ---- closing and reopening ------------------------------------------------------------------

def test_a_closed_conversation_reopens_and_continues_its_transcript(stack):
    api, headers = stack["api"], stack["headers"]
    publish(api, headers, HOURS, "application/yaml")
    cid = f"conversation/{stack['tenant']}/api/re-1"
    first = say(api, headers, "re-1", "what are your opening hours?")
    assert first["reply"]["text"] == "We are open 9 to 5 on weekdays." and first["status"] == "open"

    closed = wait_transcript(stack, "api", "re-1", lambda t: t["status"] == "closed")  # idle close
    assert closed["outcome"] == "resolved"
    r = httpx.post(f"{api}/v1/conversations/re-1/rating", headers=headers, json={"rating": 4}, timeout=30)
    assert r.status_code == 200  # rated after the close: stored on the row
    assert stored_row(stack, cid) == {"status": "closed", "outcome": "resolved", "rating": 4}

    again = say(api, headers, "re-1", "opening hours again, please")
    assert again["reply"]["text"] == "We are open 9 to 5 on weekdays." and again["status"] == "open"
    close(stack, "api", "re-1")  # a person closes it this time
    t = wait_transcript(stack, "api", "re-1", lambda t: t["status"] == "closed")
    third = say(api, headers, "re-1", "and on Saturdays? opening hours")
    assert third["status"] == "open"
    t = transcript(stack, "api", "re-1")
    assert t["status"] == "open" and t["outcome"] is None and t["rating"] == 4  # kept until re-rated

    texts = [(m["role"], m["text"]) for m in t["messages"]]
    assert [x for x in texts if x[0] == "customer"] == [
        ("customer", "what are your opening hours?"), ("customer", "opening hours again, please"),
        ("customer", "and on Saturdays? opening hours")]
    notes = [x[1] for x in texts if x[0] == "system" and x[1].startswith("conversation")]
    assert notes == ["conversation closed (resolved)", "conversation reopened (it was closed: resolved)",
                     "conversation closed (resolved)", "conversation reopened (it was closed: resolved)"]
    # (whether a reopen is a new run of the same id or the closing run going on depends on when
    # the message arrives: both continue the one transcript, which is what is asserted)
    deadline = time.monotonic() + 30
    while len(stored(stack, cid)) < len(t["messages"]):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert_numbered_once(t, stored(stack, cid))


def messenger_event(sender: str, text: str) -> bytes:
    now = int(time.time() * 1000)
    return json.dumps({"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": [
        {"sender": {"id": sender}, "recipient": {"id": PAGE_ID}, "timestamp": now,
         "message": {"mid": f"m_{uuid.uuid4().hex}", "text": text}}]}]}).encode()


def send_webhook(s, sender: str, text: str) -> None:
    body = messenger_event(sender, text)
    sig = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = httpx.post(f"{s['api']}/webhooks/{s['tenant']}/meta", content=body, timeout=15,
                   headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig})
    assert r.status_code == 200, r.text


def wait_sent(s, count: int, timeout: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(s["meta"].sent()) < count:
        assert time.monotonic() < deadline, s["meta"].calls
        time.sleep(0.2)
    return [m["message"]["text"] for m in s["meta"].sent()]


def test_replies_after_a_reopen_reach_the_customer(stack):
    """The bug this guards: a reopened thread numbered its messages from 1 again, so its replies
    had the idempotency keys of the first session's and the channel skipped them as sent."""
    s, sender = stack, "24680135790"
    r = httpx.put(f"{s['api']}/v1/channels/messenger", headers=s["headers"], timeout=15, json={
        "settings": {"page_id": PAGE_ID}, "secrets": {"verify_token": "v", "app_secret": APP_SECRET,
                                                      "page_access_token": PAGE_TOKEN}})
    assert r.status_code == 200, r.text
    send_webhook(s, sender, "I want to talk to a person")
    assert wait_sent(s, 1) == [HANDOFF_TEXT]
    wait_transcript(s, "messenger", sender, lambda t: t["status"] == "handed_off")
    close(s, "messenger", sender)
    wait_transcript(s, "messenger", sender, lambda t: t["status"] == "closed")

    send_webhook(s, sender, "I want to talk to a person")  # reopens: the same handoff, sent again
    assert wait_sent(s, 2) == [HANDOFF_TEXT, HANDOFF_TEXT]
    r = httpx.post(f"{s['api']}/v1/inbox/messenger/{sender}/reply", headers=s["headers"], timeout=15,
                   json={"agent": "sam@example.com", "text": "Sam here, how can I help?"})
    assert r.status_code == 200, r.text
    assert wait_sent(s, 3)[2] == "Sam here, how can I help?"

    wait_transcript(s, "messenger", sender, lambda t: t["status"] == "closed")  # idle close this time
    send_webhook(s, sender, "I'd like to speak to an agent")
    assert wait_sent(s, 4) == [HANDOFF_TEXT, HANDOFF_TEXT, "Sam here, how can I help?", HANDOFF_TEXT]

    engine = make_engine(s["settings"].resolved_database_url())
    with session_scope(engine) as session:
        keys = [e.external_id for e in list_events(session, s["tenant"], "messenger", "outbound")]
    engine.dispose()
    assert len(keys) == 4 and len(set(keys)) == 4
    t = wait_transcript(s, "messenger", sender, lambda t: t["status"] == "handed_off")
    cid = f"conversation/{s['tenant']}/messenger/{sender}"
    deadline = time.monotonic() + 30
    while len(stored(s, cid)) < len(t["messages"]):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert_numbered_once(t, stored(s, cid))


def test_a_file_without_text_is_acknowledged_and_an_unanswered_conversation_is_abandoned(stack):
    s = stack
    cid = f"conversation/{s['tenant']}/api/file-1"
    photo = {"content_type": "image/jpeg", "url": "https://media.example.com/MM123/photo.jpg"}
    turn = say(s["api"], s["headers"], "file-1", "", attachments=[photo])
    assert turn["reply"]["text"] == ATTACHMENT_TEXT and turn["status"] == "open"
    t = wait_transcript(s, "api", "file-1", lambda t: t["status"] == "closed")
    assert t["outcome"] == "abandoned"
    assert t["messages"][0]["role"] == "customer" and t["messages"][0]["attachments"] == [photo]
    assert t["messages"][1]["text"] == ATTACHMENT_TEXT
    assert stored_row(s, cid)["outcome"] == "abandoned"


# ---- de-duplication across sessions -----------------------------------------------------------

def test_a_retry_after_the_close_or_a_reopen_gets_its_earlier_reply(stack):
    """Message ids are projected with the customer's messages and loaded with the thread's
    history: a client's retry of a message answered before the close is no new message, neither
    on the closed thread (which stays closed) nor after a new message reopened it."""
    api, headers = stack["api"], stack["headers"]
    publish(api, headers, HOURS, "application/yaml")
    cid = f"conversation/{stack['tenant']}/api/dup-1"
    first = say(api, headers, "dup-1", "what are your opening hours?", message_id="r-1")
    assert first["reply"]["text"] == "We are open 9 to 5 on weekdays."
    closed = wait_transcript(stack, "api", "dup-1", lambda t: t["status"] == "closed")
    deadline = time.monotonic() + 60
    while runs_running(stack, cid):  # the session's run has ended: what it knew is in the database
        assert time.monotonic() < deadline
        time.sleep(0.3)

    retried = say(api, headers, "dup-1", "what are your opening hours?", message_id="r-1")
    assert retried["reply"] == first["reply"] and retried["status"] == "closed"
    t = transcript(stack, "api", "dup-1")
    assert t["status"] == "closed" and t["outcome"] == "resolved"
    assert t["messages"] == closed["messages"]  # not reopened, nothing added

    again = say(api, headers, "dup-1", "opening hours again, please", message_id="r-2")
    assert again["status"] == "open"  # a new message reopens it
    retried = say(api, headers, "dup-1", "what are your opening hours?", message_id="r-1")
    assert retried["reply"] == first["reply"] and retried["status"] == "open"
    assert say(api, headers, "dup-1", "opening hours again, please", message_id="r-2") == again
    t = transcript(stack, "api", "dup-1")
    assert [m["text"] for m in t["messages"] if m["role"] == "customer"] == [
        "what are your opening hours?", "opening hours again, please"]
    assert [m.get("message_id") for m in t["messages"] if m["role"] == "customer"] == ["r-1", "r-2"]
    assert [m["text"] for m in t["messages"] if m["text"].startswith("conversation reopened")] == [
        "conversation reopened (it was closed: resolved)"]
    replies = {m["reply_to"]: m["text"] for m in t["messages"] if m.get("reply_to")}
    assert list(replies.values()) == ["We are open 9 to 5 on weekdays."] * 2
    deadline = time.monotonic() + 30
    while len(stored(stack, cid)) < len(t["messages"]):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert_numbered_once(t, stored(stack, cid))


def runs_running(s, cid) -> bool:
    async def look() -> bool:
        client = await Client.connect(s["settings"].temporal_address)
        return any([x.status.name == "RUNNING" async for x in client.list_workflows(f'WorkflowId = "{cid}"')])
    return asyncio.run(look())


# ---- a procedure outliving a person's close ----------------------------------------------------

def click(link: str) -> int:
    with httpx.Client(timeout=20) as browser:
        page = browser.get(link)
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        return browser.post(link, data={"csrf": csrf}).status_code


def configure_messenger(s) -> None:
    r = httpx.put(f"{s['api']}/v1/channels/messenger", headers=s["headers"], timeout=15, json={
        "settings": {"page_id": PAGE_ID}, "secrets": {"verify_token": "v", "app_secret": APP_SECRET,
                                                      "page_access_token": PAGE_TOKEN}})
    assert r.status_code == 200, r.text


def test_a_refund_approved_after_a_person_closed_the_conversation_is_confirmed(stack, mail, shop):
    """A person closes the conversation while the refund waits for the manager: the approval by
    the e-mailed link still refunds, and the confirmation is recorded and reaches the customer."""
    s, sender = stack, "13579024680"
    configure_messenger(s)
    publish(s["api"], s["headers"], REFUND, "application/yaml")
    send_webhook(s, sender, "I want a refund")
    assert wait_sent(s, 1)[-1] == "I can help with that. What is your order number?"
    send_webhook(s, sender, "1001")
    assert wait_sent(s, 2)[-1] == "To make sure it's your order, what is the e-mail address on it?"
    send_webhook(s, sender, "alice@example.com")
    assert "need a manager's approval" in wait_sent(s, 3)[-1]
    close(s, "messenger", sender)
    wait_transcript(s, "messenger", sender, lambda t: t["status"] == "closed")
    assert shop[1].stats()["refunds"] == []

    links = approval_links(text_body(mail.wait_for(lambda m: m["To"] == "manager@example.com")[0]))
    assert click(links["approve"]) == 200
    confirmation = "Done! Your refund of 150.00 USD for order 1001 is on its way."
    assert wait_sent(s, 4)[-1] == confirmation  # delivered through the channel
    t = wait_transcript(s, "messenger", sender, lambda t: any(m["text"] == confirmation for m in t["messages"]))
    assert t["status"] == "closed" and t["outcome"] == "resolved"  # closed it stays, the AI quiet
    texts = [m["text"] for m in t["messages"]]
    assert texts.index("conversation closed (resolved)") < texts.index(confirmation)
    assert len(shop[1].stats()["refunds"]) == 1
    cid = f"conversation/{s['tenant']}/messenger/{sender}"
    deadline = time.monotonic() + 30
    while runs_running(s, cid) or len(stored(s, cid)) < len(t["messages"]):  # the run ends once it is done
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert_numbered_once(t, stored(s, cid))
    assert stored_row(s, cid)["status"] == "closed"


def test_a_refund_refused_after_the_close_goes_back_to_the_inbox(stack, mail, shop):
    """The manager refuses after a person closed the conversation: the customer is told a colleague
    will follow up, so the thread is handed off again, in the inbox."""
    s = stack
    publish(s["api"], s["headers"], REFUND, "application/yaml")
    say(s["api"], s["headers"], "late-no", "refund please", customer={"email": "alice@example.com"})
    assert "need a manager's approval" in say(s["api"], s["headers"], "late-no", "1001")["reply"]["text"]
    close(s, "api", "late-no")
    wait_transcript(s, "api", "late-no", lambda t: t["status"] == "closed")
    links = approval_links(text_body(mail.wait_for(lambda m: m["To"] == "manager@example.com")[0]))
    assert click(links["reject"]) == 200
    t = wait_transcript(s, "api", "late-no", lambda t: t["status"] == "handed_off")
    texts = [m["text"] for m in t["messages"]]
    after = texts[texts.index("conversation closed (resolved)") + 1:]
    assert after == ["Sorry, your refund wasn't approved. A colleague will follow up with you.",
                     "conversation reopened (it was closed: resolved)", "handed off: refund not approved",
                     HANDOFF_TEXT]
    inbox = httpx.get(f"{s['api']}/v1/inbox", headers=s["headers"], timeout=15).json()["conversations"]
    assert [c["handoff"]["reason"] for c in inbox if c["thread"] == "late-no"] == ["refund not approved"]
    assert shop[1].stats()["refunds"] == []


# ---- the channel's events: a phone call's end -------------------------------------------------

def test_the_end_of_a_call_closes_the_conversation_with_a_note(stack):
    """The `channel_event` the inbound relay sends when a call ends (here signal-with-start, as
    it arrives on a closing or new run too): a note, then the usual close; deferred while a
    procedure runs; left to the person who has the call. Other kinds are only noted."""
    s = stack
    publish(s["api"], s["headers"], HOURS, "application/yaml")
    publish(s["api"], s["headers"], VOUCHER, "application/yaml")
    tenant, settings = s["tenant"], s["settings"]

    async def scenario() -> None:
        client = await Client.connect(settings.temporal_address)

        async def speak(call: str, text: str) -> dict:
            return await send_message(client, settings, tenant, "voice", call, text, {}, f"{call}:{uuid.uuid4().hex}")

        async def event(call: str, body: dict) -> None:
            await _event(settings, tenant, call, body)

        # answered, then the caller hangs up: closed at once, resolved
        assert (await speak("CA1", "what are your opening hours?"))["reply"]["text"] == "We are open 9 to 5 on weekdays."
        await event("CA1", {"kind": "call_ended", "status": "completed", "duration_s": 42})
        # a procedure waits for an answer when the call ends: closed once it finishes
        assert (await speak("CA2", "I have a voucher"))["reply"]["text"] == "What is your voucher code?"
        await event("CA2", {"kind": "call_ended", "status": "completed", "duration_s": 7})
        # a person took the call over: theirs to close; an unknown event is only noted
        await speak("CA3", "hello")
        await client.get_workflow_handle(C.conversation_id(tenant, "voice", "CA3")).signal(
            "agent_action", C.AgentAction("takeover", "phone transfer to +15559990000"))
        await event("CA3", {"kind": "dtmf", "digits": "1"})
        await event("CA3", {"kind": "call_ended", "status": "completed"})

    asyncio.run(scenario())

    def notes(t: dict) -> list[str]:
        return [m["text"] for m in t["messages"] if m["role"] == "system" and not m["text"].startswith("started")]

    t = wait_transcript(s, "voice", "CA1", lambda t: t["status"] == "closed")
    assert t["outcome"] == "resolved" and notes(t) == ["call ended (completed, 42 s)", "conversation closed (resolved)"]
    ended = [m for m in t["messages"] if m["text"].startswith("call ended")][0]
    assert (ended["call_status"], ended["duration_s"]) == ("completed", 42)

    t = wait_transcript(s, "voice", "CA2", lambda t: "call ended (completed, 7 s)" in notes(t))
    assert t["status"] == "open"  # the voucher procedure still waits
    asyncio.run(_speak(settings, tenant, "CA2", "ABCD1234"))
    t = wait_transcript(s, "voice", "CA2", lambda t: t["status"] == "closed")
    assert t["outcome"] == "resolved"
    assert notes(t) == ["call ended (completed, 7 s)", "conversation closed (resolved)"]
    assert [m["text"] for m in t["messages"] if m["role"] == "assistant"][-1] == "Thanks, voucher ABCD1234 is noted."

    t = wait_transcript(s, "voice", "CA3", lambda t: "call ended (completed)" in notes(t))
    assert t["status"] == "handed_off"
    assert notes(t)[-3:] == ["taken over by phone transfer to +15559990000", "channel event ignored: dtmf",
                             "call ended (completed)"]

    # an event for a thread whose run has ended starts a run that notes it and ends, still closed
    cid = C.conversation_id(tenant, "voice", "CA1")
    deadline = time.monotonic() + 60
    while runs_running(s, cid):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    asyncio.run(_event(settings, tenant, "CA1", {"kind": "call_ended", "status": "canceled"}))
    deadline = time.monotonic() + 60
    while stored(s, cid)[-1][2] != "call ended (canceled)":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert [text for _, _, text in stored(s, cid)][-3:] == [
        "call ended (completed, 42 s)", "conversation closed (resolved)", "call ended (canceled)"]
    assert stored_row(s, cid) == {"status": "closed", "outcome": "resolved", "rating": None}


async def _event(settings, tenant: str, call: str, body: dict) -> None:
    client = await Client.connect(settings.temporal_address)
    await client.start_workflow(
        C.WORKFLOW_NAME, C.ConversationInput(tenant_id=tenant, channel="voice", thread=call, idle_timeout_s=IDLE_S,
                                             turn_timeout_s=settings.conversation_turn_s),
        id=C.conversation_id(tenant, "voice", call), task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, start_signal=C.CHANNEL_EVENT, start_signal_args=[body])


async def _speak(settings, tenant: str, call: str, text: str) -> dict:
    client = await Client.connect(settings.temporal_address)
    return await send_message(client, settings, tenant, "voice", call, text, {}, f"{call}:{uuid.uuid4().hex}")

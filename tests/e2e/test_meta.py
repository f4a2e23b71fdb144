"""Messenger and Instagram end to end: the real API receives signed Meta webhooks, the
conversation runs on a worker process, and the reply goes through a loopback Send API."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest

from api.app import create_app
from demo.meta_server import MetaState, create_meta_app
from demo.server import ThreadedServer
from tests_e2e_helpers import WorkerProcess, make_tenant

APP_SECRET = "a3f1c0de5b7e4f2aa9d6e1b2c3d4e5f6"
IG_APP_SECRET = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
PAGE_TOKEN = "EAAGm0PX4ZCpsBAPageTokenMessenger"
IG_TOKEN = "EAAGm0PX4ZCpsBAPageTokenInstagram"
VERIFY = "flywheel-verify-7c1d"
PAGE_ID, IG_ID = "104530012345678", "17841400008460056"
HANDOFF = "I'm connecting you with a person from our team. They will reply here."


@pytest.fixture
def meta(tmp_path, e2e_settings, shop):
    state = MetaState(tokens={PAGE_TOKEN, IG_TOKEN})
    server = ThreadedServer(create_meta_app(state)).start()
    settings = e2e_settings.model_copy(update={"meta_graph_base": server.url + "/v19.0"})
    tenant = make_tenant(settings, shop[0])
    api = ThreadedServer(create_app(settings), port=settings.api_port).start()
    worker = WorkerProcess(settings, tmp_path / "w.log").start()
    for channel, own, secret, token in (("messenger", {"page_id": PAGE_ID}, APP_SECRET, PAGE_TOKEN),
                                        ("instagram", {"account_id": IG_ID}, IG_APP_SECRET, IG_TOKEN)):
        r = httpx.put(f"{api.url}/v1/channels/{channel}", headers=tenant["headers"], timeout=15, json={
            "settings": own, "secrets": {"verify_token": VERIFY, "app_secret": secret, "page_access_token": token}})
        assert r.status_code == 200, r.text
    yield {"api": api.url, "tenant": tenant, "state": state, "hook": f"{api.url}/webhooks/{tenant['id']}/meta"}
    worker.kill()
    api.stop()
    server.stop()


def signed(body: bytes, secret: str = APP_SECRET) -> dict:
    return {"Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def webhook(obj: str, sender: str, text: str, *, mid: str | None = None, echo: bool = False) -> bytes:
    me = PAGE_ID if obj == "page" else IG_ID
    message = {"mid": mid or f"m_{uuid.uuid4().hex}", "text": text}
    if echo:
        message["is_echo"] = True
    frm, to = (me, sender) if echo else (sender, me)
    return json.dumps({"object": obj, "entry": [{"id": me, "time": int(time.time() * 1000), "messaging": [
        {"sender": {"id": frm}, "recipient": {"id": to}, "timestamp": int(time.time() * 1000),
         "message": message}]}]}).encode()


def post(hook: str, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(hook, content=body, headers=headers, timeout=15)


def wait_sent(state: MetaState, count: int, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(state.sent()) >= count:
            return state.sent()
        time.sleep(0.2)
    raise AssertionError(f"expected {count} Send API calls, got {state.calls}")


def inbox(m: dict, channel: str, thread: str) -> httpx.Response:
    return httpx.get(f"{m['api']}/v1/inbox/{channel}/{thread}", headers=m["tenant"]["headers"], timeout=15)


def test_challenge_and_forged_deliveries_change_nothing(meta):
    hook = meta["hook"]
    ok = httpx.get(hook, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                 "hub.challenge": "1158201444"}, timeout=15)
    assert ok.status_code == 200 and ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    for params in ({"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
                   {"hub.mode": "subscribe", "hub.challenge": "1"},
                   {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"}):
        assert httpx.get(hook, params=params, timeout=15).status_code == 403

    before = httpx.get(f"{meta['api']}/v1/conversations", headers=meta["tenant"]["headers"], timeout=15).json()
    body = webhook("page", "6543210987654321", "I want to talk to a person")
    tampered = body.replace(b"talk to a person", b"get a refund now")
    assert post(hook, tampered, signed(body)).status_code == 403
    assert post(hook, body, signed(body, "wrong-secret")).status_code == 403
    assert post(hook, body, {"Content-Type": "application/json"}).status_code == 403
    # Instagram's body signed with Messenger's app secret: not Instagram's signature
    ig = webhook("instagram", "7654321098765432", "I want to talk to a person")
    assert post(hook, ig, signed(ig, APP_SECRET)).status_code == 403
    inbox_none = [inbox(meta, "messenger", "6543210987654321"), inbox(meta, "instagram", "7654321098765432")]
    assert [r.status_code for r in inbox_none] == [404, 404]

    # echoes of our own messages are acknowledged and ignored
    echo = webhook("page", "6543210987654321", "an echo of our reply", echo=True)
    r = post(hook, echo, signed(echo))
    assert r.status_code == 200 and r.text == "EVENT_RECEIVED"
    assert inbox(meta, "messenger", "6543210987654321").status_code == 404
    assert inbox(meta, "messenger", PAGE_ID).status_code == 404
    after = httpx.get(f"{meta['api']}/v1/conversations", headers=meta["tenant"]["headers"], timeout=15).json()
    assert after == before
    assert meta["state"].calls == []


def test_messenger_and_instagram_reply_once_to_the_sender(meta):
    hook, state = meta["hook"], meta["state"]
    body = webhook("page", "6543210987654321", "I want to talk to a person", mid="m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM")
    started = time.monotonic()
    r = post(hook, body, signed(body))
    acked = time.monotonic() - started
    assert r.status_code == 200 and r.text == "EVENT_RECEIVED"
    again = post(hook, body, signed(body))  # Meta re-delivers: same mid
    assert again.status_code == 200 and again.text == "EVENT_RECEIVED"

    [sent] = wait_sent(state, 1)
    print(f"messenger: ack {acked * 1000:.0f} ms, reply sent after {time.monotonic() - started:.1f}s")
    assert sent == {"recipient": {"id": "6543210987654321"}, "messaging_type": "RESPONSE",
                    "message": {"text": HANDOFF}}
    assert state.calls[0]["query"]["access_token"] == PAGE_TOKEN

    ig = webhook("instagram", "7654321098765432", "can I talk to a real person", mid="aWdfZAG1faWQ6MTpJR01l")
    assert post(hook, ig, signed(ig, IG_APP_SECRET)).text == "EVENT_RECEIVED"
    sent = wait_sent(state, 2)
    assert sent[1] == {"recipient": {"id": "7654321098765432"}, "messaging_type": "RESPONSE",
                       "message": {"text": HANDOFF}}
    assert state.calls[1]["query"]["access_token"] == IG_TOKEN
    assert post(hook, ig, signed(ig, IG_APP_SECRET)).text == "EVENT_RECEIVED"

    time.sleep(3)  # any (wrong) second delivery would have happened by now
    assert len(state.sent()) == 2
    for channel, thread in (("messenger", "6543210987654321"), ("instagram", "7654321098765432")):
        t = inbox(meta, channel, thread).json()
        assert [m["role"] for m in t["messages"]].count("customer") == 1
        assert t["customer"] == {"name": thread} and t["status"] == "handed_off"
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{meta['api']}/v1/conversations", headers=meta["tenant"]["headers"], timeout=15).json()
        channels = sorted(c["channel"] for c in rows["conversations"])
        if channels == ["instagram", "messenger"] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert channels == ["instagram", "messenger"]


def test_long_replies_are_split_under_the_send_api_limit():
    from channels.meta import message_text, split_text
    text = ("Refunds reach your card within 5 business days. " * 90).strip()
    parts = split_text(text)
    assert len(parts) == 3 and all(0 < len(p) <= 2000 for p in parts)
    assert " ".join(parts) == text
    assert split_text("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]
    cited = message_text({"text": "Within 5 days [1].", "citations": [
        {"article_id": "a1", "title": "Refunds", "url": "https://help.example.com/refunds"}]})
    assert cited == "Within 5 days [1].\n\nSources:\n[1] Refunds https://help.example.com/refunds"

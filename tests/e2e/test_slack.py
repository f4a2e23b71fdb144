"""Slack end to end: the real API receives signed Events API deliveries, the conversation runs on
a worker process, and the reply is posted in the thread at a loopback Slack Web API."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest

from api.app import create_app
from demo.server import ThreadedServer
from demo.slack_server import SlackState, create_slack_app
from tests_e2e_helpers import WorkerProcess, make_tenant

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
HANDOFF = "I'm connecting you with a person from our team. They will reply here."


@pytest.fixture
def slack(tmp_path, e2e_settings, shop):
    state = SlackState(token=BOT_TOKEN)
    server = ThreadedServer(create_slack_app(state)).start()
    settings = e2e_settings.model_copy(update={"slack_api_base": server.url + "/api"})
    tenant = make_tenant(settings, shop[0])
    api = ThreadedServer(create_app(settings), port=settings.api_port).start()
    worker = WorkerProcess(settings, tmp_path / "w.log").start()
    r = httpx.put(f"{api.url}/v1/channels/slack", headers=tenant["headers"], timeout=15, json={
        "settings": {"bot_user_id": state.bot_user_id, "team_id": "T061EG9R6", "api_app_id": "A0PNCHHK2"},
        "secrets": {"signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN}})
    assert r.status_code == 200, r.text
    assert "xoxb" not in r.text and SIGNING_SECRET not in r.text
    yield {"api": api.url, "tenant": tenant, "state": state, "hook": f"{api.url}/webhooks/{tenant['id']}/slack/events",
           "log": tmp_path / "w.log"}
    worker.kill()
    api.stop()
    server.stop()


def signed(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None, **extra: str) -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, **extra}


def event(text: str, *, channel: str = "C0LAN2Q65", ts: str | None = None, thread_ts: str | None = None,
          user: str = "U2147483697", event_id: str | None = None, **fields) -> bytes:
    ts = ts or f"{int(time.time())}.{uuid.uuid4().int % 1_000_000:06d}"
    ev = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
          "channel_type": "channel", "event_ts": ts, **fields}
    if thread_ts:
        ev["thread_ts"] = thread_ts
    return json.dumps({"token": "legacy", "team_id": "T061EG9R6", "api_app_id": "A0PNCHHK2", "type": "event_callback",
                       "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}", "event_time": int(time.time()),
                       "authorizations": [{"team_id": "T061EG9R6", "user_id": "UBOT00001", "is_bot": True}],
                       "event": ev}).encode()


def post(hook: str, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(hook, content=body, headers=headers, timeout=15)


def wait_posted(state: SlackState, count: int, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        posted = state.posted()
        if len(posted) >= count:
            return posted
        time.sleep(0.2)
    raise AssertionError(f"expected {count} Slack posts, got {state.calls}")


def no_conversation(s: dict, thread: str) -> None:
    r = httpx.get(f"{s['api']}/v1/inbox/slack/{thread}", headers=s["tenant"]["headers"], timeout=15)
    assert r.status_code == 404, r.text


def conversations(s: dict) -> list[dict]:
    r = httpx.get(f"{s['api']}/v1/conversations", headers=s["tenant"]["headers"], timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["conversations"]


def test_url_verification_and_forged_requests_change_nothing(slack):
    hook = slack["hook"]
    challenge = json.dumps({"token": "legacy", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                            "type": "url_verification"}).encode()
    r = post(hook, challenge, signed(challenge))
    assert r.status_code == 200 and r.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert post(hook, challenge, {"Content-Type": "application/json"}).status_code == 403

    before = conversations(slack)
    body = event("I want to talk to a person", ts="1712000000.000100")
    wrong_secret = post(hook, body, signed(body, secret="not-the-secret"))
    assert wrong_secret.status_code == 403, wrong_secret.text
    tampered = body.replace(b"talk to a person", b"talk to a robot!")
    assert post(hook, tampered, signed(body)).status_code == 403
    stale = post(hook, body, signed(body, timestamp=int(time.time()) - 330))  # well outside: the window itself is unit-tested
    assert stale.status_code == 403, stale.text
    future = post(hook, body, signed(body, timestamp=int(time.time()) + 330))
    assert future.status_code == 403
    bad_ts = post(hook, body, {**signed(body), "X-Slack-Request-Timestamp": "yesterday"})
    assert bad_ts.status_code == 403
    no_conversation(slack, "C0LAN2Q65-1712000000.000100")

    # bots (our own replies included), edits and joins are acknowledged and ignored
    for ignored in (event("beep", ts="1712000000.000200", bot_id="B0001", subtype="bot_message"),
                    event("my own reply", ts="1712000000.000300", user="UBOT00001"),
                    event("edited", ts="1712000000.000400", subtype="message_changed"),
                    event("joined", ts="1712000000.000500", subtype="channel_join")):
        r = post(hook, ignored, signed(ignored))
        assert r.status_code == 200 and "ignored" in r.json(), r.text
    for ts in ("000200", "000300", "000400", "000500"):
        no_conversation(slack, f"C0LAN2Q65-1712000000.{ts}")

    # an unknown tenant gets the forged request's answer (the webhooks do not tell who exists)
    other = httpx.post(hook.replace(slack["tenant"]["id"], "t_nobody"), content=body, headers=signed(body), timeout=15)
    assert other.status_code == 403 and other.json() == wrong_secret.json()
    assert conversations(slack) == before
    assert slack["state"].calls == []


def test_message_gets_one_reply_in_its_thread_despite_retries(slack):
    hook, state = slack["hook"], slack["state"]
    body = event("I want to talk to a person", ts="1712000001.000100", event_id="Ev0PV52K21")
    started = time.monotonic()
    r = post(hook, body, signed(body))
    acked = time.monotonic() - started
    assert r.status_code == 200, r.text
    # Slack retries the same event (its ack timed out): acknowledged, nothing new
    for n in (1, 2):
        retry = post(hook, body, signed(body, **{"X-Slack-Retry-Num": str(n), "X-Slack-Retry-Reason": "http_timeout"}))
        assert retry.status_code == 200 and retry.json().get("duplicate") is True, retry.text

    posted = wait_posted(state, 1)
    print(f"slack: ack {acked * 1000:.0f} ms, reply posted after {time.monotonic() - started:.1f}s")
    assert posted == [{"channel": "C0LAN2Q65", "thread_ts": "1712000001.000100", "text": HANDOFF}]
    assert state.calls[0]["headers"]["authorization"] == f"Bearer {BOT_TOKEN}"

    # a reply inside the thread goes to the same conversation and the same thread
    reply = event("hello again, anyone?", ts="1712000002.000200", thread_ts="1712000001.000100")
    assert post(hook, reply, signed(reply)).status_code == 200
    time.sleep(3)  # let any (wrong) extra delivery happen
    posted = state.posted()
    assert posted[0] == {"channel": "C0LAN2Q65", "thread_ts": "1712000001.000100", "text": HANDOFF}
    assert all(p["thread_ts"] == "1712000001.000100" for p in posted)
    assert len([p for p in posted if p["text"] == HANDOFF]) == 1

    t = httpx.get(f"{slack['api']}/v1/inbox/slack/C0LAN2Q65-1712000001.000100",
                  headers=slack["tenant"]["headers"], timeout=15).json()
    customer_texts = [m["text"] for m in t["messages"] if m["role"] == "customer"]
    assert customer_texts == ["I want to talk to a person", "hello again, anyone?"]
    assert t["customer"]["name"] == "U2147483697"
    deadline = time.monotonic() + 30
    while not [c for c in conversations(slack) if c["thread"] == "C0LAN2Q65-1712000001.000100"]:
        assert time.monotonic() < deadline, "conversation was not projected"
        time.sleep(0.3)
    [row] = [c for c in conversations(slack) if c["thread"] == "C0LAN2Q65-1712000001.000100"]
    assert row["channel"] == "slack" and row["status"] == "handed_off"


def test_ratelimited_post_is_retried_and_arrives_once(slack):
    hook, state = slack["hook"], slack["state"]
    state.fail_next, state.fail_times = "ratelimited", 1
    started = time.monotonic()
    body = event("can I talk to a real person please", channel="D024BE91L", ts="1712000003.000300",
                 channel_type="im")
    assert post(hook, body, signed(body)).status_code == 200
    posted = wait_posted(state, 1)
    elapsed = time.monotonic() - started
    assert [c["response"].get("error") for c in state.calls] == ["ratelimited", None]
    assert posted == [{"channel": "D024BE91L", "thread_ts": "1712000003.000300", "text": HANDOFF}]
    time.sleep(2)
    assert len(state.posted()) == 1
    print(f"ratelimited reply delivered after {elapsed:.1f}s")


def test_signature_matches_slacks_documented_example():
    from channels.slack import signature, thread_target
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZR"
            b"skXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    assert signature("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body) == \
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert thread_target("C0LAN2Q65-1712000001.000100") == ("C0LAN2Q65", "1712000001.000100")
    with pytest.raises(ValueError):
        thread_target("not-a-slack-thread")

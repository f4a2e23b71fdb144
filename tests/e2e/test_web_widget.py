"""The web messenger end to end: the widget embedded on a page of ANOTHER origin (a loopback
page server), driven in Debian's chromium by Playwright, against the real API, Temporal and a
worker process; plus the public endpoints over HTTP (unknown keys, CORS, the event stream,
replays, what the public transcript hides)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from channels.outbound import deliver
from channels.web import Buckets, public_message
from demo.server import ThreadedServer

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
HANDOFF_TEXT = "I'm connecting you with a person from our team. They will reply here."
ARTICLE = {"title": "Gift wrapping", "url": "https://help.acme.example/gift-wrapping",
           "body": "## Gift wrapping\nEvery order can be gift wrapped for 3 euros. Choose gift wrapping "
                   "at checkout and we add a handwritten card."}
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


@pytest.fixture
def web(api, worker, tenant):
    """The API + worker, the tenant's web channel allowing the page server's origin, and the page
    server (another port: another origin) serving a shop page that embeds the snippet."""
    html: dict[str, str] = {}
    page_app = FastAPI()

    @page_app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return html["page"]

    page = ThreadedServer(page_app).start()
    r = httpx.put(f"{api}/v1/channels/web", headers=tenant["headers"], timeout=15, json={"settings": {
        "allowed_origins": [page.url], "title": "Acme help", "greeting": "Hello from Acme!"}})
    assert r.status_code == 200, r.text
    key = r.json()["settings"]["public_key"]
    assert key.startswith("pk_") and len(key) >= 19
    html["page"] = (f"<!doctype html><html><head><title>Acme shop</title></head><body><h1>Acme shop</h1>"
                    f"<p>Our products.</p><script src=\"{api}/widget.js\" data-key=\"{key}\" async></script>"
                    f"</body></html>")
    yield SimpleNamespace(api=api, key=key, page=page.url, headers=tenant["headers"], tenant=tenant["id"],
                          public=f"{api}/public/v1/{key}")
    page.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def add_article(web, **fields) -> dict:
    r = httpx.post(f"{web.api}/v1/knowledge/articles", headers=web.headers, json=fields, timeout=180)
    assert r.status_code == 201, r.text
    return r.json()


def conversations(web) -> list[dict]:
    r = httpx.get(f"{web.api}/v1/conversations", headers=web.headers, timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["conversations"]


def visitor_of(page, key: str) -> str:
    return page.evaluate(f"localStorage.getItem('flywheel:{key}:visitor')")


def open_widget(page, web) -> None:
    page.goto(web.page)
    page.locator(".fw-bubble").click()
    page.locator(".fw-panel").wait_for(state="visible")


def say(page, text: str) -> None:
    page.locator(".fw-input").fill(text)
    page.locator(".fw-send").click()


# ---- in the browser --------------------------------------------------------------------------

def test_widget_answers_with_citation_resumes_hands_off_and_shows_agent_reply_live(web, browser):
    add_article(web, **ARTICLE)
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_widget(page, web)
    assert page.locator(".fw-title").text_content() == "Acme help"
    assert page.locator(".fw-greeting").text_content() == "Hello from Acme!"

    started = time.monotonic()
    say(page, "Can you gift wrap my order?")
    page.locator(".fw-typing").wait_for(state="visible", timeout=5000)  # while the turn runs
    answer = page.locator(".fw-assistant[data-seq]").first
    answer.wait_for(timeout=90_000)
    turn_s = time.monotonic() - started
    assert "gift wrapped for 3 euros" in answer.locator(".fw-text").text_content()
    link = answer.locator("a.fw-cite")
    assert link.text_content() == "Gift wrapping"
    assert link.get_attribute("href") == ARTICLE["url"]
    assert link.get_attribute("target") == "_blank" and "noopener" in link.get_attribute("rel")
    assert page.locator(".fw-typing").is_hidden()
    assert page.locator(".fw-customer[data-seq]").first.text_content() == "Can you gift wrap my order?"
    visitor = visitor_of(page, web.key)
    assert visitor and visitor.startswith("v_") and len(visitor) == 34

    # a reload resumes the same conversation (visitor id in localStorage, panel stays open)
    page.reload()
    page.locator(".fw-assistant[data-seq]").first.wait_for(timeout=15_000)
    assert visitor_of(page, web.key) == visitor
    assert page.locator(".fw-customer[data-seq]").count() == 1
    assert "gift wrapped" in page.locator(".fw-assistant[data-seq]").first.text_content()

    # "Talk to a person" hands off
    page.locator(".fw-person").click()
    page.locator(".fw-assistant", has_text=HANDOFF_TEXT).wait_for(timeout=60_000)
    assert page.locator(".fw-subtitle").text_content() == "A person from our team will reply here"
    assert page.locator(".fw-person").is_hidden()
    assert page.locator(".fw-customer[data-seq]", has_text="I'd like to talk to a person").count() == 1

    # an agent's reply from the inbox appears without a reload (Server-Sent Events)
    page.evaluate("window.__same_page = 42")
    sent = time.monotonic()
    r = httpx.post(f"{web.api}/v1/inbox/web/{visitor}/reply", headers=web.headers, timeout=15,
                   json={"agent": "dana@acme.example", "text": "Hi, Dana here. Gift wrapping is on its way!"})
    assert r.status_code == 200, r.text
    agent = page.locator(".fw-agent", has_text="Dana here")
    agent.wait_for(timeout=15_000)
    live_s = time.monotonic() - sent
    assert page.evaluate("window.__same_page") == 42  # no reload happened
    assert agent.locator(".fw-who").text_content() == "Support team"
    assert "dana@acme.example" not in page.locator(".fw-messages").text_content()  # agent names stay internal

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-widget.png"))
    assert (ARTIFACTS / "web-widget.png").stat().st_size > 10_000
    assert errors == []

    listed = [c for c in conversations(web) if c["thread"] == visitor]
    assert len(listed) == 1 and listed[0]["channel"] == "web" and listed[0]["status"] == "handed_off"
    print(f"\nweb widget: turn answered in {turn_s:.2f}s; agent reply shown live after {live_s:.2f}s")


def test_html_in_messages_is_shown_as_text_and_unsafe_links_are_not_links(web, browser):
    add_article(web, title="Store hours <b>bold</b>", url="javascript:window.__xss=4",
                body="## Opening hours\nOur store in Lyon is open from 9 to 18 every weekday.")
    page = browser.new_page()
    open_widget(page, web)
    say(page, "When is the Lyon store open?")
    answer = page.locator(".fw-assistant[data-seq]").first
    answer.wait_for(timeout=90_000)
    assert "open from 9 to 18" in answer.text_content()
    assert answer.locator("a").count() == 0  # javascript: is never a link
    assert answer.locator(".fw-cite").text_content() == "Store hours <b>bold</b>"

    say(page, XSS)  # no confident answer: hands off
    page.locator(".fw-assistant", has_text=HANDOFF_TEXT).wait_for(timeout=60_000)
    shown = page.locator(".fw-customer[data-seq]").nth(1)
    assert shown.locator(".fw-text").text_content() == XSS
    assert shown.locator("img, script").count() == 0

    visitor = visitor_of(page, web.key)
    r = httpx.post(f"{web.api}/v1/inbox/web/{visitor}/reply", headers=web.headers, timeout=15,
                   json={"agent": "eve", "text": "<img src=x onerror=\"window.__xss=3\">done"})
    assert r.status_code == 200, r.text
    page.locator(".fw-agent", has_text="done").wait_for(timeout=15_000)
    assert page.locator(".fw-agent .fw-text").text_content() == "<img src=x onerror=\"window.__xss=3\">done"
    page.locator(".fw-cite").click()  # a plain span: nothing runs
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.evaluate("document.querySelectorAll('img').length") == 0


# ---- over HTTP -------------------------------------------------------------------------------

def read_events(response, until, timeout: float = 30) -> list[dict]:
    """Parse an SSE response until `until(events)` holds."""
    events: list[dict] = []
    current: dict = {}
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if line == "":
            if current.get("data") is not None:
                events.append(current)
                if until(events):
                    return events
            current = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                current["data"] = json.loads(value)
            elif name in ("event", "id"):
                current[name] = value
        assert time.monotonic() < deadline, f"no matching event; got {events}"
    raise AssertionError(f"stream ended; got {events}")


def test_public_endpoints_keys_cors_stream_and_replays(web):
    origin = web.page
    visitor = "v_" + "a1" * 16
    base = f"{web.public}/conversations/{visitor}"

    # unknown or malformed key: 404 everywhere, nothing started
    before = conversations(web)
    for bad in ("pk_" + "x" * 22, "nope"):
        b = f"{web.api}/public/v1/{bad}"
        assert httpx.get(f"{b}/config").status_code == 404
        assert httpx.get(f"{b}/conversations/{visitor}").status_code == 404
        assert httpx.get(f"{b}/conversations/{visitor}/events").status_code == 404
        assert httpx.post(f"{b}/conversations/{visitor}/messages", json={"text": "hi"}).status_code == 404
        assert httpx.request("OPTIONS", f"{b}/conversations/{visitor}/messages",
                             headers={"Origin": origin, "Access-Control-Request-Method": "POST"}).status_code == 404

    # CORS: the allowed origin gets its header (preflight too); another origin gets 403 and no header
    ok = httpx.get(f"{web.public}/config", headers={"Origin": origin})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
    assert ok.json() == {"title": "Acme help", "greeting": "Hello from Acme!"}
    pre = httpx.request("OPTIONS", f"{base}/messages", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == origin
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "content-type" in pre.headers["access-control-allow-headers"].lower()
    evil = "http://evil.example"
    for r in (httpx.get(f"{web.public}/config", headers={"Origin": evil}),
              httpx.request("OPTIONS", f"{base}/messages", headers={"Origin": evil,
                                                                    "Access-Control-Request-Method": "POST"}),
              httpx.post(f"{base}/messages", headers={"Origin": evil}, json={"text": "I want a person"}),
              httpx.post(f"{base}/person", headers={"Origin": evil})):
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in httpx.get(f"{web.public}/config").headers  # no Origin
    bad_visitor = httpx.post(f"{web.public}/conversations/short/messages", headers={"Origin": origin},
                             json={"text": "hi"})
    assert bad_visitor.status_code == 422 and bad_visitor.headers["access-control-allow-origin"] == origin
    assert httpx.post(f"{base}/messages", headers={"Origin": origin}, json={"text": ""}).status_code == 422
    assert conversations(web) == before  # nothing was started

    # the event stream shows the turn's messages live; a repeated message id changes nothing
    with httpx.stream("GET", f"{base}/events", headers={"Origin": origin}, timeout=30) as stream:
        assert stream.status_code == 200 and stream.headers["access-control-allow-origin"] == origin
        assert stream.headers["content-type"].startswith("text/event-stream")
        results: list = []

        def post() -> None:
            t0 = time.monotonic()
            results.append(httpx.post(f"{base}/messages", headers={"Origin": origin}, timeout=90,
                                      json={"text": "I want to talk to a person", "message_id": "m-1"}))
            results.append(time.monotonic() - t0)

        sender = threading.Thread(target=post)
        t0 = time.monotonic()
        sender.start()
        events = read_events(stream, lambda ev: any(e["data"].get("text") == HANDOFF_TEXT for e in ev))
        stream_s = time.monotonic() - t0
        sender.join(90)
    turn = results[0]
    assert turn.status_code == 200, turn.text
    body = turn.json()
    assert body["reply"]["text"] == HANDOFF_TEXT and body["status"] == "handed_off"
    assert "conversation_id" not in body and "procedure" not in body
    messages = [e["data"] for e in events if e["event"] == "message"]
    assert [m["role"] for m in messages] == ["customer", "assistant"]
    assert [int(e["id"]) for e in events if e["event"] == "message"] == [m["seq"] for m in messages]

    replay = httpx.post(f"{base}/messages", headers={"Origin": origin}, timeout=90,
                        json={"text": "I want to talk to a person", "message_id": "m-1"})
    assert replay.status_code == 200 and replay.json()["reply"]["text"] == HANDOFF_TEXT
    transcript = httpx.get(base, headers={"Origin": origin}, timeout=15).json()
    assert [m["role"] for m in transcript["messages"]] == ["customer", "assistant"]  # exactly one turn
    assert transcript["status"] == "handed_off"
    # internal notes ("handed off: <reason>") and confidences are not public
    internal = httpx.get(f"{web.api}/v1/inbox/web/{visitor}", headers=web.headers, timeout=15).json()
    assert any(m["role"] == "system" and m["text"].startswith("handed off") for m in internal["messages"])
    assert all(set(m) == {"seq", "role", "text", "citations", "at"} for m in transcript["messages"])

    # Last-Event-ID resumes after what the client saw: only the agent's later reply arrives
    last = transcript["messages"][-1]["seq"]
    with httpx.stream("GET", f"{base}/events", headers={"Origin": origin, "Last-Event-ID": str(last)},
                      timeout=30) as stream:
        t0 = time.monotonic()
        r = httpx.post(f"{web.api}/v1/inbox/web/{visitor}/takeover", headers=web.headers, json={"agent": "dana"})
        assert r.status_code == 200, r.text
        r = httpx.post(f"{web.api}/v1/inbox/web/{visitor}/reply", headers=web.headers,
                       json={"agent": "dana", "text": "Dana here."})
        assert r.status_code == 200, r.text
        events = read_events(stream, lambda ev: any(e["data"].get("role") == "agent" for e in ev))
        agent_s = time.monotonic() - t0
    shown = [e["data"] for e in events if e["event"] == "message"]
    assert [(m["role"], m["text"]) for m in shown] == [
        ("system", "A person from our team joined the conversation."), ("agent", "Dana here.")]
    assert all(m["seq"] > last for m in shown)

    listed = [c for c in conversations(web) if c["thread"] == visitor]
    assert len(listed) == 1 and listed[0]["channel"] == "web"

    # a visitor sending too fast is told to wait (429 + Retry-After, readable by the widget)
    chatty = f"{web.public}/conversations/v_{'c3' * 16}/messages"
    codes = [httpx.post(chatty, headers={"Origin": origin}, json={"text": f"hello {i}"}, timeout=90)
             for i in range(12)]
    limited = [r for r in codes if r.status_code == 429]
    assert [r.status_code for r in codes[:8]] == [200] * 8 and limited, [r.status_code for r in codes]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].headers["access-control-allow-origin"] == origin
    print(f"\nweb SSE: handoff reply streamed after {stream_s:.2f}s (turn {results[1]:.2f}s); "
          f"agent reply streamed after {agent_s:.2f}s")


def test_widget_assets_demo_page_and_key_rotation(web):
    js = httpx.get(f"{web.api}/widget.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text and "attachShadow" in js.text
    assert httpx.get(f"{web.api}/widget.css").headers["content-type"].startswith("text/css")
    demo = httpx.get(f"{web.api}/widget/demo", params={"key": web.key})
    assert demo.status_code == 200
    assert f'<script src="{web.api}/widget.js" data-key="{web.key}" async></script>' in demo.text
    assert httpx.get(f"{web.api}/widget/demo", params={"key": "<script>"}).status_code == 422

    # a later PUT without public_key keeps the key; another tenant cannot take it
    r = httpx.put(f"{web.api}/v1/channels/web", headers=web.headers, json={"settings": {
        "allowed_origins": [web.page + "/"], "title": "Acme"}})
    assert r.status_code == 200 and r.json()["settings"]["public_key"] == web.key
    assert r.json()["settings"]["allowed_origins"] == [web.page]
    bad = httpx.put(f"{web.api}/v1/channels/web", headers=web.headers,
                    json={"settings": {"allowed_origins": ["javascript:alert(1)"]}})
    assert bad.status_code == 422 and "settings.allowed_origins" in bad.json()["message"]
    rotated = httpx.post(f"{web.api}/v1/channels/web/rotate-key", headers=web.headers)
    assert rotated.status_code == 200
    new_key = rotated.json()["settings"]["public_key"]
    assert new_key != web.key and rotated.json()["settings"]["title"] == "Acme"
    assert httpx.get(f"{web.api}/public/v1/{web.key}/config").status_code == 404
    assert httpx.get(f"{web.api}/public/v1/{new_key}/config").json()["title"] == "Acme"


async def test_outbound_adapter_and_public_view_and_rate_buckets():
    sent = await deliver(None, {"tenant_id": "t", "channel": "web", "thread": "v_" + "0" * 32, "customer": {},
                                "message": {"seq": 3, "role": "assistant", "text": "hi", "citations": []},
                                "idempotency_key": "k"})
    assert sent["delivered"] is True
    assert public_message({"seq": 1, "role": "system", "text": "started procedure refund (keyword)"}) is None
    assert public_message({"seq": 2, "role": "assistant", "text": "x", "confidence": 0.9, "citations": [
        {"article_id": "a", "title": "T", "url": "javascript:alert(1)"}]})["citations"] == [{"title": "T", "url": None}]
    buckets = Buckets(3, 0.5)
    assert [buckets.take("v", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("v", now=100.0) == pytest.approx(2.0)
    assert buckets.take("other", now=100.0) == 0.0
    assert buckets.take("v", now=102.1) == 0.0


@pytest.fixture
def capped(e2e_settings, tenant, shop, dev_server):
    """An API whose widget streams are capped at 3 per tenant and 5 per client address, and two
    tenants with a web channel each (the tests' requests all come from 127.0.0.1)."""
    from api.app import create_app
    from tests_e2e_helpers import make_tenant

    settings = e2e_settings.model_copy(update={"web_streams_per_tenant": 3, "web_streams_per_address": 5})
    with ThreadedServer(create_app(settings)) as server:
        keys = []
        for t in (tenant, make_tenant(settings, shop[0])):
            r = httpx.put(f"{server.url}/v1/channels/web", headers=t["headers"], timeout=15,
                          json={"settings": {"allowed_origins": ["https://shop.example"]}})
            assert r.status_code == 200, r.text
            keys.append(r.json()["settings"]["public_key"])
        yield server.url, keys


def test_event_streams_are_capped_per_tenant_and_per_address_and_slots_come_back(capped):
    import contextlib
    import uuid

    api, (key_a, key_b) = capped
    origin = {"Origin": "https://shop.example"}

    def url(key: str) -> str:
        return f"{api}/public/v1/{key}/conversations/v_{uuid.uuid4().hex}/events"

    with httpx.Client(timeout=30) as http, contextlib.ExitStack() as streams:
        def open_stream(key: str):
            return streams.enter_context(http.stream("GET", url(key), headers=origin))

        a = [open_stream(key_a) for _ in range(3)]
        assert [s.status_code for s in a] == [200, 200, 200]
        over = http.get(url(key_a), headers=origin)   # a fresh visitor id does not help
        assert over.status_code == 429 and "for this widget" in over.json()["message"]
        assert int(over.headers["retry-after"]) >= 1 and over.headers["access-control-allow-origin"] == origin["Origin"]
        b = [open_stream(key_b) for _ in range(2)]
        assert [s.status_code for s in b] == [200, 200]
        over = http.get(url(key_b), headers=origin)   # tenant B has room, this address has not
        assert over.status_code == 429 and "from this address" in over.json()["message"]

        a[0].close()  # the visitor leaves: its slot comes back
        deadline = time.monotonic() + 15
        while True:
            with http.stream("GET", url(key_a), headers=origin) as again:
                if again.status_code == 200:
                    break
                assert again.status_code == 429
            assert time.monotonic() < deadline, "the closed stream's slot did not come back"
            time.sleep(0.3)


def test_idle_streams_back_off_their_polling():
    from channels.web import IDLE_POLL_S, MAX_POLL_S, POLL_S, next_poll

    interval, seen = POLL_S, []
    for _ in range(8):
        interval = next_poll(interval, changed=False, closed=False)
        seen.append(interval)
    assert seen[0] == POLL_S * 1.5 and seen == sorted(seen) and seen[-1] == MAX_POLL_S
    assert next_poll(MAX_POLL_S, changed=True, closed=False) == POLL_S
    assert next_poll(POLL_S, changed=True, closed=True) == IDLE_POLL_S

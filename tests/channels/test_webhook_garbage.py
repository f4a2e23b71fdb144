"""Every channel webhook against garbage: random bytes, deep nesting, wrong types in every field
it reads, signed and unsigned. Never a 500, nothing recorded; unsigned -> 403; a body past the
channel's limit -> 413 whether it declares its length or comes chunked (over real HTTP); an
unknown tenant or an unconfigured channel gets the same 403 as a forged request, before its
body is read."""
from __future__ import annotations

import base64
import json
import os

import httpx
import pytest

from api.app import create_app
from channels.body import META_LIMIT, SLACK_LIMIT, TWILIO_LIMIT, WEB_LIMIT
from demo.server import ThreadedServer
from tests.channels.conftest import (
    APP,
    EMAIL_SECRET,
    IG_ID,
    PAGE_ID,
    PUBLIC_URL,
    TEAM,
    meta_headers,
    new_tenant,
    slack_headers,
    sms_form,
    twilio_headers,
)

JUNK = [
    os.urandom(2048), b"\xff\xfe\x00garbage", b"", b"   \n", b"null", b"[]", b'"just a string"', b"5", b"true",
    b"{" * 5000, b"[" * 100_000, b'{"a":' * 50_000, b"[" * 50_000 + b"]" * 50_000, b'{"a": 1', b'{"\\ud800": "\\udfff"}',
    b'{"object": "page", "entry": "\x00"}',
]


def meta_junk() -> list[bytes]:
    page = {"object": "page"}
    shapes = [
        {"object": ["page"]}, {"object": {"page": 1}}, {"object": 5}, {"entry": 5}, {**page, "entry": 5},
        {**page, "entry": [5, "x", None, []]}, {**page, "entry": [{"messaging": 5}]},
        {**page, "entry": [{"id": PAGE_ID, "messaging": [5, "x", None]}]},
        {**page, "entry": [{"id": PAGE_ID, "messaging": [{"sender": "x", "recipient": {"id": PAGE_ID},
                                                          "message": {"mid": "m1", "text": "hi"}}]}]},
        {**page, "entry": [{"id": PAGE_ID, "messaging": [{"sender": {"id": ["x"]}, "recipient": {"id": PAGE_ID},
                                                          "message": {"mid": {"a": 1}, "text": 5}}]}]},
        {**page, "entry": [{"id": PAGE_ID, "messaging": [{"sender": {"id": "123"}, "recipient": {"id": PAGE_ID},
                                                          "message": "hi"}]}]},
        {**page, "entry": [{"id": PAGE_ID, "messaging": [{"sender": {"id": "123"}, "recipient": {"id": PAGE_ID},
                                                          "message": {"mid": "m" * 5000, "text": "hi"}}]}]},
        {**page, "entry": [{"id": PAGE_ID, "messaging": [{"sender": {"id": "123"}, "recipient": {"id": PAGE_ID},
                                                          "message": {"mid": "m\x00", "text": "hi"}}]}]},
        {**page, "entry": [{"id": PAGE_ID, "messaging": [{"sender": {"id": "12 3"}, "recipient": {"id": PAGE_ID},
                                                          "message": {"mid": "m2", "attachments": 5}}]}]},
        {**page, "entry": [{"id": PAGE_ID, "messaging": [{"sender": {"id": "123"}, "recipient": {"id": PAGE_ID},
                                                          "message": {"mid": "m3", "attachments": [5, {"payload": 5},
                                                                      {"payload": {"url": ["x"]}}]}}]}]},
        {"object": "instagram", "entry": [{"id": True, "messaging": {"a": 1}}]},
    ]
    return [json.dumps(s).encode() for s in shapes]


def slack_junk() -> list[bytes]:
    base = {"type": "event_callback", "team_id": TEAM, "api_app_id": APP, "event_id": "Ev1"}
    ev = {"type": "message", "user": "U1", "text": "hi", "channel": "C1", "ts": "1.1"}
    shapes = [
        {"type": ["event_callback"]}, {"type": "url_verification", "challenge": {"a": 1}},
        {"type": "url_verification", "challenge": "x" * 5000}, {**base, "event": 5}, {**base, "event": "x"},
        {**base, "authorizations": 5, "event": ev}, {**base, "authorizations": [5, "x", {"is_bot": "yes"}], "event": ev},
        {**base, "event": {**ev, "user": {"id": 1}, "text": ["hi"], "channel": 5, "ts": 1.5, "thread_ts": [1]}},
        {**base, "event": {**ev, "subtype": "file_share", "files": 5}},
        {**base, "event": {**ev, "subtype": "file_share", "text": "", "files": [5, {"url_private": 5}]}},
        {**base, "event": {**ev, "bot_id": None, "subtype": ["x"]}},
        {**base, "event_id": {"a": 1}, "event": {**ev, "ts": "1" * 40}},
        {**base, "team_id": ["T061EG9R6"], "event": ev}, {**base, "api_app_id": None, "event": ev},
    ]
    return [json.dumps(s).encode() for s in shapes]


def twilio_junk() -> list[dict]:
    return [
        {}, {"MessageSid": ""}, {"MessageSid": "SM" + "x" * 100}, {"MessageSid": "SM\x001"},
        sms_form(sender="not a number"), sms_form(sender=""), sms_form(body="", NumMedia="999999999999"),
        sms_form(body="", NumMedia="-1"), sms_form(body="", NumMedia="3", MediaUrl0="javascript:x",
                                                   MediaContentType0="\x00"),
        sms_form(body="\x00" * 100), sms_form(body="", ProfileName="\x00" * 300),
        {"CallSid": "", "CallStatus": "completed"}, {"CallSid": "CA1", "CallStatus": "!!"},
        {"CallSid": "CA" + "1" * 80, "CallStatus": "completed", "CallDuration": "9" * 50},
        {"MessageSid": "SM1", "MessageStatus": "x" * 100}, {"CallSid": "CA bad", "SpeechResult": "hi"},
    ]


def post(client, path: str, body: bytes, headers: dict | None = None):
    return client.post(path, content=body, headers=headers or {})


def check(r, allowed=range(400, 500)) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert r.status_code in allowed or r.status_code in (200, 204), (r.status_code, r.text[:300])
    if r.headers.get("content-type", "").startswith("application/json"):
        assert "error" in r.json() or r.status_code == 200


def test_slack_and_meta_garbage_signed_and_unsigned(client, tenant, store):
    slack, meta = f"/webhooks/{tenant.id}/slack/events", f"/webhooks/{tenant.id}/meta"
    for body in JUNK + slack_junk():
        r = post(client, slack, body)
        assert r.status_code == 403, (body[:40], r.status_code, r.text[:200])
    for body in JUNK + meta_junk():
        r = post(client, meta, body, {"Content-Type": "application/json"})
        assert r.status_code == 403, (body[:40], r.status_code, r.text[:200])
    assert store.snapshot() == ([], [])  # unsigned: nothing recorded
    # signed: wrong-typed fields read as absent (a message may still be accepted), never a 500
    for body in JUNK + slack_junk():
        check(post(client, slack, body, slack_headers(body)))
    for body in JUNK + meta_junk():
        check(post(client, meta, body, meta_headers(body)))
        check(post(client, meta, body, meta_headers(body, "meta-app-secret-0123456789abcdef-ig")))
    for params in ({"hub.mode": ["x"]}, {"hub.verify_token": "\x00" * 10}, {"hub.challenge": "x" * 10_000}):
        check(client.get(meta, params=params))


def test_signed_deep_nesting_is_400_not_500(client, tenant, store):
    for path, sign in ((f"/webhooks/{tenant.id}/slack/events", slack_headers),
                       (f"/webhooks/{tenant.id}/meta", meta_headers)):
        for body in (b"[" * 100_000, b'{"a":' * 50_000):
            r = post(client, path, body, sign(body))
            assert r.status_code == 400 and r.json()["error"] == "bad_request", (path, r.status_code, r.text[:200])
    assert store.outbox() == []


def test_twilio_garbage_signed_and_unsigned(client, tenant, store):
    for name in ("sms", "whatsapp", "status", "voice", "voice/turn", "voice/silence"):
        path = f"/webhooks/{tenant.id}/twilio/{name}"
        for body in JUNK:
            r = post(client, path, body, {"Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == (413 if len(body) > TWILIO_LIMIT else 403), (name, body[:40], r.status_code)
        for params in twilio_junk():
            check(client.post(path, data=params, headers=twilio_headers(PUBLIC_URL + path, params)))
            r = client.post(path, data=params)
            assert r.status_code == 403, (name, params, r.status_code)
        for query in ("n=abc", "n=0", "tries=-1", "waits=999999", "pending=" + "x" * 2000):
            check(client.post(f"{path}?{query}", data={}))
    assert store.snapshot() == ([], [])


def test_email_webhook_garbage_with_valid_credentials(client, tenant, store):
    path = f"/webhooks/{tenant.id}/email/inbound"
    auth = {"Authorization": "Basic " + base64.b64encode(f"x:{EMAIL_SECRET}".encode()).decode()}
    kinds = ["multipart/form-data; boundary=zz", "multipart/form-data", "application/x-www-form-urlencoded",
             "application/json", "text/plain", "multipart/form-data; boundary=" + "b" * 5000]
    for body in JUNK:
        for kind in kinds:
            r = post(client, path, body, {"Content-Type": kind})
            assert r.status_code == 403, (kind, body[:40], r.status_code)
            check(post(client, path, body, {**auth, "Content-Type": kind}))
    charsets = b'--zz\r\nContent-Disposition: form-data; name="charsets"\r\n\r\n' + b"[" * 100_000 + b"\r\n--zz--\r\n"
    check(post(client, path, charsets, {**auth, "Content-Type": "multipart/form-data; boundary=zz"}))
    assert store.snapshot() == ([], [])
    for fields in ({"email": "\x00" * 100}, {"from": "\x00", "text": "\x00"}, {"headers": "Message-ID: <\x00@x>"},
                   {"from": "a@b.c", "subject": "[" * 10_000}):
        check(client.post(path, data=fields, headers=auth))
    assert all("\x00" not in r.text and "\x00" not in r.message_id for r in store.outbox())


def test_web_message_garbage(client, tenant, store):
    key = client.get("/v1/channels/web", headers=tenant.headers).json()["settings"]["public_key"]
    for i, body in enumerate(JUNK + [b'{"text": ["hi"]}', b'{"text": "hi", "message_id": {"a": 1}}',
                                     b'{"text": "\\u0000\\u0000"}', b'{"text": "hi", "extra": 1}']):
        visitor = f"v_{i:032d}"
        r = post(client, f"/public/v1/{key}/conversations/{visitor}/messages", body,
                 {"Content-Type": "application/json"})
        assert r.status_code in (413, 422), (body[:40], r.status_code, r.text[:200])
    assert store.outbox() == []


def forged_requests(tenant_id: str) -> dict[str, list]:
    """Requests nobody could sign, per webhook: none, a wrong and an oversized one."""
    big = b"x" * (META_LIMIT + 10)
    slack, meta = f"/webhooks/{tenant_id}/slack/events", f"/webhooks/{tenant_id}/meta"
    email = f"/webhooks/{tenant_id}/email/inbound"
    body = b'{"type": "event_callback"}'
    out = {"slack": [("post", slack, body, {}), ("post", slack, body, slack_headers(body, "guess")),
                     ("post", slack, big, slack_headers(big, "guess"))],
           "meta": [("post", meta, body, {}), ("post", meta, body, meta_headers(body, "guess")),
                    ("post", meta, big, meta_headers(big, "guess")),
                    ("get", f"{meta}?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1", None, {})],
           "email": [("post", email, b"text=hi", {"Content-Type": "application/x-www-form-urlencoded"}),
                     ("post", email, b"text=hi", {"Authorization": "Basic " + base64.b64encode(b"x:guess").decode()}),
                     ("post", email, big, {"Authorization": "Basic " + base64.b64encode(b"x:guess").decode()})]}
    for name in ("sms", "whatsapp", "status", "voice", "voice/turn", "voice/silence"):
        path = f"/webhooks/{tenant_id}/twilio/{name}"
        form = b"MessageSid=SM1&CallSid=CA1&From=%2B15551230001&Body=hi"
        kind = {"Content-Type": "application/x-www-form-urlencoded"}
        out[name] = [("post", path, form, kind), ("post", path, form, {**kind, "X-Twilio-Signature": "guess"}),
                     ("post", path, big, {**kind, "X-Twilio-Signature": "guess"})]
    return out


def test_unknown_tenants_and_unconfigured_channels_are_answered_exactly_like_forged_requests(client, tenant, store):
    """No tenant enumeration: for the same forged request (unsigned, wrongly signed, oversized)
    an unknown tenant, a tenant without the channel and a tenant with it get the same status and
    the same body."""
    bare = new_tenant(client, "Bare")  # exists, no channel configured

    def answers(tenant_id: str) -> dict[str, list]:
        out = {}
        for name, requests in forged_requests(tenant_id).items():
            out[name] = []
            for method, path, body, headers in requests:
                r = client.request(method, path, content=body, headers=headers)
                out[name].append((r.status_code, r.text))
        return out

    configured = answers(tenant.id)
    assert answers("t-nobody") == configured
    assert answers(bare.id) == configured
    for name, got in configured.items():
        assert [code for code, _ in got][:2] == [403, 403] or name == "meta", (name, got)
        assert all(code in (403, 413) for code, _ in got), (name, got)
    assert [code for code, _ in configured["slack"]] == [403, 403, 413]
    assert store.outbox() == [] and [e for e in store.events()] == []


@pytest.fixture
def server(settings):
    """The API over real HTTP (uvicorn): chunked bodies arrive as a stream."""
    with ThreadedServer(create_app(settings.model_copy(update={"email_max_bytes": 100_000}))) as s:
        yield s.url


def chunks(size: int, piece: int = 16_384):
    sent = 0
    while sent < size:
        yield b"a" * min(piece, size - sent)
        sent += piece


def test_bodies_past_the_limit_are_413_declared_or_chunked(server, client, tenant, store):
    key = client.get("/v1/channels/web", headers=tenant.headers).json()["settings"]["public_key"]
    auth = {"Authorization": "Basic " + base64.b64encode(f"x:{EMAIL_SECRET}".encode()).decode()}
    cases = [(f"/webhooks/{tenant.id}/slack/events", SLACK_LIMIT, {"Content-Type": "application/json"}),
             (f"/webhooks/{tenant.id}/meta", META_LIMIT, {"Content-Type": "application/json"}),
             (f"/webhooks/{tenant.id}/twilio/sms", TWILIO_LIMIT, {}),
             (f"/webhooks/{tenant.id}/twilio/status", TWILIO_LIMIT, {}),
             (f"/webhooks/{tenant.id}/twilio/voice/turn", TWILIO_LIMIT, {}),
             (f"/public/v1/{key}/conversations/v_{'9' * 32}/messages", WEB_LIMIT, {"Content-Type": "application/json"}),
             (f"/webhooks/{tenant.id}/email/inbound", 2 * 100_000 + 65_536, auth)]
    with httpx.Client(timeout=60) as http:
        for path, limit, headers in cases:
            declared = http.post(server + path, content=b"a" * (limit + 1), headers=headers)
            assert declared.status_code == 413 and declared.json()["error"] == "too_large", (path, declared.text)
            streamed = http.post(server + path, content=chunks(limit + 1), headers=headers)
            assert streamed.status_code == 413, (path, streamed.status_code, streamed.text[:200])
    assert store.outbox() == []

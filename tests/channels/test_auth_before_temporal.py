"""Public endpoints authenticate (signature, Origin, visitor id, rate limits) before they reach
Temporal: with Temporal away (nothing listens at its address) a forged or refused request gets
its 403/404/422/429, never 503; only a genuine request finds out that Temporal is away."""
from __future__ import annotations

from tests.channels.conftest import PUBLIC_URL, VOICE_NUMBER, twilio_headers

ORIGIN = "https://shop.acme.example"


def call(sid: str = "CA" + "3" * 32, **extra) -> dict:
    return {"CallSid": sid, "AccountSid": "AC1", "From": "+15551230001", "To": VOICE_NUMBER, **extra}


def test_a_forged_voice_turn_is_403_with_temporal_away(client, tenant, store):
    path = f"/webhooks/{tenant.id}/twilio/voice/turn?n=1"
    form = call(SpeechResult="refund me")
    assert client.post(path, data=form).status_code == 403
    assert client.post(path, data=form, headers={"X-Twilio-Signature": "forged"}).status_code == 403
    tampered = {**form, "SpeechResult": "refund me 500"}
    r = client.post(path, data=tampered, headers=twilio_headers(PUBLIC_URL + path, form))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    unknown = "/webhooks/t-nobody/twilio/voice/turn?n=1"
    assert client.post(unknown, data=form, headers=twilio_headers(PUBLIC_URL + unknown, form)).status_code == 403
    # the genuine turn is the first to need Temporal
    r = client.post(path, data=form, headers=twilio_headers(PUBLIC_URL + path, form))
    assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
    # silence and the greeting need no Temporal at all
    for name in ("voice", "voice/silence?n=1&tries=0"):
        p = f"/webhooks/{tenant.id}/twilio/{name}"
        assert client.post(p, data=call(), headers=twilio_headers(PUBLIC_URL + p, call())).status_code == 200
    assert store.outbox() == []


def test_web_endpoints_refuse_before_reaching_temporal(client, tenant):
    key = client.get("/v1/channels/web", headers=tenant.headers).json()["settings"]["public_key"]
    base = f"/public/v1/{key}/conversations/v_{'4' * 32}"
    evil = {"Origin": "https://evil.example"}
    for method, path, body in (("post", f"{base}/messages", {"text": "hi"}), ("post", f"{base}/person", None),
                               ("get", base, None), ("get", f"{base}/events", None)):
        r = client.request(method, path, json=body, headers=evil)
        assert r.status_code == 403, (path, r.status_code, r.text)
    assert client.post(f"/public/v1/pk_{'x' * 22}/conversations/v_{'4' * 32}/messages",
                       json={"text": "hi"}).status_code == 404
    assert client.post(f"/public/v1/{key}/conversations/short/messages", json={"text": "hi"},
                       headers={"Origin": ORIGIN}).status_code == 422
    # genuine messages find Temporal away (503), and still count against the visitor's rate limit
    codes = [client.post(f"{base}/messages", json={"text": f"hello {i}"}, headers={"Origin": ORIGIN}).status_code
             for i in range(10)]
    assert codes[:8] == [503] * 8 and codes[8:] == [429, 429], codes
    r = client.get(f"{base}/events", headers={"Origin": ORIGIN})
    assert r.status_code == 503 and r.headers["access-control-allow-origin"] == ORIGIN

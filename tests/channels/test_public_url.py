"""Behind a proxy: the API is reached at its local address while Twilio signs the URL it knows,
`settings.public_url` (here https://support.acme.example/fw, a proxy that strips the /fw
prefix). A request signed over the public URL is accepted; the same request signed over the
local URL the API really serves is refused; the voice TwiML links back through the public URL."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import pytest

from api.app import create_app
from demo.server import ThreadedServer
from tests.channels.conftest import PUBLIC_URL, VOICE_NUMBER, sms_form, twilio_headers


@pytest.fixture
def local(settings, tenant):
    with ThreadedServer(create_app(settings)) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url != PUBLIC_URL
        yield server.url


def test_signatures_are_checked_over_the_public_url_not_the_local_one(local, tenant, store):
    path = f"/webhooks/{tenant.id}/twilio/sms"
    form = sms_form(body="signed over the local URL")
    r = httpx.post(local + path, data=form, headers=twilio_headers(local + path, form), timeout=30)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert store.outbox() == []

    form = sms_form(body="signed over the public URL")
    r = httpx.post(local + path, data=form, headers=twilio_headers(PUBLIC_URL + path, form), timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml"), r.text
    assert [row.text for row in store.outbox()] == ["signed over the public URL"]

    # a query string is part of what Twilio signs, on the public URL too
    voice = f"/webhooks/{tenant.id}/twilio/voice/silence?n=3&tries=0"
    call = {"CallSid": "CA" + "5" * 32, "From": "+15551230001", "To": VOICE_NUMBER}
    assert httpx.post(local + voice, data=call, headers=twilio_headers(local + voice, call),
                      timeout=30).status_code == 403
    r = httpx.post(local + voice, data=call, headers=twilio_headers(PUBLIC_URL + voice, call), timeout=30)
    assert r.status_code == 200, r.text
    doc = ET.fromstring(r.text)
    assert doc.find("Gather").get("action") == f"{PUBLIC_URL}/webhooks/{tenant.id}/twilio/voice/turn?n=3"
    assert doc.find("Redirect").text.startswith(f"{PUBLIC_URL}/webhooks/{tenant.id}/twilio/voice/silence?")

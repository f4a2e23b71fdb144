"""Tenant binding: the tenant comes from the URL, and what the request says it is for must be that
tenant's configuration. With an app (Slack, Meta) or a Twilio account shared by several tenants,
a tenant who knows the shared secret must not be able to write into another tenant's
conversations: another workspace/app, Page/account or number is 403 and nothing is recorded.
De-duplication keys are per tenant: one tenant's replay never suppresses another's message."""
from __future__ import annotations

import json

from tests.channels.conftest import (
    APP,
    IG_ID,
    META_SECRET,
    PAGE_ID,
    PUBLIC_URL,
    SMS_NUMBER,
    TEAM,
    VOICE_NUMBER,
    configure,
    meta_event,
    meta_headers,
    new_tenant,
    slack_event,
    slack_headers,
    sms_form,
    twilio_headers,
)


def test_slack_events_of_another_workspace_or_app_are_refused(client, tenant, store):
    hook = f"/webhooks/{tenant.id}/slack/events"
    for body in (slack_event("hi", team="T0THEIRS"), slack_event("hi", app="A0THEIRS"),
                 json.dumps({**json.loads(slack_event("hi")), "team_id": None}).encode()):
        r = client.post(hook, content=body, headers=slack_headers(body))
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    assert store.outbox() == [] and store.events() == []
    ok = slack_event("hi", team=TEAM, app=APP)
    assert client.post(hook, content=ok, headers=slack_headers(ok)).status_code == 200
    assert [r.text for r in store.outbox()] == ["hi"]


def test_meta_messages_for_another_page_or_account_are_refused_whole(client, tenant, store):
    hook = f"/webhooks/{tenant.id}/meta"
    other_page = meta_event("hi", own="999999999999999")
    other_recipient = meta_event("hi", recipient="999999999999999")
    good = json.loads(meta_event("for us"))
    mixed = {**good, "entry": good["entry"] + json.loads(other_page)["entry"]}  # one of ours, one not
    ig_for_page = meta_event("hi", obj="instagram", own=PAGE_ID)  # Instagram must name the IG account
    for body, secret in ((other_page, META_SECRET), (other_recipient, META_SECRET),
                         (json.dumps(mixed).encode(), META_SECRET), (ig_for_page, META_SECRET + "-ig")):
        r = client.post(hook, content=body, headers=meta_headers(body, secret))
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    assert store.outbox() == [] and store.events() == []
    ig = meta_event("hola", obj="instagram", own=IG_ID, sender="7654321098765432")
    assert client.post(hook, content=ig, headers=meta_headers(ig, META_SECRET + "-ig")).text == "EVENT_RECEIVED"
    body = json.dumps(good).encode()
    assert client.post(hook, content=body, headers=meta_headers(body)).text == "EVENT_RECEIVED"
    assert [(r.channel, r.text) for r in store.outbox()] == [("instagram", "hola"), ("messenger", "for us")]


def test_twilio_requests_for_another_number_are_refused(client, tenant, store):
    for name, to in (("sms", "+15557777777"), ("whatsapp", "whatsapp:+15557777777"), ("voice", SMS_NUMBER)):
        path = f"/webhooks/{tenant.id}/twilio/{name}"
        form = sms_form(to=to, CallSid="CA" + "1" * 32)
        r = client.post(path, data=form, headers=twilio_headers(PUBLIC_URL + path, form))
        assert r.status_code == 403 and "another number" in r.json()["message"], (name, r.text)
    assert store.outbox() == [] and store.events() == []
    path = f"/webhooks/{tenant.id}/twilio/voice"
    call = {"CallSid": "CA" + "2" * 32, "From": "+15551230001", "To": VOICE_NUMBER, "CallStatus": "ringing"}
    r = client.post(path, data=call, headers=twilio_headers(PUBLIC_URL + path, call))
    assert r.status_code == 200 and "<Gather" in r.text


def test_the_same_message_sid_to_two_tenants_is_two_messages_and_a_replay_is_one(client, store):
    acme, globex = new_tenant(client, "Acme"), new_tenant(client, "Globex")
    configure(client, acme, "sms")
    configure(client, globex, "sms")  # one Twilio account and number config shared by both
    form = sms_form(body="where is my order?")
    for t in (acme, globex, acme, globex):
        path = f"/webhooks/{t.id}/twilio/sms"
        assert client.post(path, data=form, headers=twilio_headers(PUBLIC_URL + path, form)).status_code == 200
    assert sorted(r.tenant_id for r in store.outbox()) == sorted([acme.id, globex.id])
    keys = sorted(e.external_id for e in store.events())
    assert keys == sorted([f"{acme.id}:{form['MessageSid']}", f"{globex.id}:{form['MessageSid']}"])


def test_a_meta_app_secret_rotated_by_another_process_verifies_at_once(client, tenant, store, settings):
    """The cached credentials do not verify the new signature: the webhook decides on freshly
    loaded ones (with the settings that came with them)."""
    from db.channels import put_channel
    from db.engine import session_scope
    from security.secrets import SecretBox

    hook = f"/webhooks/{tenant.id}/meta"
    first = meta_event("before the rotation")
    assert client.post(hook, content=first, headers=meta_headers(first)).text == "EVENT_RECEIVED"  # cached now
    with session_scope(store.engine) as s:  # another API process rotates the secret
        put_channel(s, SecretBox.from_setting(settings.secret_keys), tenant.id, "messenger",
                    {"page_id": PAGE_ID}, {"app_secret": "rotated-app-secret"})
    body = meta_event("after the rotation")  # (the old secret verifies here for up to the cache's 5 s)
    assert client.post(hook, content=body, headers=meta_headers(body, "rotated-app-secret")).text == "EVENT_RECEIVED"
    assert [r.text for r in store.outbox(tenant.id)] == ["before the rotation", "after the rotation"]

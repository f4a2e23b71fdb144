"""Channel configuration through the API: each channel's declared settings and credentials
(channels/config.py). Unknown channels are 404; settings keys a channel does not take, and
credentials sent as settings, are 422 naming the field and where it belongs; required fields and
malformed values are 422; nothing is stored by a refused PUT; and no response of any channel
ever contains a credential value."""
from __future__ import annotations

import pytest
from sqlmodel import select

from channels.config import SCHEMAS
from db.channels import put_channel
from db.engine import session_scope
from db.models import ChannelConfig, Secret
from tests.channels.conftest import CONFIGS, configure, new_tenant


def secret_values() -> list[str]:
    return [v for c in CONFIGS.values() for v in c["secrets"].values()]


def assert_no_secret(text: str) -> None:
    for value in secret_values():
        assert value not in text, f"a credential value is in a response: {value!r}"


def test_every_channel_has_a_schema_and_its_views_never_contain_a_credential(client):
    t = new_tenant(client)
    assert set(CONFIGS) == set(SCHEMAS)
    for channel, body in CONFIGS.items():
        r = client.put(f"/v1/channels/{channel}", json=body, headers=t.headers)
        assert r.status_code == 200, (channel, r.text)
        assert_no_secret(r.text)
        view = r.json()
        assert view["secrets"] == sorted(body["secrets"]), channel
        assert set(view["settings"]) <= set(SCHEMAS[channel].settings)
        one = client.get(f"/v1/channels/{channel}", headers=t.headers)
        assert one.status_code == 200 and one.json()["secrets"] == sorted(body["secrets"])
        assert_no_secret(one.text)
    listed = client.get("/v1/channels", headers=t.headers)
    assert listed.status_code == 200
    assert sorted(c["channel"] for c in listed.json()["channels"]) == sorted(CONFIGS)
    assert_no_secret(listed.text)
    # a rotation (one credential, settings again) still shows names only
    r = client.put("/v1/channels/sms", headers=t.headers, json={
        "settings": {"phone_number": "+15550000001"}, "secrets": {"auth_token": "rotated-secret-value"}})
    assert r.status_code == 200 and r.json()["secrets"] == ["account_sid", "auth_token"]
    assert "rotated-secret-value" not in r.text
    assert "rotated-secret-value" not in client.get("/v1/channels", headers=t.headers).text


def test_unknown_channels_are_404_and_store_nothing(client, store):
    t = new_tenant(client)
    for name in ("bogus", "api", "twilio"):
        r = client.put(f"/v1/channels/{name}", json={"settings": {"x": 1}}, headers=t.headers)
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "not_found" and name in r.json()["message"]
        assert client.get(f"/v1/channels/{name}", headers=t.headers).status_code == 404
    assert client.get("/v1/channels", headers=t.headers).json() == {"channels": []}


@pytest.mark.parametrize("channel, given, secrets, field, says", [
    # a credential in settings: told where it belongs, the value never echoed
    ("messenger", {"page_id": "1", "app_secret": "s3cr3t-in-settings"}, {}, "settings.app_secret", "secrets"),
    ("slack", {"team_id": "T1X", "api_app_id": "A1X", "signing_secret": "s3cr3t-in-settings"}, {},
     "settings.signing_secret", "secrets"),
    ("sms", {"phone_number": "+15550000001", "auth_token": "s3cr3t-in-settings"}, {}, "settings.auth_token",
     "secrets"),
    ("email", {"webhook_secret": "s3cr3t-in-settings"}, {}, "settings.webhook_secret", "secrets"),
    # unknown keys
    ("sms", {"phone_number": "+15550000001", "colour": "red"}, {}, "settings.colour", "not a setting"),
    ("voice", {}, {"account_sid": "AC1", "auth_token": "t", "api_key": "s3cr3t-in-settings"}, "secrets.api_key",
     "not a credential"),
    ("slack", {"team_id": "T1X", "api_app_id": "A1X"},
     {"signing_secret": "s", "bot_token": "b", "team_id": "T1X"}, "secrets.team_id", "send it in `settings`"),
    # required fields
    ("slack", {"api_app_id": "A1X"}, {"signing_secret": "s", "bot_token": "b"}, "settings.team_id", "required"),
    ("messenger", {}, {"verify_token": "v", "app_secret": "a", "page_access_token": "p"}, "settings.page_id",
     "required"),
    ("instagram", {"account_id": "17841"}, {"verify_token": "v", "app_secret": "a"}, "secrets.page_access_token",
     "required"),
    ("sms", {}, {"account_sid": "AC1", "auth_token": "t"}, "settings", "phone_number"),
    ("whatsapp", {"phone_number": "+15550000002"}, {"account_sid": "AC1"}, "secrets.auth_token", "required"),
    # malformed values
    ("voice", {"transfer_number": "0800 CALL ME"}, {"account_sid": "AC1", "auth_token": "t"},
     "settings.transfer_number", "E.164"),
    ("voice", {"transfer_number": 15559990000}, {"account_sid": "AC1", "auth_token": "t"},
     "settings.transfer_number", "E.164"),
    ("sms", {"phone_number": "call us"}, {"account_sid": "AC1", "auth_token": "t"}, "settings.phone_number",
     "E.164"),
    ("email", {"from_address": "not an address"}, {}, "settings.from_address", "e-mail address"),
    ("messenger", {"page_id": ["1"]}, {"verify_token": "v", "app_secret": "a", "page_access_token": "p"},
     "settings.page_id", "Page id"),
    ("web", {"allowed_origins": ["javascript:alert(1)"]}, {}, "settings.allowed_origins", "origin"),
    ("web", {"title": "x" * 81}, {}, "settings.title", "80"),
    ("sms", {"phone_number": "+15550000001"}, {"account_sid": "AC1", "auth_token": ""}, "secrets.auth_token",
     "non-empty"),
])
def test_a_configuration_the_schema_refuses_is_422_naming_the_field_and_stores_nothing(
        client, store, channel, given, secrets, field, says):
    t = new_tenant(client)
    r = client.put(f"/v1/channels/{channel}", json={"settings": given, "secrets": secrets}, headers=t.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"] in ("invalid_config", "invalid_request")
    message = r.json()["message"] if r.json()["error"] == "invalid_config" else str(r.json()["details"])
    assert field in message and says in message, message
    assert "s3cr3t-in-settings" not in r.text
    assert client.get("/v1/channels", headers=t.headers).json() == {"channels": []}
    with session_scope(store.engine) as s:
        assert s.exec(select(Secret).where(Secret.tenant_id == t.id)).all() == []


def test_a_refused_change_keeps_the_previous_configuration(client):
    t = new_tenant(client)
    before = configure(client, t, "slack")["slack"]
    r = client.put("/v1/channels/slack", headers=t.headers, json={
        "settings": {"team_id": "T0OTHER", "api_app_id": "A1X", "bot_token": "xoxb-in-settings"}})
    assert r.status_code == 422 and "settings.bot_token" in r.json()["message"]
    after = client.get("/v1/channels/slack", headers=t.headers).json()
    assert after == before


def test_required_credentials_may_come_from_an_earlier_put(client):
    t = new_tenant(client)
    configure(client, t, "whatsapp")
    r = client.put("/v1/channels/whatsapp", headers=t.headers, json={"settings": {"phone_number": "+15550000009"}})
    assert r.status_code == 200, r.text
    assert r.json()["settings"] == {"phone_number": "+15550000009"}
    assert r.json()["secrets"] == ["account_sid", "auth_token"]


def test_values_stored_in_settings_before_the_schemas_are_never_shown(client, store):
    """A Meta app secret put in settings by an older version stays stored but is not returned
    (and the channel no longer reads credentials from settings)."""
    t = new_tenant(client)
    with session_scope(store.engine) as s:
        put_channel(s, None, t.id, "messenger", {"page_id": "104530012345678", "app_secret": "legacy-in-settings",
                                                 "page_access_token": "legacy-token"}, {})
        row = s.exec(select(ChannelConfig).where(ChannelConfig.tenant_id == t.id)).one()
        assert row.settings["app_secret"] == "legacy-in-settings"
    for r in (client.get("/v1/channels", headers=t.headers), client.get("/v1/channels/messenger", headers=t.headers)):
        assert r.status_code == 200
        assert "legacy-in-settings" not in r.text and "legacy-token" not in r.text
    assert client.get("/v1/channels/messenger", headers=t.headers).json()["settings"] == {"page_id": "104530012345678"}


def test_configuration_needs_the_tenants_api_key(client):
    assert client.put("/v1/channels/sms", json=CONFIGS["sms"]).status_code == 401
    assert client.get("/v1/channels").status_code == 401

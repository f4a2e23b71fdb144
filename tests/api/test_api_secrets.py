"""Secrets API: write-only values, names listing, deletion, never echoed."""
from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import select

from db.engine import open_database
from db.models import Secret
from db.secrets import get_secrets
from security.secrets import SecretBox

VALUE = "shpat_VERY_secret_value_123"


def test_secret_value_is_never_returned(client, auth, settings):
    put = client.put("/v1/secrets/shop_token", json={"value": VALUE}, headers=auth)
    assert put.status_code == 200, put.text
    assert put.json()["name"] == "shop_token" and VALUE not in put.text
    listing = client.get("/v1/secrets", headers=auth)
    assert [s["name"] for s in listing.json()] == ["shop_token"] and VALUE not in listing.text
    assert set(listing.json()[0]) == {"name", "updated_at"}
    # Validation errors do not echo the submitted value either.
    bad = client.put("/v1/secrets/shop_token", json={"value": VALUE, "extra": VALUE}, headers=auth)
    assert bad.status_code == 422 and VALUE not in bad.text
    bad_name = client.put("/v1/secrets/bad-name!", json={"value": VALUE}, headers=auth)
    assert bad_name.status_code == 422 and VALUE not in bad_name.text
    with open_database(settings.database_url) as session:
        row = session.exec(select(Secret)).one()
        assert VALUE not in row.ciphertext
        box = SecretBox.from_setting(settings.secret_keys)
        assert get_secrets(session, box, "acme", ["shop_token"]) == {"shop_token": VALUE}


def test_secrets_are_per_tenant_and_deletable(client, auth, other_auth):
    client.put("/v1/secrets/token", json={"value": "a"}, headers=auth)
    assert client.get("/v1/secrets", headers=other_auth).json() == []
    assert client.delete("/v1/secrets/token", headers=other_auth).status_code == 404
    assert client.delete("/v1/secrets/token", headers=auth).status_code == 204
    assert client.get("/v1/secrets", headers=auth).json() == []
    assert client.delete("/v1/secrets/token", headers=auth).status_code == 404
    assert client.get("/v1/secrets").status_code == 401


def test_secrets_unavailable_without_keys(settings, app_factory):
    with TestClient(app_factory(settings.model_copy(update={"secret_keys": ""}))) as c:
        key = c.post("/v1/tenants", json={"name": "Initech"}, headers={"X-Admin-Token": settings.admin_token})
        headers = {"X-API-Key": key.json()["api_key"]}
        response = c.put("/v1/secrets/x", json={"value": "v"}, headers=headers)
        assert response.status_code == 503 and response.json()["error"] == "unavailable"

"""Tenants API: admin creation, key authentication, tenant settings."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

def test_create_tenant_requires_admin_token(client, admin):
    assert client.post("/v1/tenants", json={"name": "Acme"}).status_code == 403
    bad = client.post("/v1/tenants", json={"name": "Acme"}, headers={"X-Admin-Token": "nope"})
    assert bad.status_code == 403 and bad.json()["error"] == "forbidden"
    ok = client.post("/v1/tenants", json={"name": "Acme Corp"}, headers=admin)
    assert ok.status_code == 201
    body = ok.json()
    assert body["id"] == "acme-corp" and body["name"] == "Acme Corp" and body["api_key"].startswith("fw_")
    again = client.post("/v1/tenants", json={"name": "acme corp"}, headers=admin)
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_admin_api_disabled_without_token(settings, app_factory):
    with TestClient(app_factory(settings.model_copy(update={"admin_token": ""}))) as c:
        response = c.post("/v1/tenants", json={"name": "Acme"}, headers={"X-Admin-Token": ""})
        assert response.status_code == 403 and "disabled" in response.json()["message"]


def test_key_authentication(client, auth):
    key = auth["Authorization"].split()[1]
    assert client.get("/v1/tenant", headers=auth).json()["id"] == "acme"
    assert client.get("/v1/tenant", headers={"X-API-Key": key}).json()["name"] == "Acme"
    for headers in ({}, {"Authorization": "Bearer fw_wrong"}, {"X-API-Key": key[:-1]},
                    {"Authorization": f"Basic {key}"}, {"Authorization": "Bearer"}):
        response = client.get("/v1/tenant", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"


def test_patch_settings(client, auth, other_auth):
    response = client.patch(
        "/v1/tenant/settings", headers=auth,
        json={"allowed_hosts": ["shop.internal", "127.0.0.1:9000"],
              "connector_base_urls": {"shopify": "http://127.0.0.1:9000/admin"}},
    )
    assert response.status_code == 200, response.text
    assert client.get("/v1/tenant", headers=auth).json()["settings"] == {
        "allowed_hosts": ["shop.internal", "127.0.0.1:9000"],
        "connector_base_urls": {"shopify": "http://127.0.0.1:9000/admin"},
    }
    partial = client.patch("/v1/tenant/settings", headers=auth, json={"allowed_hosts": []})
    assert partial.json()["settings"]["connector_base_urls"] == {"shopify": "http://127.0.0.1:9000/admin"}
    assert client.get("/v1/tenant", headers=other_auth).json()["settings"]["allowed_hosts"] == []
    for bad in ({"allowed_hosts": ["http://x/"]}, {"connector_base_urls": {"s": "ftp://x"}},
                {"allowed_hosts": "x"}, {"unknown": 1}, [1, 2]):
        response = client.patch("/v1/tenant/settings", headers=auth, json=bad)
        assert response.status_code == 422, bad
        assert response.json()["error"] == "invalid_request"


def test_optional_routers_are_skipped_only_when_missing():
    from fastapi import FastAPI

    from api.app import include_routers

    app = FastAPI()
    include_routers(app, ["api.routes.tenants", "api.routes.not_written_yet"],
                    optional=["api.routes.not_written_yet"])
    assert "/v1/tenant" in app.openapi()["paths"]
    with pytest.raises(ModuleNotFoundError):
        include_routers(FastAPI(), ["api.routes.tenants", "api.routes.also_missing"],
                        optional=["api.routes.not_written_yet"])

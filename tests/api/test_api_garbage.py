"""Bad input never gives a 500: junk bodies, wrong shapes, huge nesting, unknown routes."""
from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient


JUNK = [
    os.urandom(2048),
    b"\xff\xfe\x00garbage",
    b"",
    b"   \n",
    b"[1, 2, 3]",
    b'"just a string"',
    b"null",
    b"{" * 5000,
    b"[" * 50000 + b"]" * 50000,
    b"a:\n" + b"".join(b"  " * i + b"b:\n" for i in range(1, 600)),
    b"procedure: x\nsteps: 3\n",
    b"procedure: ok-id\nsteps: [{id: 1, type: [message]}]\n",
    b"&a [*a]",
    b"!!python/object:os.system {}",
]
CONTENT_TYPES = ["application/yaml", "application/json", "text/plain"]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_junk_procedure_bodies(client, auth, content_type):
    for body in JUNK:
        response = client.post("/v1/procedures", content=body, headers={**auth, "Content-Type": content_type})
        assert 400 <= response.status_code < 500, (body[:40], response.status_code, response.text[:200])
        assert response.json()["error"] in {"invalid_body", "invalid_procedure"}


def test_junk_connector_bodies(client, auth):
    for body in JUNK:
        response = client.put("/v1/connectors/crm", content=body, headers={**auth, "Content-Type": "application/yaml"})
        assert 400 <= response.status_code < 500, (body[:40], response.status_code, response.text[:200])


def test_wrong_content_type_and_bad_multipart(client, auth):
    response = client.post("/v1/procedures", content=b"x", headers={**auth, "Content-Type": "image/png"})
    assert response.status_code == 415
    response = client.post(
        "/v1/procedures", content=b"--zz\r\ngarbage", headers={**auth, "Content-Type": "multipart/form-data; boundary=zz"}
    )
    assert response.status_code == 422
    response = client.post("/v1/procedures", files={"other": ("a.yaml", b"x")}, headers=auth)
    assert response.status_code == 422 and "file" in response.json()["message"]
    response = client.post("/v1/procedures", files={"file": ("a.yaml", os.urandom(500))}, headers=auth)
    assert response.status_code == 422


def test_too_large_body(client, auth):
    big = b"# " + b"x" * 1_100_000
    response = client.post("/v1/procedures", content=big, headers={**auth, "Content-Type": "application/yaml"})
    assert response.status_code == 413


def test_json_junk_to_json_endpoints(client, auth, admin):
    cases = [
        ("post", "/v1/tenants", admin, b"[]"),
        ("post", "/v1/tenants", admin, b"{\"name\": []}"),
        ("post", "/v1/tenants", admin, b"{\"name\": \"!!!\"}"),
        ("post", "/v1/tenants", admin, os.urandom(100)),
        ("patch", "/v1/tenant/settings", auth, b"[" * 10000),
        ("put", "/v1/secrets/x", auth, b"{\"value\": {\"a\": 1}}"),
        ("put", "/v1/secrets/x", auth, os.urandom(100)),
        ("post", "/v1/procedures/x/rollback", auth, b"{\"version\": \"one\"}"),
        ("post", "/v1/procedures/x/rollback", auth, b"{\"version\": 0}"),
    ]
    for method, path, headers, body in cases:
        response = client.request(method, path, content=body, headers={**headers, "Content-Type": "application/json"})
        assert response.status_code in (400, 422), (path, body[:30], response.status_code, response.text[:200])
        assert "error" in response.json()


def test_unknown_route_and_method_are_json(client, auth):
    assert client.get("/v1/nothing", headers=auth).json()["error"] == "not_found"
    assert client.delete("/v1/procedures", headers=auth).status_code == 405


def test_unexpected_errors_are_500_without_internals(settings, app_factory):
    app = app_factory(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("internal detail /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "message": "internal error"}


def test_docs_and_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/procedures" in paths and "/v1/secrets/{name}" in paths


def test_junk_channel_configurations(client, auth):
    """PUT /v1/channels/{channel} with junk: 4xx (the webhooks' own garbage tests are in
    tests/channels/test_webhook_garbage.py)."""
    bodies = JUNK + [b'{"settings": []}', b'{"settings": {"phone_number": {"a": 1}}}', b'{"secrets": {"auth_token": 5}}',
                     b'{"secrets": {"auth_token": "\\u0000"}}', b'{"settings": {}, "other": 1}',
                     b'{"settings": {"phone_number": "' + b"9" * 5000 + b'"}}']
    for channel in ("sms", "slack", "messenger", "email", "web", "voice", "bogus"):
        for body in bodies:
            response = client.put(f"/v1/channels/{channel}", content=body,
                                  headers={**auth, "Content-Type": "application/json"})
            assert response.status_code in (400, 404, 422), (channel, body[:40], response.status_code, response.text[:200])
            assert "error" in response.json()
    assert client.get("/v1/channels", headers=auth).json() == {"channels": []}

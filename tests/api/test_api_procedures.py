"""Procedures API: publish (YAML, JSON, multipart), idempotency, problems, versions, diff, rollback."""
from __future__ import annotations

import json

import yaml

GREET_V1 = """procedure: greet-customer
title: Greet
steps:
  - id: hello
    type: message
    text: Hello there
"""
GREET_V2 = """procedure: greet-customer
title: Greet politely
steps:
  - id: hello
    type: message
    text: Hello there, welcome
  - id: bye
    type: message
    text: Bye
"""
BROKEN = """procedure: broken-one
steps:
  - id: hello
    type: message
    text: hi
    next: nowhere
"""
YAML_CT = {"Content-Type": "application/yaml"}


def _publish(client, auth, text, content_type="application/yaml"):
    return client.post("/v1/procedures", content=text.encode(), headers={**auth, "Content-Type": content_type})


def test_publish_yaml_and_read_back(client, auth):
    response = _publish(client, auth, GREET_V1)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["procedure_id"] == "greet-customer" and body["version"] == 1 and body["created"] is True
    assert len(body["sha256"]) == 64
    latest = client.get("/v1/procedures/greet-customer", headers=auth).json()
    assert latest["source_text"] == GREET_V1 and latest["source_format"] == "yaml"
    assert latest["definition"]["steps"][0]["id"] == "hello" and latest["sha256"] == body["sha256"]
    listing = client.get("/v1/procedures", headers=auth).json()
    assert [(p["procedure_id"], p["version"], p["title"]) for p in listing] == [("greet-customer", 1, "Greet")]


def test_publish_json_and_text_plain_and_multipart(client, auth):
    as_json = json.dumps(yaml.safe_load(GREET_V1))
    response = _publish(client, auth, as_json, "application/json")
    assert response.status_code == 201, response.text
    assert client.get("/v1/procedures/greet-customer", headers=auth).json()["source_format"] == "json"
    response = _publish(client, auth, GREET_V2, "text/plain")
    assert (response.status_code, response.json()["version"]) == (201, 2)
    files = {"file": ("greet.yaml", GREET_V1.replace("Hello there", "Hi"), "application/octet-stream")}
    response = client.post("/v1/procedures", files=files, headers=auth)
    assert (response.status_code, response.json()["version"]) == (201, 3), response.text
    detail = client.get("/v1/procedures/greet-customer/versions/3", headers=auth).json()
    assert detail["source_format"] == "yaml" and "Hi" in detail["source_text"]


def test_republishing_same_content_is_idempotent(client, auth):
    first = _publish(client, auth, GREET_V1).json()
    again = _publish(client, auth, GREET_V1)
    assert again.status_code == 200
    assert again.json() == {**first, "created": False}
    # Same definition written differently (JSON) is the same version too.
    as_json = _publish(client, auth, json.dumps(yaml.safe_load(GREET_V1)), "application/json")
    assert (as_json.status_code, as_json.json()["version"]) == (200, 1)
    assert len(client.get("/v1/procedures/greet-customer/versions", headers=auth).json()) == 1


def test_broken_procedure_gives_located_problems(client, auth):
    response = _publish(client, auth, BROKEN)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_procedure"
    target = [p for p in body["problems"] if "nowhere" in p["message"]]
    assert target, body
    problem = target[0]
    assert (problem["line"], problem["step_id"]) == (6, "hello") and problem["column"] >= 1
    assert problem["text"].startswith("<procedure>:6:") and problem["rule"]
    files = {"file": ("broken.yaml", BROKEN, "text/yaml")}
    upload = client.post("/v1/procedures", files=files, headers=auth).json()
    assert all(p["file"] == "broken.yaml" for p in upload["problems"])
    assert client.get("/v1/procedures", headers=auth).json() == []


def test_other_tenant_cannot_see_procedures(client, auth, other_auth):
    _publish(client, auth, GREET_V1)
    for path in ("/v1/procedures/greet-customer", "/v1/procedures/greet-customer/versions",
                 "/v1/procedures/greet-customer/versions/1", "/v1/procedures/greet-customer/diff?from=1&to=1"):
        response = client.get(path, headers=other_auth)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    assert client.get("/v1/procedures", headers=other_auth).json() == []
    rollback = client.post("/v1/procedures/greet-customer/rollback", json={"version": 1}, headers=other_auth)
    assert rollback.status_code == 404
    assert client.get("/v1/procedures", headers={"Authorization": "Bearer fw_nope"}).status_code == 401


def test_versions_diff_and_rollback(client, auth):
    _publish(client, auth, GREET_V1)
    _publish(client, auth, GREET_V2)
    versions = client.get("/v1/procedures/greet-customer/versions", headers=auth).json()
    assert [v["version"] for v in versions] == [1, 2]
    diff = client.get("/v1/procedures/greet-customer/diff?from=1&to=2", headers=auth).json()
    assert "-    text: Hello there\n" in diff["diff"] and "+  - id: bye\n" in diff["diff"]
    assert diff["steps"] == {"added": ["bye"], "removed": [], "changed": ["hello"]}
    assert diff["fields_changed"] == ["title"]
    assert client.get("/v1/procedures/greet-customer/diff?from=1&to=9", headers=auth).status_code == 404
    assert client.get("/v1/procedures/greet-customer/diff?from=x&to=2", headers=auth).status_code == 422

    rolled = client.post("/v1/procedures/greet-customer/rollback", json={"version": 1}, headers=auth)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == 3 and rolled.json()["note"] == "rollback of v1"
    latest = client.get("/v1/procedures/greet-customer", headers=auth).json()
    assert latest["version"] == 3 and latest["source_text"] == GREET_V1 and latest["sha256"] == versions[0]["sha256"]
    assert client.get("/v1/procedures", headers=auth).json()[0]["version"] == 3
    missing = client.post("/v1/procedures/greet-customer/rollback", json={"version": 7}, headers=auth)
    assert missing.status_code == 404


def test_out_of_range_numbers_are_422_not_500(client, auth):
    _publish(client, auth, GREET_V1)
    huge = "99999999999999999999"
    for path in (f"/v1/procedures/greet-customer/versions/{huge}", "/v1/procedures/greet-customer/versions/2147483648",
                 "/v1/procedures/greet-customer/versions/0", "/v1/procedures/greet-customer/versions/-1",
                 f"/v1/procedures/greet-customer/diff?from=1&to={huge}",
                 f"/v1/procedures/greet-customer/diff?from={huge}&to=1"):
        response = client.get(path, headers=auth)
        assert response.status_code == 422, (path, response.status_code, response.text)
        assert response.json()["error"] == "invalid_request"
    # the largest storable number is merely a version that does not exist
    assert client.get("/v1/procedures/greet-customer/versions/2147483647", headers=auth).status_code == 404
    for body in (b'{"version": 99999999999999999999}', b'{"version": 2147483648}', b'{"version": 1e400}'):
        response = client.post("/v1/procedures/greet-customer/rollback", content=body,
                                headers={**auth, "Content-Type": "application/json"})
        assert response.status_code == 422, (body, response.text)
    versions = client.get("/v1/procedures/greet-customer/versions", headers=auth).json()
    assert [v["version"] for v in versions] == [1]  # nothing was rolled back


def test_nul_characters_are_refused_and_change_nothing(client, auth):
    # NUL fits neither PostgreSQL's text nor its jsonb: a clear 422 on both databases, never a 500
    as_json = json.dumps({"procedure": "nul-proc", "steps": [{"id": "a", "type": "message", "text": "x\u0000y"}]})
    as_yaml = 'procedure: nul-proc\nsteps:\n  - id: a\n    type: message\n    text: "x\\0y"\n'
    for text, content_type in ((as_json, "application/json"), (as_yaml, "application/yaml")):
        response = _publish(client, auth, text, content_type)
        assert response.status_code == 422, (content_type, response.status_code, response.text)
        assert "NUL" in response.json()["message"]
    assert client.get("/v1/procedures/nul-proc", headers=auth).status_code == 404
    assert client.get("/v1/procedures", headers=auth).json() == []
    for path in ("/v1/procedures/a%00b", "/v1/procedures/a%00b/versions", "/v1/procedures/a%00b/versions/1",
                 "/v1/procedures/a%00b/diff?from=1&to=2"):
        response = client.get(path, headers=auth)
        assert response.status_code == 404, (path, response.status_code, response.text)
    response = client.post("/v1/procedures/a%00b/rollback", json={"version": 1}, headers=auth)
    assert response.status_code == 404, response.text

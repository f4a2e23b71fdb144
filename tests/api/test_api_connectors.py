"""Connectors API: built-ins plus custom specs; procedures validate against the tenant's catalog."""
from __future__ import annotations

import json

CRM = """connector: crm
base_url: https://crm.example.com/api
auth: {type: bearer, token: "{{ secrets.crm_token }}"}
operations:
  contacts.get:
    method: GET
    path: /contacts
    query: {email: "{{ params.email }}"}
    read_only: true
    response: {id: "$.contacts[0].id"}
"""
USES_CRM = """procedure: find-contact
steps:
  - id: find
    type: lookup
    connector: crm
    operation: contacts.get
    params: {email: someone@example.com}
"""


def test_builtins_listed_without_secrets(client, auth):
    response = client.get("/v1/connectors", headers=auth)
    assert response.status_code == 200
    by_id = {c["id"]: c for c in response.json()}
    assert {"shopify", "stripe", "zendesk"} <= set(by_id)
    shopify = by_id["shopify"]
    assert shopify["source"] == "builtin" and "orders.get" in shopify["operations"]
    assert "shop_token" in shopify["secrets"]


def test_custom_connector_is_tenant_scoped(client, auth, other_auth):
    put = client.put("/v1/connectors/crm", content=CRM, headers={**auth, "Content-Type": "application/yaml"})
    assert put.status_code == 201, put.text
    assert put.json()["secrets"] == ["crm_token"] and put.json()["source"] == "custom"
    replace = client.put("/v1/connectors/crm", content=CRM, headers={**auth, "Content-Type": "application/yaml"})
    assert replace.status_code == 200
    assert "crm" in {c["id"] for c in client.get("/v1/connectors", headers=auth).json()}
    assert "crm" not in {c["id"] for c in client.get("/v1/connectors", headers=other_auth).json()}
    ok = client.post("/v1/procedures", content=USES_CRM, headers={**auth, "Content-Type": "application/yaml"})
    assert ok.status_code == 201, ok.text
    refused = client.post("/v1/procedures", content=USES_CRM, headers={**other_auth, "Content-Type": "application/yaml"})
    assert refused.status_code == 422 and "crm" in refused.json()["problems"][0]["message"]


def test_bad_connector_specs_are_422(client, auth):
    headers = {**auth, "Content-Type": "application/json"}
    cases = [
        json.dumps({"connector": "crm"}),                                     # missing fields
        json.dumps({"connector": "other", "base_url": "https://x", "operations": {"a.b": {"method": "GET", "path": "/"}}}),
        json.dumps([1, 2, 3]),
        "{not json",
        json.dumps({"connector": "crm", "base_url": "ftp://x", "operations": {}}),
    ]
    for body in cases:
        response = client.put("/v1/connectors/crm", content=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] in {"invalid_connector", "invalid_body"}
    assert "crm" not in {c["id"] for c in client.get("/v1/connectors", headers=auth).json()}


def _put_yaml(client, auth, text: str, connector: str = "crm"):
    return client.put(f"/v1/connectors/{connector}", content=text,
                      headers={**auth, "Content-Type": "application/yaml"})


def test_read_only_yes_is_refused_at_its_line_under_yaml_1_2(client, auth):
    # YAML 1.1 (yaml.safe_load) read `yes` as true: a write operation could be declared read-only
    # by a word that is text in YAML 1.2, the language's YAML
    text = CRM.replace("read_only: true", "read_only: yes")
    response = _put_yaml(client, auth, text)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_connector"
    [problem] = body["problems"]
    line = text.splitlines().index("    read_only: yes") + 1
    assert (problem["line"], problem["column"]) == (line, len("    read_only: ") + 1)
    assert problem["path"] == "operations.contacts.get.read_only"
    assert problem["message"] == "must be true or false" and problem["step_id"] is None
    assert problem["file"] == "<connector>" and problem["rule"] == "connector-spec"
    assert problem["text"] == f"<connector>:{line}:16: operations.contacts.get.read_only: must be true or false"
    assert body["message"] == problem["text"]
    assert "crm" not in {c["id"] for c in client.get("/v1/connectors", headers=auth).json()}


def test_yaml_1_2_keys_stay_text(client, auth):
    # on/off/yes/no are text under YAML 1.2 (YAML 1.1 made them booleans: "operation id must look like...")
    text = """connector: switches
base_url: https://switch.example.com
operations:
  on: {method: POST, path: /on}
  off: {method: POST, path: /off}
  no: {method: GET, path: /state}
"""
    response = _put_yaml(client, auth, text, "switches")
    assert response.status_code == 201, response.text
    ops = response.json()["operations"]
    assert set(ops) == {"on", "off", "no"}
    assert ops["on"]["read_only"] is False and ops["no"]["read_only"] is True


def test_broken_specs_give_422_with_line_and_column(client, auth):
    cases = [
        # YAML syntax: where the reader stopped
        (CRM.replace("query: {email:", "query: [email:"), None, "invalid YAML"),
        # a bad method, located at its value
        (CRM.replace("method: GET", "method: FETCH"), "operations.contacts.get.method", "must be one of"),
        # an unknown field, located at its key
        (CRM.replace("    read_only: true", "    readonly: true"), "operations.contacts.get.readonly", "unknown field"),
        # a template reading a root other than params/secrets
        (CRM.replace("{{ params.email }}", "{{ inputs.email }}"), "operations.contacts.get.query.email", "inputs"),
    ]
    for text, path, words in cases:
        response = _put_yaml(client, auth, text)
        assert response.status_code == 422, (text, response.text)
        body = response.json()
        assert body["error"] == "invalid_connector", body
        [problem] = body["problems"]
        assert isinstance(problem["line"], int) and isinstance(problem["column"], int), problem
        assert 1 <= problem["line"] <= len(text.splitlines()) and problem["column"] >= 1, problem
        assert words in problem["message"], problem
        if path is not None:
            assert problem["path"] == path, problem
        assert problem["text"].startswith(f"<connector>:{problem['line']}:{problem['column']}: "), problem
    # the located line is the one at fault
    text = CRM.replace("method: GET", "method: FETCH")
    problem = _put_yaml(client, auth, text).json()["problems"][0]
    assert text.splitlines()[problem["line"] - 1] == "    method: FETCH"
    assert "crm" not in {c["id"] for c in client.get("/v1/connectors", headers=auth).json()}


def test_a_multipart_spec_is_located_in_its_file(client, auth):
    bad = CRM.replace("method: GET", "method: FETCH")
    response = client.put("/v1/connectors/crm", files={"file": ("crm.yaml", bad, "application/yaml")}, headers=auth)
    assert response.status_code == 422, response.text
    problem = response.json()["problems"][0]
    assert problem["file"] == "crm.yaml" and problem["text"].startswith(f"crm.yaml:{problem['line']}:")

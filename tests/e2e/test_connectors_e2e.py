"""Connectors end to end (spec §5): the built-in Stripe connector against the demo shop with the
tenant configured through the API, a tenant's custom connector with response mapping, the SSRF
guard (also across a redirect), and an `http` step with bearer auth whose secret never shows."""
from __future__ import annotations

import json

import httpx

from tests_e2e_helpers import get_run, publish, start_run, wait_status

STRIPE_REFUND = """
procedure: stripe-refund
inputs: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: customer
    type: lookup
    connector: stripe
    operation: customers.search
    params: {email: "{{ inputs.email }}"}
    save_as: customer
  - id: charges
    type: lookup
    connector: stripe
    operation: charges.list
    params: {customer_id: "{{ customer.customer_id }}", limit: 1}
    save_as: charge
  - id: refund
    type: action
    connector: stripe
    operation: refunds.create
    params: {charge_id: "{{ charge.charge_id }}", amount: "{{ charge.amount }}"}
    save_as: refund
  - id: done
    type: message
    text: "Refunded {{ refund.amount }} {{ charge.currency }} ({{ refund.refund_id }})"
"""

ECHO_CONNECTOR = {
    "connector": "echoer",
    "title": "Echo service",
    "base_url": "{{ secrets.echo_base }}",
    "auth": {"type": "header", "name": "X-Echo-Key", "value": "{{ secrets.echo_key }}"},
    "operations": {
        "things.find": {
            "method": "GET",
            "path": "/echo",
            "query": {"q": "{{ params.term }}", "kind": "thing"},
            "read_only": True,
            "response": {"verb": "$.method", "where": "$.path", "term": "$.query.q", "kind": "$.query.kind"},
        },
    },
}

USES_ECHOER = """
procedure: use-echoer
inputs: {type: object, required: [term], properties: {term: {type: string}}}
steps:
  - id: find
    type: lookup
    connector: echoer
    operation: things.find
    params: {term: "{{ inputs.term }}"}
    save_as: found
  - id: say
    type: message
    text: "{{ found.verb }} {{ found.where }} {{ found.term }}/{{ found.kind }}"
"""

HTTP_CALL = """
procedure: {pid}
inputs: {{type: object, properties: {{q: {{type: string}}}}}}
secrets: [api_token]
steps:
  - id: call
    type: http
    method: POST
    url: "{url}"
    query: {{q: "{{{{ inputs.q }}}}"}}
    auth: {{type: bearer, token: "{{{{ secrets.api_token }}}}"}}
    body: {{hello: "{{{{ inputs.q }}}}"}}
    retry: {{max_attempts: 1}}
    save_as: echo
  - id: after
    type: message
    text: "sent {{{{ echo.method }}}} to {{{{ echo.path }}}}"
"""

PEEK = """
procedure: bearer-peek
secrets: [api_token]
steps:
  - id: peek
    type: http
    url: "{url}"
    auth: {{type: bearer, token: "{{{{ secrets.api_token }}}}"}}
    extract: {{sent_auth: "$.headers.authorization", agent: "$.headers.user-agent"}}
    save_as: peek
"""

TOKEN = "s3cr3t-bearer-VALUE-4242"


def _put(api: str, path: str, headers: dict, **kw) -> httpx.Response:
    return httpx.put(f"{api}{path}", headers=headers, timeout=15, **kw)


def _admin_tenant(api: str) -> dict:
    r = httpx.post(f"{api}/v1/tenants", json={"name": "no-allowed-hosts"},
                   headers={"X-Admin-Token": "e2e-admin"}, timeout=15)
    assert r.status_code == 201, r.text
    return {"id": r.json()["id"], "headers": {"Authorization": f"Bearer {r.json()['api_key']}"}}


def test_builtin_stripe_connector_refunds_once(api, tenant, worker, shop):
    headers, tid = tenant["headers"], tenant["id"]
    shop_url, shop_state = shop
    host = shop_url.split("://")[1]
    patched = httpx.patch(f"{api}/v1/tenant/settings", headers=headers, timeout=15, json={
        "allowed_hosts": [host], "connector_base_urls": {"stripe": shop_url}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["settings"]["connector_base_urls"]["stripe"] == shop_url
    secret = _put(api, "/v1/secrets/stripe_key", headers, json={"value": "sk_test_demo"})
    assert secret.status_code == 200 and secret.json()["name"] == "stripe_key"

    publish(api, headers, STRIPE_REFUND, "application/yaml")
    run = start_run(api, headers, "stripe-refund", {"email": "alice@example.com"})
    final = wait_status(api, headers, run["run_id"], "succeeded")
    assert final["vars"]["customer"]["customer_id"] == "cus_alice"
    assert final["vars"]["charge"]["charge_id"] == "ch_alice_1001"
    assert final["vars"]["refund"]["amount"] == 15000 and final["vars"]["refund"]["status"] == "succeeded"
    assert final["messages"] == [f"Refunded 15000 usd ({final['vars']['refund']['refund_id']})"]

    stats = shop_state.stats()
    key = f"{tid}:{run['run_id']}:refund"
    assert stats["idempotency"] == {key: 1}
    assert [(r["provider"], r["charge"], r["amount"], r["idempotency_key"]) for r in stats["refunds"]] == [
        ("stripe", "ch_alice_1001", 15000, key)]
    assert stats["requests"]["customers"] == 1 and stats["requests"]["charges"] == 1
    assert "sk_test_demo" not in get_run(api, headers, run["run_id"]).text


def test_custom_connector_with_response_mapping(api, tenant, worker, shop):
    headers = tenant["headers"]
    shop_url, shop_state = shop
    assert _put(api, "/v1/secrets/echo_base", headers, json={"value": f"{shop_url}/_control"}).status_code == 200
    assert _put(api, "/v1/secrets/echo_key", headers, json={"value": "echo-key-98765"}).status_code == 200
    created = httpx.put(f"{api}/v1/connectors/echoer", content=json.dumps(ECHO_CONNECTOR),
                        headers={**headers, "Content-Type": "application/json"}, timeout=15)
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "custom" and created.json()["operations"]["things.find"]["read_only"] is True
    listed = httpx.get(f"{api}/v1/connectors", headers=headers, timeout=15).json()
    assert {c["id"]: c["source"] for c in listed}["echoer"] == "custom"
    assert "echo-key-98765" not in json.dumps(listed)

    publish(api, headers, USES_ECHOER, "application/yaml")
    run = start_run(api, headers, "use-echoer", {"term": "blue widget"})
    final = wait_status(api, headers, run["run_id"], "succeeded")
    assert final["vars"]["found"] == {"verb": "GET", "where": "/_control/echo", "term": "blue widget", "kind": "thing"}
    assert final["messages"] == ["GET /_control/echo blue widget/thing"]
    assert shop_state.stats()["requests"]["echo"] == 1
    assert "echo-key-98765" not in get_run(api, headers, run["run_id"]).text


def test_ssrf_guard_blocks_internal_address(api, tenant, worker, shop):
    shop_url, shop_state = shop
    host = shop_url.split("://")[1]
    outsider = _admin_tenant(api)
    oh = outsider["headers"]
    assert _put(api, "/v1/secrets/api_token", oh, json={"value": TOKEN}).status_code == 200
    publish(api, oh, HTTP_CALL.format(pid="ssrf-probe", url=f"{shop_url}/_control/echo"), "application/yaml")
    run = start_run(api, oh, "ssrf-probe", {"q": "x"})
    failed = wait_status(api, oh, run["run_id"], "failed")
    assert failed["error"]["name"] == "connection" and failed["error"]["step"] == "call"
    assert "blocked request to internal address" in failed["error"]["message"]
    assert "loopback" in failed["error"]["message"] and "allowed_hosts" in failed["error"]["message"]
    assert shop_state.stats()["requests"].get("echo", 0) == 0

    # an allowed host may not redirect the call to a host that is not allowed
    headers = tenant["headers"]
    assert _put(api, "/v1/secrets/api_token", headers, json={"value": TOKEN}).status_code == 200
    port = host.rsplit(":", 1)[1]
    hop = f"{shop_url}/_control/redirect?to=http://localhost:{port}/_control/echo"
    publish(api, headers, HTTP_CALL.format(pid="ssrf-redirect", url=hop), "application/yaml")
    run = start_run(api, headers, "ssrf-redirect", {"q": "x"})
    failed = wait_status(api, headers, run["run_id"], "failed")
    assert failed["error"]["name"] == "connection", failed["error"]
    assert "blocked request to internal address" in failed["error"]["message"]
    stats = shop_state.stats()["requests"]
    assert stats.get("redirect") == 1 and stats.get("echo", 0) == 0
    assert TOKEN not in json.dumps(failed)


def test_http_step_bearer_secret_is_sent_but_never_shown(api, tenant, worker, shop):
    headers = tenant["headers"]
    shop_url, shop_state = shop
    assert _put(api, "/v1/secrets/api_token", headers, json={"value": TOKEN}).status_code == 200
    publish(api, headers, HTTP_CALL.format(pid="bearer-call", url=f"{shop_url}/_control/echo"), "application/yaml")
    run = start_run(api, headers, "bearer-call", {"q": "ping"})
    final = wait_status(api, headers, run["run_id"], "succeeded")
    echo = final["vars"]["echo"]
    assert echo["method"] == "POST" and echo["path"] == "/_control/echo" and echo["query"] == {"q": "ping"}
    assert json.loads(echo["body"]) == {"hello": "ping"}
    # the header was sent (the echo saw it) and is shown redacted
    assert echo["headers"]["authorization"] == "[redacted]"
    assert final["messages"] == ["sent POST to /_control/echo"]
    assert shop_state.stats()["requests"]["echo"] == 1

    text = get_run(api, headers, run["run_id"]).text
    assert TOKEN not in text and TOKEN.lower() not in text.lower()
    listed = httpx.get(f"{api}/v1/runs", headers=headers, timeout=15).text
    assert TOKEN not in listed


def test_secret_echoed_back_by_a_server_is_not_stored(api, tenant, worker, shop):
    """A server that reflects the credential (under a name that does not look secret) must not
    get it into the run's variables, step log or history."""
    headers = tenant["headers"]
    shop_url, _ = shop
    assert _put(api, "/v1/secrets/api_token", headers, json={"value": TOKEN}).status_code == 200
    publish(api, headers, PEEK.format(url=f"{shop_url}/_control/echo"), "application/yaml")
    run = start_run(api, headers, "bearer-peek", {})
    final = wait_status(api, headers, run["run_id"], "succeeded")
    assert final["vars"]["peek"]["sent_auth"] == "Bearer ***"  # sent, and redacted when echoed back
    assert final["vars"]["peek"]["agent"]
    assert TOKEN not in get_run(api, headers, run["run_id"]).text

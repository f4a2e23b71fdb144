"""execute_operation / execute_http against the demo shop over real loopback HTTP."""
import socket
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from connectors.errors import ConnectorError
from connectors.executor import execute_http, execute_operation, redact
from connectors.spec import normalize_connector

LOOPBACK = ["127.0.0.1"]


async def call(specs, bases, secrets, connector, operation, params, **kw):
    kw.setdefault("idempotency_key", None)
    kw.setdefault("timeout", 5)
    return await execute_operation(specs[connector], operation, params, secrets=secrets, allowed_hosts=LOOPBACK,
                                   base_url_override=bases[connector], **kw)


async def test_shopify_lookup_maps_response_and_legacy_assign(specs, bases, secrets) -> None:
    legacy = specs["shopify"]["operations"]["orders.get"]["legacy_response"]
    res = await call(specs, bases, secrets, "shopify", "orders.get", {"email": "alice@example.com"}, assign=legacy)
    assert res.status == 200
    assert res.result == {"id": 1001, "name": "#1001", "total": "150.00", "currency": "USD"}
    assert res.assigned == {"order.id": 1001, "order.total": "150.00", "order.currency": "USD"}
    assert res.headers["content-type"] == "application/json"
    none = await call(specs, bases, secrets, "shopify", "orders.get", {"email": "nobody@example.com"})
    assert none.result == {"id": None, "name": None, "total": None, "currency": None}


async def test_refund_idempotency_header_and_replay(specs, bases, secrets, state) -> None:
    params = {"order_id": 1001, "note": "damaged"}
    first = await call(specs, bases, secrets, "shopify", "refunds.create", params, idempotency_key="t1:run1:refund")
    again = await call(specs, bases, secrets, "shopify", "refunds.create", params, idempotency_key="t1:run1:refund")
    assert first.status == 201 and first.result["amount"] == "150.00"
    assert again.result == first.result and again.headers.get("idempotent-replayed") == "true"
    stats = state.stats()
    assert len(stats["refunds"]) == 1 and stats["refunds"][0]["note"] == "damaged"
    assert stats["idempotency"] == {"t1:run1:refund": 2} and stats["requests"]["refunds"] == 2


async def test_unknown_order_is_http_4xx_not_retryable(specs, bases, secrets) -> None:
    with pytest.raises(ConnectorError) as info:
        await call(specs, bases, secrets, "shopify", "refunds.create", {"order_id": 4242}, idempotency_key="k")
    err = info.value
    assert (err.name, err.status, err.retryable) == ("http_4xx", 404, False)
    assert "Not Found" in err.message


async def test_header_auth_rejected_with_wrong_token(specs, bases, secrets) -> None:
    with pytest.raises(ConnectorError) as info:
        await call(specs, bases, {**secrets, "shop_token": "shpat_wrong_value"}, "shopify", "orders.get", {"email": "a"})
    assert info.value.status == 401 and "Invalid API key" in info.value.message


async def test_stripe_bearer_form_body_and_idempotency(specs, bases, secrets, state) -> None:
    cust = await call(specs, bases, secrets, "stripe", "customers.search", {"email": "alice@example.com"})
    assert cust.result["customer_id"] == "cus_alice"
    charges = await call(specs, bases, secrets, "stripe", "charges.list", {"customer_id": "cus_alice", "limit": 3})
    assert charges.result["charge_id"] == "ch_alice_1001" and charges.result["amount"] == 15000
    assert len(charges.result["charges"]) == 1
    params = {"charge_id": "ch_alice_1001", "amount": 5000}
    refund = await call(specs, bases, secrets, "stripe", "refunds.create", params, idempotency_key="idem-1")
    replay = await call(specs, bases, secrets, "stripe", "refunds.create", params, idempotency_key="idem-1")
    assert refund.result == replay.result and refund.result["amount"] == 5000
    assert refund.assigned == {}
    assert [r["amount"] for r in state.stats()["refunds"]] == [5000]
    with pytest.raises(ConnectorError) as info:
        await call(specs, bases, secrets, "stripe", "refunds.create", {"charge_id": "ch_nope"}, idempotency_key="i2")
    assert info.value.status == 400 and "No such charge" in info.value.message


async def test_zendesk_basic_auth(specs, bases, secrets) -> None:
    created = await call(specs, bases, secrets, "zendesk", "tickets.create",
                         {"subject": "Help", "body": "Where is my order?", "email": "bob@example.com"},
                         idempotency_key="z1")
    assert created.status == 201 and created.result["status"] == "new"
    got = await call(specs, bases, secrets, "zendesk", "tickets.get", {"ticket_id": created.result["ticket_id"]})
    assert got.result["subject"] == "Help"
    with pytest.raises(ConnectorError) as info:
        await call(specs, bases, {**secrets, "zendesk_token": "wrong-token"}, "zendesk", "tickets.get", {"ticket_id": 1})
    assert info.value.status == 401


async def test_query_auth_and_http_step(shop) -> None:
    res = await execute_http(
        {"method": "POST", "url": shop.url + "/_control/echo", "query": {"q": "{{ inputs.q }}"},
         "headers": {"X-Trace": "{{ run.id }}"}, "body": {"email": "{{ inputs.email }}", "n": "{{ inputs.n }}"},
         "auth": {"type": "query", "name": "api_key", "value": "{{ secrets.key }}"},
         "expect_status": [200, 201], "extract": {"method": "$.method", "key": "$.query.api_key", "none": "$.nope"}},
        scope={"inputs": {"q": "x y", "email": "a@b.c", "n": 3}, "run": {"id": "r1"}},
        secrets={"key": "query-secret"}, timeout=5, allowed_hosts=LOOPBACK, assign={"echo.path": "$.path"})
    assert res.result == {"method": "POST", "key": "query-secret", "none": None}
    assert res.assigned == {"echo.path": "/_control/echo"}
    raw = await execute_http({"url": shop.url + "/_control/echo", "query": {"q": "{{ inputs.q }}"},
                              "headers": {"X-Trace": "{{ run.id }}"}},
                             scope={"inputs": {"q": "x y"}, "run": {"id": "r1"}}, secrets={}, timeout=5,
                             allowed_hosts=LOOPBACK)
    assert raw.result["query"] == {"q": "x y"} and raw.result["headers"]["x-trace"] == "r1"


async def test_templates_rendered_once(shop) -> None:
    res = await execute_http(
        {"method": "POST", "url": shop.url + "/_control/echo", "body": {"note": "{{ inputs.note }}"}},
        scope={"inputs": {"note": "{{ secrets.key }}"}}, secrets={"key": "never-expanded"}, timeout=5,
        allowed_hosts=LOOPBACK)
    assert "never-expanded" not in res.result["body"] and "{{ secrets.key }}" in res.result["body"]
    with pytest.raises(ConnectorError) as info:  # secrets are not allowed in an http body
        await execute_http({"method": "POST", "url": shop.url + "/_control/echo", "body": "{{ secrets.key }}"},
                           scope={}, secrets={"key": "s3cr3t-value"}, timeout=5, allowed_hosts=LOOPBACK)
    assert info.value.name == "connector"


async def test_non_json_body_is_text_and_expect_status(shop) -> None:
    res = await execute_http({"url": shop.url + "/_control/echo?format=text"}, scope={}, secrets={}, timeout=5,
                             allowed_hosts=LOOPBACK)
    assert res.result == "plain text reply"
    with pytest.raises(ConnectorError) as info:
        await execute_http({"url": shop.url + "/_control/echo", "expect_status": 201}, scope={}, secrets={},
                           timeout=5, allowed_hosts=LOOPBACK)
    assert info.value.name == "connector" and info.value.status == 200


async def test_inline_auth_credentials_rejected_in_http_step(shop) -> None:
    with pytest.raises(ConnectorError) as info:
        await execute_http({"url": shop.url + "/_control/echo", "auth": {"type": "bearer", "token": "literal"}},
                           scope={}, secrets={}, timeout=5, allowed_hosts=LOOPBACK)
    assert info.value.name == "validation"


@pytest.mark.parametrize(
    ("status", "retry_after", "name", "retryable", "expected_after"),
    [
        (500, None, "http_5xx", True, None),
        (503, "7", "http_5xx", True, 7.0),
        (429, "2.5", "http_4xx", True, 2.5),
        (408, None, "http_4xx", True, None),
        (400, None, "http_4xx", False, None),
        (403, None, "http_4xx", False, None),
    ],
)
async def test_status_mapping(specs, bases, secrets, fail, status, retry_after, name, retryable, expected_after) -> None:
    fail(route="orders", status=status, count=1, retry_after=retry_after)
    with pytest.raises(ConnectorError) as info:
        await call(specs, bases, secrets, "shopify", "orders.get", {"email": "alice@example.com"})
    err = info.value
    assert (err.name, err.status, err.retryable, err.retry_after) == (name, status, retryable, expected_after)
    ok = await call(specs, bases, secrets, "shopify", "orders.get", {"email": "alice@example.com"})
    assert ok.result["id"] == 1001  # only `count` requests fail


async def test_retry_after_http_date(specs, bases, secrets, fail) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    fail(route="orders", status=429, retry_after=format_datetime(when, usegmt=True))
    with pytest.raises(ConnectorError) as info:
        await call(specs, bases, secrets, "shopify", "orders.get", {"email": "alice@example.com"})
    assert 100 < info.value.retry_after <= 120


async def test_timeout_mapping(specs, bases, secrets, fail) -> None:
    fail(route="orders", delay_s=1.5)
    with pytest.raises(ConnectorError) as info:
        await call(specs, bases, secrets, "shopify", "orders.get", {"email": "a"}, timeout=0.3)
    assert info.value.name == "timeout" and info.value.retryable


async def test_connection_refused_mapping(specs, secrets) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectorError) as info:
        await execute_operation(specs["shopify"], "orders.get", {"email": "a"}, secrets=secrets, idempotency_key=None,
                                timeout=2, allowed_hosts=LOOPBACK, base_url_override=f"http://127.0.0.1:{port}")
    assert info.value.name == "connection"


async def test_unknown_operation_is_connector_error(specs, secrets) -> None:
    with pytest.raises(ConnectorError) as info:
        await execute_operation(specs["shopify"], "orders.delete", {}, secrets=secrets, idempotency_key=None,
                                timeout=1, allowed_hosts=LOOPBACK)
    assert info.value.name == "connector"


OAUTH = {
    "connector": "oauthdemo",
    "base_url": "{{ secrets.base }}",
    "auth": {"type": "oauth2_client_credentials", "token_url": "{{ secrets.base }}/oauth/token",
             "client_id": "{{ secrets.client_id }}", "client_secret": "{{ secrets.client_secret }}", "scope": "read"},
    "operations": {"me.get": {"method": "GET", "path": "/oauth/me", "response": {"client": "$.client_id"}}},
}


async def test_oauth2_token_fetched_once_and_cached(shop, state) -> None:
    spec = normalize_connector(OAUTH)
    secrets = {"base": shop.url, "client_id": "demo-client", "client_secret": "demo-secret"}
    for _ in range(3):
        res = await execute_operation(spec, "me.get", {}, secrets=secrets, idempotency_key=None, timeout=5,
                                      allowed_hosts=LOOPBACK)
        assert res.result == {"client": "demo-client"}
    assert state.stats()["requests"] == {"oauth_token": 1, "oauth_me": 3}
    with pytest.raises(ConnectorError) as info:  # a wrong secret never reuses the cached token
        await execute_operation(spec, "me.get", {}, secrets={**secrets, "client_secret": "wrong-secret"},
                                idempotency_key=None, timeout=5, allowed_hosts=LOOPBACK)
    assert info.value.status == 401 and "OAuth2 token request failed" in info.value.message
    assert "wrong-secret" not in info.value.message


async def test_secret_values_never_in_error_messages(shop, specs, bases, secrets, fail) -> None:
    # the server echoes the credential in its error body
    fail(route="orders", status=401, body={"errors": f"token {secrets['shop_token']} revoked"})
    with pytest.raises(ConnectorError) as info:
        await call(specs, bases, secrets, "shopify", "orders.get", {"email": "a"})
    assert secrets["shop_token"] not in info.value.message and "***" in info.value.message
    # a secret host name shows up in a blocked-address message
    with pytest.raises(ConnectorError) as info:
        await execute_http({"url": "http://{{ secrets.host }}:" + str(shop.port) + "/x"}, scope={},
                           secrets={"host": "localhost"}, timeout=5, allowed_hosts=[])
    assert "localhost" not in info.value.message and "***" in info.value.message
    # a secret in the URL path of a failing call
    with pytest.raises(ConnectorError) as info:
        await execute_http({"url": shop.url + "/missing/{{ secrets.key }}/x"}, scope={},
                           secrets={"key": "path secret/value"}, timeout=5, allowed_hosts=LOOPBACK)
    assert info.value.status == 404
    assert "path secret" not in info.value.message and "path%20secret" not in info.value.message


def test_redact() -> None:
    assert redact("a sk_live_123 b sk%2Flive", {"k": "sk_live_123", "j": "sk/live", "short": "ab"}) == "a *** b ***"


async def test_transport_override_is_used() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"seen": str(request.url)})
    res = await execute_http({"url": "http://10.0.0.1/x"}, scope={}, secrets={}, timeout=1, allowed_hosts=[],
                             transport=httpx.MockTransport(handler))
    assert res.result == {"seen": "http://10.0.0.1/x"}

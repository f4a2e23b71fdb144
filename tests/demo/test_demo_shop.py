"""Demo shop wire formats, failure injection and ThreadedServer, over real loopback HTTP."""
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from demo.server import ThreadedServer
from demo.shop import ShopState, create_shop_app, demo_base_urls, run_shop

SHOP = "/admin/api/2024-01"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with run_shop(0, ShopState(shopify_token="shpat_test")) as srv:
        yield srv


@pytest.fixture
def client(server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as c:
        c.post("/_control/reset").raise_for_status()
        yield c


def test_threaded_server_serves_any_app() -> None:
    app = FastAPI()
    app.get("/ping")(lambda: {"pong": True})
    with ThreadedServer(app) as srv:
        assert srv.url.startswith("http://127.0.0.1:") and srv.port > 0
        assert httpx.get(srv.url + "/ping").json() == {"pong": True}
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/ping", timeout=1)


def test_shopify_orders_and_auth(client: httpx.Client) -> None:
    denied = client.get(SHOP + "/orders.json", params={"email": "alice@example.com"})
    assert denied.status_code == 401 and "Invalid API key or access token" in denied.json()["errors"]
    auth = {"X-Shopify-Access-Token": "shpat_test"}
    orders = client.get(SHOP + "/orders.json", params={"email": "bob@example.com", "status": "any"}, headers=auth)
    assert orders.json()["orders"][0] == {**orders.json()["orders"][0], "id": 1002, "total_price": "40.00"}
    assert client.get(SHOP + "/orders/1003.json", headers=auth).json()["order"]["total_price"] == "99.99"
    assert client.get(SHOP + "/orders/1.json", headers=auth).json() == {"errors": "Not Found"}


def test_shopify_refund_replay_and_stats(client: httpx.Client) -> None:
    auth = {"X-Shopify-Access-Token": "shpat_test", "Idempotency-Key": "k1"}
    one = client.post(SHOP + "/orders/1001/refunds.json", json={"refund": {"note": "n"}}, headers=auth)
    two = client.post(SHOP + "/orders/1001/refunds.json", json={"refund": {"note": "n"}}, headers=auth)
    assert one.status_code == two.status_code == 201 and one.json() == two.json()
    stats = client.get("/_control/stats").json()
    assert stats["requests"]["refunds"] == 2 and stats["idempotency"] == {"k1": 2} and len(stats["refunds"]) == 1
    missing = client.post(SHOP + "/orders/999/refunds.json", json={"refund": {}}, headers={**auth, "Idempotency-Key": "k2"})
    assert missing.status_code == 404


def test_stripe_shapes(client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer sk_test_demo"}
    found = client.get("/v1/customers/search", params={"query": "email:'alice@example.com'"}, headers=auth).json()
    assert found["data"][0]["id"] == "cus_alice"
    charges = client.get("/v1/charges", params={"customer": "cus_alice"}, headers=auth).json()
    assert charges["object"] == "list" and charges["data"][0]["amount"] == 15000
    bad = client.post("/v1/refunds", data={"charge": "ch_x"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert client.post("/v1/refunds", data={"charge": "ch_alice_1001"}).status_code == 401
    full = client.post("/v1/refunds", data={"charge": "ch_alice_1001"}, headers=auth).json()
    assert full["amount"] == 15000 and full["status"] == "succeeded"
    again = client.post("/v1/refunds", data={"charge": "ch_alice_1001"}, headers=auth)
    assert again.json()["error"]["code"] == "amount_too_large"


def test_zendesk_tickets(client: httpx.Client) -> None:
    auth = ("agent@example.com/token", "zd_demo_token")
    created = client.post("/api/v2/tickets.json", json={"ticket": {"subject": "s", "comment": {"body": "b"}}}, auth=auth)
    assert created.status_code == 201
    tid = created.json()["ticket"]["id"]
    assert client.get(f"/api/v2/tickets/{tid}.json", auth=auth).json()["ticket"]["description"] == "b"
    assert client.get(f"/api/v2/tickets/{tid}.json", auth=("x", "y")).status_code == 401
    assert client.post("/api/v2/tickets.json", json={"ticket": {}}, auth=auth).status_code == 422


def test_failure_injection_count_retry_after_and_reset(client: httpx.Client) -> None:
    auth = {"X-Shopify-Access-Token": "shpat_test"}
    client.post("/_control/fail", json={"route": "orders", "status": 503, "count": 2, "retry_after": 3}).raise_for_status()
    statuses = [client.get(SHOP + "/orders.json", headers=auth) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 503, 200]
    assert statuses[0].headers["retry-after"] == "3"
    client.post("/_control/fail", json={"route": "orders", "status": 500, "count": 5})
    client.post("/_control/reset")
    assert client.get(SHOP + "/orders.json", headers=auth).status_code == 200
    assert client.get("/_control/stats").json()["requests"] == {"orders": 1}


def test_delay_forces_client_timeout(client: httpx.Client) -> None:
    client.post("/_control/fail", json={"route": "orders", "delay_s": 1.0})
    with pytest.raises(httpx.ReadTimeout):
        client.get(SHOP + "/orders.json", headers={"X-Shopify-Access-Token": "shpat_test"}, timeout=0.2)


def test_oauth_token_endpoint(client: httpx.Client) -> None:
    form = {"grant_type": "client_credentials", "client_id": "demo-client", "client_secret": "demo-secret"}
    token = client.post("/oauth/token", data=form).json()["access_token"]
    assert client.get("/oauth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.post("/oauth/token", data={**form, "client_secret": "no"}).status_code == 401
    assert client.get("/oauth/me", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_helpers() -> None:
    assert demo_base_urls("http://h:1/") == {"shopify": "http://h:1" + SHOP, "stripe": "http://h:1", "zendesk": "http://h:1"}
    assert create_shop_app().state.shop.orders[1001]["total_price"] == "150.00"

"""A local demo shop speaking (a subset of) Shopify's, Stripe's and Zendesk's wire formats.

Used by ``flywheel dev`` and as the loopback server of the tests. ``/_control/*`` (no auth)
shows request counts, injects failures and resets the state; ``/_control/echo`` and
``/_control/redirect`` help test auth, headers and redirects.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from demo.server import ThreadedServer

SHOPIFY_PREFIX = "/admin/api/2024-01"
SEED_ORDERS = [
    ("alice@example.com", 1001, "150.00", "USD"),
    ("bob@example.com", 1002, "40.00", "USD"),
    ("carol@example.com", 1003, "99.99", "USD"),
]


@dataclass
class Failure:
    """The next ``count`` requests to a route fail with ``status`` (after ``delay_s``)."""

    status: int | None
    count: int = 1
    retry_after: str | None = None
    delay_s: float = 0.0
    body: Any = None


class ShopState:
    """Seeded, thread-safe state of the demo shop."""

    def __init__(self, *, shopify_token: str = "shpat_demo", stripe_key: str = "sk_test_demo",
                 zendesk_email: str = "agent@example.com", zendesk_token: str = "zd_demo_token",
                 oauth_client_id: str = "demo-client", oauth_client_secret: str = "demo-secret",
                 oauth_expires_in: int = 3600) -> None:
        self.shopify_token = shopify_token
        self.stripe_key = stripe_key
        self.zendesk_email = zendesk_email
        self.zendesk_token = zendesk_token
        self.oauth_client_id = oauth_client_id
        self.oauth_client_secret = oauth_client_secret
        self.oauth_expires_in = oauth_expires_in
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Back to the seeded data; counters, failures and idempotency records cleared."""
        with self.lock:
            self.orders = {oid: {"id": oid, "name": f"#{oid}", "email": email, "total_price": total,
                                 "currency": cur, "financial_status": "paid",
                                 "created_at": "2024-05-01T10:00:00Z"}
                           for email, oid, total, cur in SEED_ORDERS}
            self.customers = {"cus_alice": {"id": "cus_alice", "object": "customer",
                                            "email": "alice@example.com", "name": "Alice Example"}}
            self.charges = {"ch_alice_1001": {"id": "ch_alice_1001", "object": "charge", "amount": 15000,
                                              "amount_refunded": 0, "currency": "usd", "customer": "cus_alice",
                                              "status": "succeeded", "metadata": {"order_id": "1001"}}}
            self.refunds: list[dict[str, Any]] = []
            self.tickets: dict[int, dict[str, Any]] = {}
            self.requests: Counter[str] = Counter()
            self.idempotency: Counter[str] = Counter()
            self.replies: dict[tuple[str, str], tuple[int, Any]] = {}
            self.failures: dict[str, Failure] = {}
            self.tokens: set[str] = set()
            self._ids = itertools.count(9001)

    def next_id(self) -> int:
        return next(self._ids)

    def stats(self) -> dict[str, Any]:
        """Request counts per route, idempotency key counts, recorded refunds and tickets."""
        with self.lock:
            return {"requests": dict(self.requests), "idempotency": dict(self.idempotency),
                    "refunds": copy.deepcopy(self.refunds), "tickets": copy.deepcopy(list(self.tickets.values()))}

    def fail(self, route: str, failure: Failure) -> None:
        with self.lock:
            self.failures[route] = failure

    def take_failure(self, route: str) -> Failure | None:
        """Count a request to ``route`` and consume one injected failure, if any."""
        with self.lock:
            self.requests[route] += 1
            failure = self.failures.get(route)
            if failure is None or failure.count <= 0:
                return None
            failure.count -= 1
            return failure


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeError):
        return None
    return user, password


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


def _stripe_error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": "invalid_request_error", "message": message, **extra}}, status)


def create_shop_app(state: ShopState | None = None) -> FastAPI:
    """The demo shop ASGI app; its state is ``app.state.shop``."""
    state = state or ShopState()
    app = FastAPI(title="Flywheel demo shop", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.shop = state

    async def gate(route: str) -> Response | None:
        failure = state.take_failure(route)
        if failure is None:
            return None
        if failure.delay_s:
            await asyncio.sleep(failure.delay_s)
        if not failure.status:
            return None
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
        body = failure.body if failure.body is not None else {"error": {"message": f"injected failure {failure.status}"}}
        return JSONResponse(body, failure.status, headers=headers)

    def replay(route: str, key: str | None) -> JSONResponse | None:
        if not key:
            return None
        with state.lock:
            state.idempotency[key] += 1
            stored = state.replies.get((route, key))
        if stored is None:
            return None
        return JSONResponse(stored[1], stored[0], headers={"Idempotent-Replayed": "true"})

    def remember(route: str, key: str | None, status: int, body: Any) -> JSONResponse:
        if key:
            with state.lock:
                state.replies[(route, key)] = (status, body)
        return JSONResponse(body, status)

    # ---- Shopify -------------------------------------------------------------------------
    def shopify_denied(request: Request) -> JSONResponse | None:
        if request.headers.get("x-shopify-access-token") == state.shopify_token:
            return None
        return JSONResponse({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}, 401)

    @app.get(SHOPIFY_PREFIX + "/orders.json")
    async def shopify_orders(request: Request) -> Response:
        if (early := await gate("orders")) or (early := shopify_denied(request)):
            return early
        email = request.query_params.get("email")
        with state.lock:
            orders = [copy.deepcopy(o) for o in sorted(state.orders.values(), key=lambda o: -o["id"])
                      if not email or o["email"].lower() == email.lower()]
        return JSONResponse({"orders": orders})

    @app.get(SHOPIFY_PREFIX + "/orders/{order_id}.json")
    async def shopify_order(order_id: str, request: Request) -> Response:
        if (early := await gate("order")) or (early := shopify_denied(request)):
            return early
        order = state.orders.get(int(order_id)) if order_id.isdigit() else None
        if order is None:
            return JSONResponse({"errors": "Not Found"}, 404)
        return JSONResponse({"order": copy.deepcopy(order)})

    @app.post(SHOPIFY_PREFIX + "/orders/{order_id}/refunds.json")
    async def shopify_refund(order_id: str, request: Request) -> Response:
        if (early := await gate("refunds")) or (early := shopify_denied(request)):
            return early
        key = request.headers.get("idempotency-key")
        if replayed := replay("refunds", key):
            return replayed
        order = state.orders.get(int(order_id)) if order_id.isdigit() else None
        if order is None:
            return JSONResponse({"errors": "Not Found"}, 404)
        try:
            data = (await request.json()).get("refund") or {}
        except (ValueError, AttributeError):
            return JSONResponse({"errors": {"refund": ["Required parameter missing or invalid"]}}, 400)
        transactions = data.get("transactions") or [{"amount": order["total_price"]}]
        refund = {"id": state.next_id(), "order_id": order["id"], "note": data.get("note"),
                  "created_at": "2024-05-02T10:00:00Z",
                  "transactions": [{"id": state.next_id(), "kind": "refund", "status": "success",
                                    "amount": str(t.get("amount") or order["total_price"]),
                                    "currency": order["currency"]} for t in transactions]}
        with state.lock:
            state.refunds.append({"provider": "shopify", "idempotency_key": key, **copy.deepcopy(refund)})
        return remember("refunds", key, 201, {"refund": refund})

    # ---- Stripe --------------------------------------------------------------------------
    def stripe_denied(request: Request) -> JSONResponse | None:
        basic = _basic(request)
        if _bearer(request) == state.stripe_key or (basic and basic[0] == state.stripe_key):
            return None
        return _stripe_error(401, "Invalid API Key provided.")

    @app.get("/v1/customers/search")
    async def stripe_customers(request: Request) -> Response:
        if (early := await gate("customers")) or (early := stripe_denied(request)):
            return early
        match = re.fullmatch(r"\s*email\s*:\s*'([^']*)'\s*", request.query_params.get("query", ""))
        if not match:
            return _stripe_error(400, "Invalid search query.", param="query")
        found = [copy.deepcopy(c) for c in state.customers.values() if c["email"].lower() == match.group(1).lower()]
        return JSONResponse({"object": "search_result", "data": found, "has_more": False, "url": "/v1/customers/search"})

    @app.get("/v1/charges")
    async def stripe_charges(request: Request) -> Response:
        if (early := await gate("charges")) or (early := stripe_denied(request)):
            return early
        customer = request.query_params.get("customer")
        limit = int(request.query_params.get("limit") or 10)
        found = [copy.deepcopy(c) for c in state.charges.values() if not customer or c["customer"] == customer]
        return JSONResponse({"object": "list", "data": found[:limit], "has_more": False, "url": "/v1/charges"})

    @app.post("/v1/refunds")
    async def stripe_refund(request: Request) -> Response:
        if (early := await gate("stripe_refunds")) or (early := stripe_denied(request)):
            return early
        key = request.headers.get("idempotency-key")
        if replayed := replay("stripe_refunds", key):
            return replayed
        form = await request.form()
        charge_id = form.get("charge")
        if not charge_id:
            return _stripe_error(400, "Must provide charge or payment_intent.", param="charge")
        with state.lock:
            charge = state.charges.get(str(charge_id))
            if charge is None:
                return _stripe_error(400, f"No such charge: '{charge_id}'", param="charge", code="resource_missing")
            remaining = charge["amount"] - charge["amount_refunded"]
            amount = int(form.get("amount") or remaining)
            if amount <= 0 or amount > remaining:
                return _stripe_error(400, "Refund amount is greater than the unrefunded amount.",
                                     param="amount", code="amount_too_large")
            charge["amount_refunded"] += amount
            refund = {"id": f"re_{state.next_id()}", "object": "refund", "amount": amount, "charge": charge["id"],
                      "currency": charge["currency"], "status": "succeeded"}
            state.refunds.append({"provider": "stripe", "idempotency_key": key, **refund})
        return remember("stripe_refunds", key, 200, refund)

    # ---- Zendesk -------------------------------------------------------------------------
    def zendesk_denied(request: Request) -> JSONResponse | None:
        if _basic(request) == (f"{state.zendesk_email}/token", state.zendesk_token):
            return None
        return JSONResponse({"error": "Couldn't authenticate you"}, 401)

    @app.post("/api/v2/tickets.json")
    async def zendesk_create(request: Request) -> Response:
        if (early := await gate("tickets")) or (early := zendesk_denied(request)):
            return early
        key = request.headers.get("idempotency-key")
        if replayed := replay("tickets", key):
            return replayed
        try:
            data = (await request.json()).get("ticket") or {}
        except (ValueError, AttributeError):
            data = {}
        body = (data.get("comment") or {}).get("body") or data.get("description")
        if not body:
            return JSONResponse({"error": "RecordInvalid", "description": "Record validation errors",
                                 "details": {"description": [{"description": "Description: cannot be blank"}]}}, 422)
        ticket_id = state.next_id()
        ticket = {"id": ticket_id, "url": f"/api/v2/tickets/{ticket_id}.json", "subject": data.get("subject"),
                  "description": body, "status": "new", "priority": data.get("priority"),
                  "requester": data.get("requester"), "created_at": "2024-05-02T10:00:00Z"}
        with state.lock:
            state.tickets[ticket_id] = ticket
        return remember("tickets", key, 201, {"ticket": copy.deepcopy(ticket)})

    @app.get("/api/v2/tickets/{ticket_id}.json")
    async def zendesk_get(ticket_id: str, request: Request) -> Response:
        if (early := await gate("ticket")) or (early := zendesk_denied(request)):
            return early
        ticket = state.tickets.get(int(ticket_id)) if ticket_id.isdigit() else None
        if ticket is None:
            return JSONResponse({"error": "RecordNotFound", "description": "Not found"}, 404)
        return JSONResponse({"ticket": copy.deepcopy(ticket)})

    # ---- OAuth2 client credentials -------------------------------------------------------
    @app.post("/oauth/token")
    async def oauth_token(request: Request) -> Response:
        if early := await gate("oauth_token"):
            return early
        form = await request.form()
        client = _basic(request) or (form.get("client_id"), form.get("client_secret"))
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if tuple(client) != (state.oauth_client_id, state.oauth_client_secret):
            return JSONResponse({"error": "invalid_client"}, 401)
        token = f"tok_{state.next_id()}"
        with state.lock:
            state.tokens.add(token)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": state.oauth_expires_in,
                             "scope": form.get("scope")})

    @app.get("/oauth/me")
    async def oauth_me(request: Request) -> Response:
        if early := await gate("oauth_me"):
            return early
        token = _bearer(request)
        if token not in state.tokens:
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse({"client_id": state.oauth_client_id, "token": token})

    # ---- Control -------------------------------------------------------------------------
    @app.get("/_control/stats")
    async def control_stats() -> dict[str, Any]:
        return state.stats()

    @app.post("/_control/fail")
    async def control_fail(request: Request) -> dict[str, Any]:
        data = await request.json()
        retry_after = data.get("retry_after")
        state.fail(str(data["route"]), Failure(
            status=data.get("status"), count=int(data.get("count", 1)),
            retry_after=None if retry_after is None else str(retry_after),
            delay_s=float(data.get("delay_s") or 0), body=data.get("body")))
        return {"ok": True}

    @app.post("/_control/reset")
    async def control_reset() -> dict[str, Any]:
        state.reset()
        return {"ok": True}

    @app.api_route("/_control/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def control_echo(request: Request) -> Response:
        if early := await gate("echo"):
            return early
        raw = await request.body()
        if request.query_params.get("format") == "text":
            return PlainTextResponse("plain text reply")
        return JSONResponse({"method": request.method, "path": request.url.path,
                             "query": dict(request.query_params.multi_items()),
                             "headers": dict(request.headers), "body": raw.decode(errors="replace")})

    @app.api_route("/_control/redirect", methods=["GET", "POST"])
    async def control_redirect(to: str, status: int = 302, hops: int = 0) -> Response:
        state.take_failure("redirect")
        if hops > 0:
            url = _redirect_url(to=to, status=status, hops=hops - 1)
            return RedirectResponse(url, status_code=status)
        return RedirectResponse(to, status_code=status)

    return app


def _redirect_url(**params: Any) -> str:
    """Relative URL of /_control/redirect with ``params`` (for redirect chains)."""
    return "/_control/redirect?" + urlencode(params)


def demo_base_urls(url: str) -> dict[str, str]:
    """``base_url_override`` of each built-in connector for a shop served at ``url``."""
    url = url.rstrip("/")
    return {"shopify": url + SHOPIFY_PREFIX, "stripe": url, "zendesk": url}


def demo_secrets(state: ShopState) -> dict[str, str]:
    """Tenant secrets that make the built-in connectors work against the demo shop."""
    return {"shop_domain": "demo-shop.local", "shop_token": state.shopify_token, "stripe_key": state.stripe_key,
            "zendesk_subdomain": "demo", "zendesk_email": state.zendesk_email, "zendesk_token": state.zendesk_token}


def run_shop(port: int = 0, state: ShopState | None = None, host: str = "127.0.0.1") -> ThreadedServer:
    """Start the demo shop in a background thread; ``.app.state.shop`` is its ShopState."""
    return ThreadedServer(create_shop_app(state), host=host, port=port).start()

"""Sending one HTTP request: guarded client, manual redirects, status and exception mapping."""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from connectors.errors import ConnectorError
from connectors.netguard import guarded_transport

MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
ALWAYS_SENSITIVE = ("authorization", "proxy-authorization", "cookie")
Expect = int | list[int] | tuple[int, ...] | None


def make_client(*, timeout: float, allowed_hosts: Iterable[str],
                transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An AsyncClient that never follows redirects itself and ignores proxy env variables."""
    return httpx.AsyncClient(
        transport=transport or guarded_transport(allowed_hosts),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )


def _describe(request: httpx.Request) -> str:
    return f"{request.method} {request.url.copy_with(query=None)}"


def _redirect(request: httpx.Request, response: httpx.Response, sensitive: set[str]) -> httpx.Request:
    location = response.headers.get("location", "")
    url = request.url.join(location)
    if url.scheme not in ("http", "https"):
        raise ConnectorError("connector", f"{_describe(request)} redirected to unsupported scheme {url.scheme!r}")
    method, content = request.method, request.content
    headers = httpx.Headers(request.headers)
    if response.status_code == 303 and method != "HEAD" or response.status_code in (301, 302) and method == "POST":
        method, content = "GET", b""
        for name in ("content-length", "content-type", "transfer-encoding"):
            headers.pop(name, None)
    if (url.scheme, url.host, url.port) != (request.url.scheme, request.url.host, request.url.port):
        for name in sensitive:
            headers.pop(name, None)
    headers.pop("host", None)
    return httpx.Request(method, url, headers=headers, content=content or None)


async def send(client: httpx.AsyncClient, request: httpx.Request, *,
               sensitive_headers: Iterable[str] = ()) -> httpx.Response:
    """Send, following at most MAX_REDIRECTS redirects (each hop through the same guard).

    Credentials headers are dropped when a redirect leaves the original origin. Transport
    failures become ConnectorError ``timeout`` or ``connection``.
    """
    sensitive = {h.lower() for h in (*ALWAYS_SENSITIVE, *sensitive_headers)}
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = await client.send(request)
        except httpx.TimeoutException as exc:
            raise ConnectorError("timeout", f"{_describe(request)} timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise ConnectorError("connection", f"{_describe(request)} failed: {exc or type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise ConnectorError("connector", f"{_describe(request)}: {exc}") from None
        if response.status_code not in REDIRECT_STATUSES or "location" not in response.headers:
            return response
        request = _redirect(request, response, sensitive)
    raise ConnectorError("connector", f"{_describe(request)}: more than {MAX_REDIRECTS} redirects")


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def parse_body(response: httpx.Response) -> Any:
    """JSON body when it is JSON (or unlabelled and parses), else text; None when empty."""
    if not response.content:
        return None
    content_type = response.headers.get("content-type", "")
    if "json" in content_type or not content_type:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    return response.text


def _summary(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("error", "errors", "message", "description", "detail"):
            if key in body:
                inner = body[key]
                if isinstance(inner, dict) and "message" in inner:
                    inner = inner["message"]
                return inner if isinstance(inner, str) else json.dumps(inner)[:300]
        return json.dumps(body)[:300]
    return str(body or "")[:300]


def check_status(response: httpx.Response, body: Any, expect: Expect = None) -> None:
    """Raise a named ConnectorError unless the status is expected (default: any 2xx)."""
    status = response.status_code
    if expect is None:
        ok = 200 <= status < 300
    else:
        ok = status in ([expect] if isinstance(expect, int) else list(expect))
    if ok:
        return
    name = "http_5xx" if status >= 500 else "http_4xx" if status >= 400 else "connector"
    detail = _summary(body)
    raise ConnectorError(
        name,
        f"{_describe(response.request)} returned HTTP {status}" + (f": {detail}" if detail else ""),
        status=status,
        retry_after=retry_after(response.headers.get("retry-after")),
    )

"""The generic HTTP executor: connector operations and ``http`` steps."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from connectors._render import render
from connectors.auth import forget_token, resolve_auth
from connectors.client import Expect, check_status, make_client, parse_body, send
from connectors.errors import ConnectorError
from connectors.jsonpaths import map_paths
from connectors.spec import normalize_auth

REDACTED = "***"
MIN_REDACT_LEN = 4


@dataclass
class CallResult:
    """Outcome of one call: HTTP status, mapped result, flat ``assign`` values, response headers."""

    status: int
    result: Any
    assigned: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    query: dict[str, Any]
    body: Any
    body_format: str
    auth: dict[str, Any] | None
    expect: Expect = None


def redact(text: str, secrets: Mapping[str, Any] | Iterable[Any]) -> str:
    """``text`` with every secret value (and its URL-encoded form) replaced by ***."""
    values = secrets.values() if isinstance(secrets, Mapping) else secrets
    forms = {form for v in values if v is not None and len(str(v)) >= MIN_REDACT_LEN
             for form in (str(v), quote(str(v), safe=""), quote(str(v)))}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def _form(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten a body into form fields (Stripe style: a[b]=1, c[0]=x); None is omitted."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        if value is None:
            return []
        return [(prefix, _scalar(value))]
    out = []
    for key, item in items:
        out += _form(item, f"{prefix}[{key}]" if prefix else str(key))
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query(query: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for key, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                pairs.append((str(key), _scalar(item)))
    return pairs


def _join(base_url: str, path: str) -> str:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConnectorError("connector", "base URL must be an http(s) URL")
    return base_url.rstrip("/") + "/" + str(path or "").lstrip("/") if path else base_url


def _build(client: httpx.AsyncClient, req: _Request, auth_headers: dict, auth_query: dict) -> httpx.Request:
    headers = {str(k): _scalar(v) for k, v in req.headers.items() if v is not None}
    headers.update(auth_headers)
    params = _query({**req.query, **auth_query})
    url = httpx.URL(req.url)
    if params:
        url = url.copy_merge_params(params)
    kwargs: dict[str, Any] = {}
    if isinstance(req.body, (str, bytes)):
        kwargs["content"] = req.body
    elif req.body is not None and req.body_format == "form":
        kwargs["data"] = dict(_form(req.body))
    elif req.body is not None:
        kwargs["json"] = req.body
    return client.build_request(req.method.upper(), url, headers=headers, **kwargs)


async def _send(req: _Request, *, secrets: Mapping[str, Any], timeout: float,
                allowed_hosts: Iterable[str], transport: httpx.AsyncBaseTransport | None
                ) -> tuple[httpx.Response, Any]:
    """Authenticate, send, check the status; every error message has credentials redacted."""
    sensitive: list[str] = list(secrets.values())
    try:
        async with make_client(timeout=timeout, allowed_hosts=allowed_hosts, transport=transport) as client:
            parts = await resolve_auth(req.auth, client)
            sensitive += parts.values
            try:
                request = _build(client, req, parts.headers, parts.query)
            except (httpx.HTTPError, ValueError, TypeError) as exc:
                raise ConnectorError("connector", f"invalid request: {exc}") from None
            response = await send(client, request, sensitive_headers=parts.headers)
            body = parse_body(response)
            if response.status_code == 401:
                forget_token(req.auth)
            check_status(response, body, req.expect)
            return response, body
    except ConnectorError as exc:
        raise exc.with_message(redact(exc.message, sensitive)) from None


def _result(response: httpx.Response, body: Any, mapping: Mapping[str, str] | None,
            assign: Mapping[str, str] | None) -> CallResult:
    if (mapping or assign) and body is not None and not isinstance(body, (dict, list)):
        raise ConnectorError("connector", f"response of {response.request.method} is not JSON; cannot map it")
    return CallResult(
        status=response.status_code,
        result=map_paths(mapping, body) if mapping else body,
        assigned=map_paths(assign, body) if assign else {},
        headers=dict(response.headers.items()),
    )


async def execute_operation(
    spec: Mapping[str, Any],
    operation: str,
    params: Mapping[str, Any],
    *,
    secrets: Mapping[str, Any],
    idempotency_key: str | None,
    timeout: float,
    allowed_hosts: Iterable[str],
    base_url_override: str | None = None,
    assign: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CallResult:
    """Run one operation of a normalized connector spec (rendered once with params + secrets)."""
    try:
        op = spec["operations"][operation]
    except (KeyError, TypeError):
        raise ConnectorError("connector", f"connector {spec.get('connector')!r} has no operation {operation!r}") from None
    try:
        parts = render(
            {"base_url": base_url_override or spec["base_url"], "path": op["path"], "query": op.get("query") or {},
             "headers": op.get("headers") or {}, "body": op.get("body"), "auth": spec.get("auth")},
            {"params": dict(params or {}), "secrets": dict(secrets)},
        )
        headers = dict(parts["headers"])
        if op.get("idempotency_header") and idempotency_key:
            headers[op["idempotency_header"]] = idempotency_key
        req = _Request(op["method"], _join(parts["base_url"], parts["path"]), headers, parts["query"],
                       parts["body"], op.get("body_format") or spec.get("body_format") or "json", parts["auth"])
        response, body = await _send(req, secrets=secrets, timeout=timeout, allowed_hosts=allowed_hosts,
                                     transport=transport)
        return _result(response, body, op.get("response"), assign)
    except ConnectorError as exc:
        raise exc.with_message(redact(exc.message, secrets)) from None


async def execute_http(
    request: Mapping[str, Any],
    *,
    scope: Mapping[str, Any],
    secrets: Mapping[str, Any],
    timeout: float,
    allowed_hosts: Iterable[str],
    assign: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CallResult:
    """Run an ``http`` step. Secrets may appear in url, headers, query and auth only.

    ``result`` is the ``extract`` mapping (or the parsed body); ``assign`` as in execute_operation.
    """
    try:
        normalize_auth(request.get("auth"), "http.auth")
        with_secrets = render(
            {k: request.get(k) for k in ("url", "headers", "query", "auth")},
            {**scope, "secrets": dict(secrets)},
        )
        plain = render({"method": request.get("method") or "GET", "body": request.get("body")}, scope)
        headers = dict(with_secrets["headers"] or {})
        form = any(k.lower() == "content-type" and "form-urlencoded" in str(v) for k, v in headers.items())
        req = _Request(str(plain["method"]), _join(with_secrets["url"], ""), headers,
                       dict(with_secrets["query"] or {}), plain["body"], "form" if form else "json",
                       with_secrets["auth"], request.get("expect_status"))
        response, body = await _send(req, secrets=secrets, timeout=timeout, allowed_hosts=allowed_hosts,
                                     transport=transport)
        return _result(response, body, request.get("extract"), assign)
    except ConnectorError as exc:
        raise exc.with_message(redact(exc.message, secrets)) from None

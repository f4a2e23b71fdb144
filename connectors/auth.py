"""Applying a rendered auth object: header, query, bearer, basic, oauth2_client_credentials."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.client import check_status, parse_body, send
from connectors.errors import ConnectorError

EXPIRY_MARGIN_S = 30.0
DEFAULT_EXPIRES_IN_S = 3600.0


@dataclass
class AuthParts:
    """What auth adds to a request; ``values`` are credentials to redact from messages."""

    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)


_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_locks: dict[tuple[str, str, str], asyncio.Lock] = {}


def _token_key(auth: Mapping[str, Any]) -> tuple[str, str, str]:
    # The secret's hash is part of the key so a wrong secret never gets a cached token.
    digest = hashlib.sha256(str(auth["client_secret"]).encode()).hexdigest()
    return str(auth["token_url"]), str(auth["client_id"]), digest


def clear_token_cache() -> None:
    """Forget every cached OAuth2 token."""
    _tokens.clear()


def forget_token(auth: Mapping[str, Any] | None) -> None:
    """Drop the cached token of ``auth`` (after a 401, so the next attempt fetches a new one)."""
    if auth and auth.get("type") == "oauth2_client_credentials":
        _tokens.pop(_token_key(auth), None)


async def _fetch_token(auth: Mapping[str, Any], client: httpx.AsyncClient) -> tuple[str, float]:
    form = {"grant_type": "client_credentials", "client_id": auth["client_id"],
            "client_secret": auth["client_secret"]}
    if auth.get("scope"):
        form["scope"] = auth["scope"]
    request = client.build_request("POST", str(auth["token_url"]), data=form,
                                   headers={"Accept": "application/json"})
    response = await send(client, request)
    body = parse_body(response)
    try:
        check_status(response, body)
    except ConnectorError as exc:
        raise exc.with_message(f"OAuth2 token request failed: {exc.message}") from None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise ConnectorError("connector", "OAuth2 token response has no access_token")
    try:
        expires_in = float(body.get("expires_in") or DEFAULT_EXPIRES_IN_S)
    except (TypeError, ValueError):
        expires_in = DEFAULT_EXPIRES_IN_S
    return token, time.monotonic() + max(0.0, expires_in - EXPIRY_MARGIN_S)


async def oauth2_token(auth: Mapping[str, Any], client: httpx.AsyncClient) -> str:
    """A client-credentials token, cached per (token_url, client_id) until it expires."""
    key = _token_key(auth)
    async with _locks.setdefault(key, asyncio.Lock()):
        cached = _tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        token, expires_at = await _fetch_token(auth, client)
        _tokens[key] = (token, expires_at)
        return token


async def resolve_auth(auth: Mapping[str, Any] | None, client: httpx.AsyncClient) -> AuthParts:
    """Headers/query parameters for a rendered auth object (None -> nothing)."""
    if not auth:
        return AuthParts()
    kind = auth.get("type")
    if kind == "header":
        value = str(auth["value"])
        return AuthParts(headers={str(auth["name"]): value}, values=[value])
    if kind == "query":
        value = str(auth["value"])
        return AuthParts(query={str(auth["name"]): value}, values=[value])
    if kind == "bearer":
        token = str(auth["token"])
        return AuthParts(headers={"Authorization": f"Bearer {token}"}, values=[token])
    if kind == "basic":
        raw = f"{auth['username']}:{auth['password']}".encode()
        encoded = base64.b64encode(raw).decode()
        return AuthParts(headers={"Authorization": f"Basic {encoded}"},
                         values=[encoded, str(auth["password"])])
    if kind == "oauth2_client_credentials":
        token = await oauth2_token(auth, client)
        return AuthParts(headers={"Authorization": f"Bearer {token}"}, values=[token])
    raise ConnectorError("connector", f"unknown auth type {kind!r}")

"""FastAPI dependencies: settings, engine/session, the calling tenant, the secret box, Temporal."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from api.errors import Unauthorized, Unavailable
from db.engine import make_engine, session_scope
from db.models import Tenant
from db.tenants import tenant_for_key
from security import SecurityError
from security.secrets import SecretBox
from settings import Settings

_engine_lock = threading.Lock()


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def ensure_engine(app: Any) -> Engine:
    """The app's engine, created (with its tables) on first use."""
    with _engine_lock:
        engine = getattr(app.state, "engine", None)
        if engine is None:
            engine = make_engine(app.state.settings.resolved_database_url())
            app.state.engine = engine
        return engine


def get_session(request: Request) -> Iterator[Session]:
    """A database session for one request."""
    with session_scope(ensure_engine(request.app)) as session:
        yield session


def api_key_from(request: Request) -> str | None:
    """The API key of `Authorization: Bearer fw_...` or `X-API-Key`, if any."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = request.headers.get("x-api-key", "").strip()
    return key or None


def current_tenant(request: Request, session: Session = Depends(get_session)) -> Tenant:
    """The tenant owning the request's API key; 401 when missing or unknown."""
    key = api_key_from(request)
    if key is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer fw_...' or 'X-API-Key'")
    tenant = tenant_for_key(session, key)
    if tenant is None:
        raise Unauthorized("invalid API key")
    return tenant


def get_secret_box(request: Request) -> SecretBox:
    """The SecretBox of settings.secret_keys (cached on the app); 503 when no keys are configured."""
    box = getattr(request.app.state, "secret_box", None)
    if box is None:
        keys = get_settings(request).secret_keys
        if not keys.strip():
            raise Unavailable("secret storage is not configured (set FLYWHEEL_SECRET_KEYS)")
        try:
            box = SecretBox.from_setting(keys)
        except SecurityError:
            raise Unavailable("secret storage is misconfigured (FLYWHEEL_SECRET_KEYS)") from None
        request.app.state.secret_box = box
    return box


async def get_temporal(request: Request) -> Client:
    """`app.state.temporal` if set, else a client connected once (settings' address/namespace) and
    cached; 503 when Temporal cannot be reached."""
    state = request.app.state
    if getattr(state, "temporal", None) is None:
        async with state.temporal_lock:
            if getattr(state, "temporal", None) is None:
                settings = get_settings(request)
                try:
                    state.temporal = await Client.connect(
                        settings.temporal_address, namespace=settings.temporal_namespace
                    )
                except Exception as exc:
                    raise Unavailable(f"cannot reach Temporal at {settings.temporal_address}: {exc}") from None
    return state.temporal

"""Tenants and their API keys."""
from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata

from sqlmodel import Session, select

from db.errors import Invalid, NotFound
from db.models import ApiKey, Tenant
from db.writes import commit_or_conflict

KEY_PREFIX = "fw_"
DEFAULT_SETTINGS: dict = {"allowed_hosts": [], "connector_base_urls": {}}


def slugify(name: str) -> str:
    """Tenant id from its name: lowercase letters, digits and '-', at most 64 characters."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:64].strip("-")
    if not slug:
        raise Invalid(f"tenant name {name!r} has no letters or digits to build an id from")
    return slug


def hash_key(key: str) -> str:
    """sha256 hex of an API key (what the store keeps)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key(session: Session, tenant_id: str) -> str:
    """Create and store a new API key for the tenant; returns the key (shown once)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant_id, key_hash=hash_key(key), prefix=key[:10]))
    commit_or_conflict(session, "could not store the API key")
    return key


def create_tenant(session: Session, name: str) -> tuple[Tenant, str]:
    """Create a tenant (id = slug of name) with its first API key; Conflict if the id is taken."""
    name = name.strip()
    tenant = Tenant(id=slugify(name), name=name, settings=dict(DEFAULT_SETTINGS))
    session.add(tenant)
    commit_or_conflict(session, f"tenant {tenant.id!r} already exists")
    return tenant, new_api_key(session, tenant.id)


def get_tenant(session: Session, tenant_id: str) -> Tenant:
    """The tenant with this id, or NotFound."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    return tenant


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    """The tenant owning this API key, or None for an unknown key."""
    if not key.startswith(KEY_PREFIX):
        return None
    stmt = select(Tenant).join(ApiKey, ApiKey.tenant_id == Tenant.id).where(
        ApiKey.key_hash == hash_key(key)
    )
    return session.exec(stmt).first()


def update_tenant_settings(
    session: Session,
    tenant_id: str,
    *,
    allowed_hosts: list[str] | None = None,
    connector_base_urls: dict[str, str] | None = None,
) -> Tenant:
    """Replace the given settings keys (None leaves a key unchanged)."""
    tenant = get_tenant(session, tenant_id)
    settings = {**DEFAULT_SETTINGS, **(tenant.settings or {})}
    if allowed_hosts is not None:
        settings["allowed_hosts"] = list(allowed_hosts)
    if connector_base_urls is not None:
        settings["connector_base_urls"] = dict(connector_base_urls)
    tenant.settings = settings  # a new dict, so the JSON column is seen as changed
    session.add(tenant)
    commit_or_conflict(session, "could not update tenant settings")
    return tenant

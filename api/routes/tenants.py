"""Tenants: create (admin), read own tenant, update own settings."""
from __future__ import annotations

import hmac
import re
from datetime import datetime
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session

from api.deps import current_tenant, get_session, get_settings
from api.errors import Forbidden
from connectors.netguard import literal_address, never_allowed
from db.models import Tenant
from db.tenants import create_tenant, update_tenant_settings
from settings import Settings

router = APIRouter(prefix="/v1", tags=["tenants"])

HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_.:\-\[\]]+$")


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class TenantCreated(BaseModel):
    id: str
    name: str
    api_key: str


class TenantSettingsPatch(BaseModel):
    """Keys given replace the stored ones; omitted keys stay."""

    model_config = ConfigDict(extra="forbid")
    allowed_hosts: list[str] | None = Field(default=None, max_length=200)
    connector_base_urls: dict[str, str] | None = Field(default=None, max_length=200)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str] | None) -> list[str] | None:
        for host in hosts or []:
            if not HOST.match(host):
                raise ValueError(f"not a host name: {host[:100]!r} (no scheme, path or spaces)")
            address = literal_address(host)
            reason = never_allowed(address) if address is not None else None
            if reason:
                raise ValueError(f"{host!r} is a {reason} address ({address}): no connector API lives "
                                 "there and such addresses are never reachable, so it cannot be allowed")
        return hosts

    @field_validator("connector_base_urls")
    @classmethod
    def _urls(cls, urls: dict[str, str] | None) -> dict[str, str] | None:
        for connector, url in (urls or {}).items():
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
                raise ValueError(f"base URL of {connector[:64]!r} must be an http(s) URL")
        return urls


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    settings: dict


def _out(tenant: Tenant) -> TenantOut:
    return TenantOut(id=tenant.id, name=tenant.name, created_at=tenant.created_at, settings=tenant.settings)


@router.post("/tenants", status_code=201, response_model=TenantCreated)
def create(
    body: TenantCreate,
    x_admin_token: str = Header(default=""),
    settings: Settings = Depends(get_settings),
    session: Session = Depends(get_session),
) -> TenantCreated:
    """Create a tenant and its first API key (shown once). Requires X-Admin-Token."""
    if not settings.admin_token:
        raise Forbidden("the admin API is disabled (FLYWHEEL_ADMIN_TOKEN is not set)")
    if not hmac.compare_digest(x_admin_token.encode(), settings.admin_token.encode()):
        raise Forbidden("invalid admin token")
    tenant, key = create_tenant(session, body.name)
    return TenantCreated(id=tenant.id, name=tenant.name, api_key=key)


@router.get("/tenant", response_model=TenantOut)
def me(tenant: Tenant = Depends(current_tenant)) -> TenantOut:
    """The calling tenant."""
    return _out(tenant)


@router.patch("/tenant/settings", response_model=TenantOut)
def patch_settings(
    body: TenantSettingsPatch,
    tenant: Tenant = Depends(current_tenant),
    session: Session = Depends(get_session),
) -> TenantOut:
    """Update allowed_hosts and/or connector_base_urls."""
    updated = update_tenant_settings(
        session, tenant.id, allowed_hosts=body.allowed_hosts, connector_base_urls=body.connector_base_urls
    )
    return _out(updated)

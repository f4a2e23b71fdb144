"""Secrets: write-only values; listing shows names and update times only."""
from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.deps import current_tenant, get_secret_box, get_session
from db.models import Tenant
from db.secrets import SECRET_NAME_PATTERN, delete_secret, list_secret_names, set_secret
from security.secrets import SecretBox

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])

SECRET_NAME = Path(pattern=SECRET_NAME_PATTERN)


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(max_length=65536)


class SecretInfo(BaseModel):
    name: str
    updated_at: datetime


@router.put("/{name}", response_model=SecretInfo)
def put_secret(
    body: SecretValue,
    name: str = SECRET_NAME,
    tenant: Tenant = Depends(current_tenant),
    session: Session = Depends(get_session),
    box: SecretBox = Depends(get_secret_box),
) -> SecretInfo:
    """Create or replace a secret. The value is never returned by any endpoint."""
    row = set_secret(session, box, tenant.id, name, body.value)
    return SecretInfo(name=row.name, updated_at=row.updated_at)


@router.get("", response_model=list[SecretInfo])
def list_secrets(tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)) -> list[SecretInfo]:
    """Names and update times of the tenant's secrets."""
    return [SecretInfo(name=r.name, updated_at=r.updated_at) for r in list_secret_names(session, tenant.id)]


@router.delete("/{name}", status_code=204)
def remove_secret(
    name: str = SECRET_NAME, tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)
) -> Response:
    """Delete a secret."""
    delete_secret(session, tenant.id, name)
    return Response(status_code=204)

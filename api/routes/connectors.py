"""Connectors: the built-in and custom connectors a tenant can use; custom ones are written here."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from sqlmodel import Session

from api.body import Document, pure_input_errors, read_document
from api.deps import current_tenant, get_session
from api.errors import InvalidBody
from connectors.catalog import builtin_connectors
from connectors.spec import load_connector
from db.connectors import list_connectors, put_connector
from db.models import Tenant

router = APIRouter(prefix="/v1/connectors", tags=["connectors"])


class OperationInfo(BaseModel):
    method: str
    path: str
    read_only: bool


class ConnectorInfo(BaseModel):
    """What a procedure author needs to know; never secret values (specs only name secrets)."""

    id: str
    source: str  # builtin | custom
    title: str
    base_url: str
    auth: str | None
    secrets: list[str]
    operations: dict[str, OperationInfo]


def _info(spec: dict, source: str) -> ConnectorInfo:
    return ConnectorInfo(
        id=spec["connector"],
        source=source,
        title=spec.get("title") or spec["connector"],
        base_url=spec["base_url"],
        auth=(spec.get("auth") or {}).get("type"),
        secrets=list(spec.get("secrets") or []),
        operations={
            op_id: OperationInfo(method=op["method"], path=op["path"], read_only=bool(op.get("read_only")))
            for op_id, op in spec["operations"].items()
        },
    )


async def _document(request: Request) -> Document:
    return await read_document(request, default_name="<connector>")


@router.get("", response_model=list[ConnectorInfo])
def list_all(tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)) -> list[ConnectorInfo]:
    """Built-in connectors and the tenant's custom ones (a custom id overrides a built-in)."""
    catalog = {cid: _info(spec, "builtin") for cid, spec in builtin_connectors().items()}
    for row in list_connectors(session, tenant.id):
        catalog[row.connector_id] = _info(row.spec, "custom")
    return [catalog[cid] for cid in sorted(catalog)]


@router.put("/{connector_id}", response_model=ConnectorInfo)
def put(
    connector_id: str,
    response: Response,
    doc: Document = Depends(_document),
    tenant: Tenant = Depends(current_tenant),
    session: Session = Depends(get_session),
) -> ConnectorInfo:
    """Create (201) or replace (200) a custom connector from a YAML/JSON spec; 422 on a bad spec.

    The spec is read like a procedure (YAML 1.2: only `true`/`false` are booleans, so
    `read_only: yes` is refused, not taken for true); the 422 names the problem's line and column.
    """
    with pure_input_errors(doc.filename, "connector"):
        spec = load_connector(doc.text, doc.filename)
    if spec["connector"] != connector_id:
        raise InvalidBody(f"spec is for connector {spec['connector']!r}, not {connector_id!r}")
    _, created = put_connector(session, tenant.id, connector_id, spec)
    response.status_code = 201 if created else 200
    return _info(spec, "custom")

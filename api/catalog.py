"""The connector catalog a tenant's procedures are validated and run against."""
from __future__ import annotations

from sqlmodel import Session

from connectors.catalog import catalog_for
from db.connectors import list_connectors


def tenant_catalog(session: Session, tenant_id: str) -> dict[str, dict]:
    """Built-in connectors plus the tenant's custom ones (a custom id overrides a built-in)."""
    return catalog_for([row.spec for row in list_connectors(session, tenant_id)])

"""Tenants' custom connectors (normalized specs; validation is connectors/' job)."""
from __future__ import annotations

from sqlmodel import Session, select

from db.errors import NotFound
from db.models import Connector
from db.writes import commit_or_conflict


def _row(session: Session, tenant_id: str, connector_id: str) -> Connector | None:
    return session.exec(
        select(Connector).where(Connector.tenant_id == tenant_id, Connector.connector_id == connector_id)
    ).first()


def put_connector(session: Session, tenant_id: str, connector_id: str, spec: dict) -> tuple[Connector, bool]:
    """Create or replace a connector spec; returns (row, created)."""
    row = _row(session, tenant_id, connector_id)
    created = row is None
    if row is None:
        row = Connector(tenant_id=tenant_id, connector_id=connector_id, spec=spec)
    else:
        row.spec = dict(spec)
    session.add(row)
    commit_or_conflict(session, f"connector {connector_id!r} was written concurrently; retry")
    return row, created


def list_connectors(session: Session, tenant_id: str) -> list[Connector]:
    """The tenant's custom connectors, by id."""
    return list(
        session.exec(select(Connector).where(Connector.tenant_id == tenant_id).order_by(Connector.connector_id))
    )


def get_connector(session: Session, tenant_id: str, connector_id: str) -> Connector:
    """One custom connector, or NotFound."""
    row = _row(session, tenant_id, connector_id)
    if row is None:
        raise NotFound(f"connector {connector_id!r} not found")
    return row


def tenant_specs(session: Session, tenant_id: str) -> dict[str, dict]:
    """connector id -> spec for the tenant's custom connectors."""
    return {row.connector_id: row.spec for row in list_connectors(session, tenant_id)}

"""Used approval links: the primary key makes each link usable once, even under concurrency."""
from __future__ import annotations

from sqlmodel import Session

from db.errors import Conflict
from db.models import UsedLink
from db.writes import insert_ignore


def mark_link_used(
    session: Session,
    link_id: str,
    *,
    tenant_id: str,
    workflow_id: str,
    step_id: str,
    approver: str,
    decision: str,
) -> UsedLink:
    """Record the use of a link; Conflict if it was used before (the DB refuses the duplicate)."""
    row = UsedLink(
        link_id=link_id, tenant_id=tenant_id, workflow_id=workflow_id,
        step_id=step_id, approver=approver, decision=decision,
    )
    if not insert_ignore(session, row, ["link_id"]):
        raise Conflict(f"approval link {link_id!r} has already been used")
    return row


def is_link_used(session: Session, link_id: str) -> bool:
    """Whether this link id has been used."""
    return session.get(UsedLink, link_id) is not None

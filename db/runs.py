"""Runs (pinned to a procedure version) and the messages they sent."""
from __future__ import annotations

from sqlmodel import Session, select

from db.errors import NotFound
from db.models import Run, RunMessage
from db.storable import check_storable, storable_text
from db.writes import commit_or_conflict, insert_ignore


def record_run(
    session: Session,
    tenant_id: str,
    run_id: str,
    procedure_id: str,
    version: int,
    sha256: str,
    workflow_id: str,
    inputs: dict,
) -> Run:
    """Store a started run; Conflict if the run id or workflow id is already taken; Invalid for
    inputs holding text no database keeps (NUL)."""
    check_storable(inputs, "inputs")
    row = Run(
        tenant_id=tenant_id, run_id=run_id, procedure_id=procedure_id, version=version,
        sha256=sha256, workflow_id=workflow_id, inputs=inputs,
    )
    session.add(row)
    commit_or_conflict(session, f"run {run_id!r} already exists")
    return row


def get_run(session: Session, tenant_id: str, run_id: str) -> Run:
    """The tenant's run, or NotFound (another tenant's run is not found either)."""
    row = session.exec(select(Run).where(Run.tenant_id == tenant_id, Run.run_id == run_id)).first()
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return row


def list_runs(
    session: Session, tenant_id: str, procedure_id: str | None = None, limit: int = 100
) -> list[Run]:
    """The tenant's runs, newest first, optionally of one procedure."""
    stmt = select(Run).where(Run.tenant_id == tenant_id)
    if procedure_id is not None:
        stmt = stmt.where(Run.procedure_id == procedure_id)
    return list(session.exec(stmt.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)))


def record_message(
    session: Session, tenant_id: str, run_id: str, step_id: str, seq: int, text: str
) -> bool:
    """Store the seq-th message of a step; a retry (same run, step, seq) inserts nothing -> False.

    NUL and lone surrogates cannot be stored (PostgreSQL) and are dropped: the message is
    recorded rather than refused on every retry."""
    text = storable_text(text)
    row = RunMessage(tenant_id=tenant_id, run_id=run_id, step_id=step_id, seq=seq, text=text)
    return insert_ignore(session, row, ["run_id", "step_id", "seq"])


def list_messages(session: Session, tenant_id: str, run_id: str) -> list[RunMessage]:
    """A run's messages in the order they were recorded."""
    stmt = (
        select(RunMessage)
        .where(RunMessage.tenant_id == tenant_id, RunMessage.run_id == run_id)
        .order_by(RunMessage.id)
    )
    return list(session.exec(stmt))

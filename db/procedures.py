"""Immutable procedure versions (spec §8): publish, read, list, roll back."""
from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from db.errors import Conflict, NotFound
from db.models import ProcedureVersion
from db.storable import check_storable, unstorable
from db.writes import insert_ignore

_PUBLISH_ATTEMPTS = 5


def _no_such_id(procedure_id: str) -> bool:
    """An id no procedure has and PostgreSQL cannot even compare (a NUL): not found, not a 500."""
    return unstorable(procedure_id, "procedure") is not None


def _latest(session: Session, tenant_id: str, procedure_id: str) -> ProcedureVersion | None:
    stmt = (
        select(ProcedureVersion)
        .where(ProcedureVersion.tenant_id == tenant_id, ProcedureVersion.procedure_id == procedure_id)
        .order_by(ProcedureVersion.version.desc())
        .limit(1)
    )
    return session.exec(stmt).first()


def publish(
    session: Session,
    tenant_id: str,
    procedure_id: str,
    source_text: str,
    fmt: str,
    definition: dict,
    sha256: str,
    note: str | None = None,
) -> tuple[ProcedureVersion, bool]:
    """Store the next version; returns (version, created). Same sha as the newest -> (newest, False).

    Two concurrent publishes cannot get the same number: the unique key decides, the loser retries.
    Text a database cannot store (NUL) is Invalid.
    """
    check_storable({"procedure": procedure_id, "source": source_text, "definition": definition,
                    "note": note}, "procedure")
    for _ in range(_PUBLISH_ATTEMPTS):
        latest = _latest(session, tenant_id, procedure_id)
        if latest is not None and latest.sha256 == sha256:
            return latest, False
        row = ProcedureVersion(
            tenant_id=tenant_id,
            procedure_id=procedure_id,
            version=(latest.version if latest else 0) + 1,
            sha256=sha256,
            source_text=source_text,
            source_format=fmt,
            definition=definition,
            note=note,
        )
        if insert_ignore(session, row, ["tenant_id", "procedure_id", "version"]):
            return get_version(session, tenant_id, procedure_id, row.version), True
    raise Conflict(f"procedure {procedure_id!r} is being published concurrently; retry")


def publish_version(
    session: Session,
    tenant_id: str,
    procedure_id: str,
    source_text: str,
    fmt: str,
    definition: dict,
    sha256: str,
    note: str | None = None,
) -> ProcedureVersion:
    """Like publish(), returning only the version (idempotent on the newest sha256)."""
    return publish(session, tenant_id, procedure_id, source_text, fmt, definition, sha256, note)[0]


def get_version(
    session: Session, tenant_id: str, procedure_id: str, version: int | None = None
) -> ProcedureVersion:
    """A version of a procedure (the newest when `version` is None), or NotFound."""
    if _no_such_id(procedure_id):
        raise NotFound(f"procedure {procedure_id[:64]!r} not found")
    if version is None:
        row = _latest(session, tenant_id, procedure_id)
    else:
        row = session.exec(
            select(ProcedureVersion).where(
                ProcedureVersion.tenant_id == tenant_id,
                ProcedureVersion.procedure_id == procedure_id,
                ProcedureVersion.version == version,
            )
        ).first()
    if row is None:
        what = f"procedure {procedure_id!r}" + ("" if version is None else f" version {version}")
        raise NotFound(f"{what} not found")
    return row


def list_versions(session: Session, tenant_id: str, procedure_id: str) -> list[ProcedureVersion]:
    """All versions of a procedure, oldest first; NotFound if it was never published."""
    if _no_such_id(procedure_id):
        raise NotFound(f"procedure {procedure_id[:64]!r} not found")
    rows = list(
        session.exec(
            select(ProcedureVersion)
            .where(ProcedureVersion.tenant_id == tenant_id, ProcedureVersion.procedure_id == procedure_id)
            .order_by(ProcedureVersion.version)
        )
    )
    if not rows:
        raise NotFound(f"procedure {procedure_id!r} not found")
    return rows


def list_procedures(session: Session, tenant_id: str) -> list[ProcedureVersion]:
    """The newest version of each of the tenant's procedures, by procedure id."""
    newest = (
        select(ProcedureVersion.procedure_id, func.max(ProcedureVersion.version).label("version"))
        .where(ProcedureVersion.tenant_id == tenant_id)
        .group_by(ProcedureVersion.procedure_id)
        .subquery()
    )
    stmt = (
        select(ProcedureVersion)
        .join(
            newest,
            (ProcedureVersion.procedure_id == newest.c.procedure_id)
            & (ProcedureVersion.version == newest.c.version),
        )
        .where(ProcedureVersion.tenant_id == tenant_id)
        .order_by(ProcedureVersion.procedure_id)
    )
    return list(session.exec(stmt))


def rollback(session: Session, tenant_id: str, procedure_id: str, version: int) -> ProcedureVersion:
    """Publish an old version's content again as the newest (note "rollback of vN")."""
    old = get_version(session, tenant_id, procedure_id, version)
    return publish_version(
        session, tenant_id, procedure_id, old.source_text, old.source_format,
        old.definition, old.sha256, note=f"rollback of v{version}",
    )

"""Procedures: publish (validated, versioned), read, list versions, diff, roll back (spec §8)."""
from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.body import Document, pure_input_errors, read_document
from api.catalog import tenant_catalog
from api.deps import current_tenant, get_session
from api.procdiff import field_changes, step_changes, unified_diff
from db.models import ProcedureVersion, Tenant
from db.procedures import get_version, list_procedures, list_versions, publish, rollback
from procedures.loader import definition_sha256, load_procedure

router = APIRouter(prefix="/v1/procedures", tags=["procedures"])
# Versions are 1, 2, 3, ... in an integer column: a number beyond it is no version (422, not a
# database overflow).
MAX_VERSION = 2**31 - 1

class Published(BaseModel):
    procedure_id: str
    version: int
    sha256: str
    created: bool


class ProcedureSummary(BaseModel):
    procedure_id: str
    version: int
    title: str | None
    sha256: str
    updated_at: datetime


class VersionSummary(BaseModel):
    version: int
    sha256: str
    created_at: datetime
    note: str | None


class VersionDetail(VersionSummary):
    procedure_id: str
    source_format: str
    source_text: str
    definition: dict


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=MAX_VERSION)


class Diff(BaseModel):
    procedure_id: str
    from_version: int
    to_version: int
    diff: str
    steps: dict[str, list[str]]
    fields_changed: list[str]


def _detail(row: ProcedureVersion) -> VersionDetail:
    return VersionDetail(
        procedure_id=row.procedure_id, version=row.version, sha256=row.sha256, created_at=row.created_at,
        note=row.note, source_format=row.source_format, source_text=row.source_text, definition=row.definition,
    )


async def _document(request: Request) -> Document:
    return await read_document(request, default_name="<procedure>")


@router.post("", status_code=201, response_model=Published)
def publish_procedure(
    response: Response,
    doc: Document = Depends(_document),
    tenant: Tenant = Depends(current_tenant),
    session: Session = Depends(get_session),
) -> Published:
    """Validate and publish a procedure (YAML/JSON body or multipart `file`). 201 new version,
    200 when it equals the newest version (idempotent), 422 with located problems."""
    catalog = tenant_catalog(session, tenant.id)
    with pure_input_errors(doc.filename, "procedure"):
        definition = load_procedure(doc.text, doc.filename, catalog)
    row, created = publish(
        session, tenant.id, definition["procedure"], doc.text, doc.fmt, definition, definition_sha256(definition)
    )
    if not created:
        response.status_code = 200
    return Published(procedure_id=row.procedure_id, version=row.version, sha256=row.sha256, created=created)


@router.get("", response_model=list[ProcedureSummary])
def list_all(tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)) -> list[ProcedureSummary]:
    """The tenant's procedures with their newest version."""
    return [
        ProcedureSummary(
            procedure_id=row.procedure_id, version=row.version, title=row.definition.get("title"),
            sha256=row.sha256, updated_at=row.created_at,
        )
        for row in list_procedures(session, tenant.id)
    ]


@router.get("/{procedure_id}", response_model=VersionDetail)
def latest(
    procedure_id: str, tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)
) -> VersionDetail:
    """The newest version: source, definition, sha256."""
    return _detail(get_version(session, tenant.id, procedure_id))


@router.get("/{procedure_id}/versions", response_model=list[VersionSummary])
def versions(
    procedure_id: str, tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session)
) -> list[VersionSummary]:
    """Every version, oldest first."""
    return [
        VersionSummary(version=r.version, sha256=r.sha256, created_at=r.created_at, note=r.note)
        for r in list_versions(session, tenant.id, procedure_id)
    ]


@router.get("/{procedure_id}/versions/{version}", response_model=VersionDetail)
def version_detail(
    procedure_id: str,
    version: int = Path(ge=1, le=MAX_VERSION),
    tenant: Tenant = Depends(current_tenant),
    session: Session = Depends(get_session),
) -> VersionDetail:
    """One version: source, definition, sha256."""
    return _detail(get_version(session, tenant.id, procedure_id, version))


@router.get("/{procedure_id}/diff", response_model=Diff)
def diff(
    procedure_id: str,
    from_version: int = Query(alias="from", ge=1, le=MAX_VERSION),
    to_version: int = Query(alias="to", ge=1, le=MAX_VERSION),
    tenant: Tenant = Depends(current_tenant),
    session: Session = Depends(get_session),
) -> Diff:
    """Unified diff of the two versions' sources and the steps added/removed/changed."""
    old = get_version(session, tenant.id, procedure_id, from_version)
    new = get_version(session, tenant.id, procedure_id, to_version)
    return Diff(
        procedure_id=procedure_id,
        from_version=old.version,
        to_version=new.version,
        diff=unified_diff(old.source_text, new.source_text, f"{procedure_id} v{old.version}", f"{procedure_id} v{new.version}"),
        steps=step_changes(old.definition, new.definition),
        fields_changed=field_changes(old.definition, new.definition),
    )


@router.post("/{procedure_id}/rollback", response_model=VersionSummary)
def roll_back(
    procedure_id: str,
    body: RollbackRequest,
    tenant: Tenant = Depends(current_tenant),
    session: Session = Depends(get_session),
) -> VersionSummary:
    """Publish an old version's content again as the newest version (unchanged if it already is)."""
    row = rollback(session, tenant.id, procedure_id, body.version)
    return VersionSummary(version=row.version, sha256=row.sha256, created_at=row.created_at, note=row.note)

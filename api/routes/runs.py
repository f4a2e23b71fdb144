"""Runs: start (inputs validated), read (status, current step, step log), list, cancel, answer."""
from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.deps import current_tenant, get_session, get_settings, get_temporal
from api.errors import InvalidBody
from api.temporal_errors import RunNotFound, temporal_call
from db.errors import Conflict
from db.models import Tenant
from db.procedures import get_version
from db.runs import get_run, record_run
from procedures.inputs import validate_inputs
from workflows import types as T
from workflows.search import run_search_attributes

router = APIRouter(tags=["runs"])
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STATUSES = ("running", "waiting", "succeeded", "failed", "handed_off", "cancelled")
MAX_INT = 2**31 - 1  # the database's integer columns: larger numbers are no version of anything
CHANNEL = r"^[a-z][a-z0-9_]{0,31}$"  # a channel's name (api/routes/channels.py)
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str | None = Field(default=None, max_length=254, pattern=_PRINTABLE)
    phone: str | None = Field(default=None, max_length=32, pattern=_PRINTABLE)
    name: str | None = Field(default=None, max_length=200, pattern=_PRINTABLE)


class ConversationContext(BaseModel):
    """What a run started through the API may know of a conversation (spec §2 `conversation`):
    an id and channel for the run's own use, and the customer. A run started here never signals
    a workflow: only the conversation workflow starts runs that report to it."""
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, max_length=128, pattern=_PRINTABLE)
    channel: str | None = Field(default=None, pattern=CHANNEL, description="e.g. web, email, slack")
    customer: Customer = Field(default_factory=Customer)

    @model_validator(mode="before")
    @classmethod
    def _no_workflow(cls, data: Any) -> Any:
        if isinstance(data, dict) and "workflow_id" in data:
            raise ValueError("conversation.workflow_id cannot be set: only a conversation starts runs that report to it")
        return data


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1, le=MAX_INT)
    run_id: str | None = Field(default=None, description="client-chosen id; repeating it never starts a second run")
    conversation: ConversationContext = Field(default_factory=ConversationContext)


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=10_000)
    step_id: str | None = Field(default=None, max_length=1000,
                                description="the ask's step id, or its path and id (`each[1]/code`) "
                                            "when several wait at once")


def _get_run(session: Session, tenant_id: str, run_id: str):
    """The tenant's run row; an id no run can have (e.g. a NUL byte, which PostgreSQL refuses) is 404."""
    if not RUN_ID.fullmatch(run_id):
        raise RunNotFound(f"run {run_id[:64]!r} not found")
    return get_run(session, tenant_id, run_id)


def _run_view(row, state: dict[str, Any] | None) -> dict[str, Any]:
    view = {"run_id": row.run_id, "workflow_id": row.workflow_id, "procedure_id": row.procedure_id,
            "version": row.version, "sha256": row.sha256, "created_at": row.created_at.isoformat()}
    view.update(state or {})
    return view


@router.post("/v1/procedures/{procedure_id}/runs", status_code=201)
async def start_run(procedure_id: str, body: StartRun, request: Request,
                    tenant: Tenant = Depends(current_tenant), session: Session = Depends(get_session),
                    client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Start a run pinned to (procedure, version, sha256); the input is validated first."""
    if "\x00" in procedure_id:
        raise RunNotFound(f"procedure {procedure_id[:64]!r} not found")
    pv = get_version(session, tenant.id, procedure_id, body.version)
    problems = validate_inputs(pv.definition.get("inputs"), body.inputs)
    if problems:
        raise InvalidBody("invalid inputs: " + "; ".join(problems))
    run_id = body.run_id if body.run_id is not None else uuid.uuid4().hex
    if not RUN_ID.fullmatch(run_id):
        raise InvalidBody("run_id: letters, digits, '.', '_' and '-', at most 64 characters")
    wf_id = T.workflow_id(tenant.id, procedure_id, run_id)
    created = True
    try:
        row = record_run(session, tenant.id, run_id, procedure_id, pv.version, pv.sha256, wf_id, body.inputs)
    except Conflict:
        # The same run id again: the run recorded first wins. Its workflow is (re)started below,
        # which does nothing when it runs already and repairs a start that failed last time.
        session.rollback()
        row = get_run(session, tenant.id, run_id)
        if row.procedure_id != procedure_id:
            raise InvalidBody(f"run_id {run_id!r} is already used by another procedure") from None
        pv, created = get_version(session, tenant.id, procedure_id, row.version), False
    settings = get_settings(request)
    conversation = body.conversation.model_dump(exclude_none=True)
    if not conversation.get("customer"):
        conversation.pop("customer", None)  # no conversation given: `conversation` is empty
    run = T.RunInput(tenant_id=tenant.id, run_id=run_id, procedure_id=procedure_id, version=row.version,
                     sha256=row.sha256, definition=pv.definition, inputs=row.inputs,
                     conversation=conversation, step_budget=settings.step_budget)
    async with temporal_call("start run"):
        try:
            await client.start_workflow(
                T.WORKFLOW_NAME, run, id=wf_id, task_queue=settings.task_queue,
                search_attributes=run_search_attributes(run, body.conversation.channel))
        except WorkflowAlreadyStartedError:
            pass
    return _run_view(row, {"status": "running", "created": created})


@router.get("/v1/runs/{run_id}")
async def read_run(run_id: str, tenant: Tenant = Depends(current_tenant),
                   session: Session = Depends(get_session),
                   client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Status, current step, variables (secrets redacted), step log and pending waits."""
    row = _get_run(session, tenant.id, run_id)
    async with temporal_call("read run"):
        state = await client.get_workflow_handle(row.workflow_id).query("state")
    return _run_view(row, state)


@router.get("/v1/runs")
async def list_runs(tenant: Tenant = Depends(current_tenant), client: Client = Depends(get_temporal),
                    procedure: str | None = Query(default=None, max_length=64),
                    status: str | None = Query(default=None),
                    limit: int = Query(default=50, ge=1, le=500)) -> dict[str, Any]:
    """The tenant's runs, newest first, from Temporal's visibility (filters: procedure, status)."""
    if status is not None and status not in STATUSES:
        raise InvalidBody(f"status must be one of {', '.join(STATUSES)}")
    if procedure is not None and not RUN_ID.fullmatch(procedure):
        raise InvalidBody("procedure: not a procedure id")
    clauses = [f'TenantId = "{tenant.id}"', f'WorkflowType = "{T.WORKFLOW_NAME}"']
    if procedure:
        clauses.append(f'ProcedureId = "{procedure}"')
    if status:
        clauses.append(f'RunStatus = "{status}"')
    runs = []
    async with temporal_call("list runs"):
        async for wf in client.list_workflows(" AND ".join(clauses), limit=limit):
            attrs = wf.typed_search_attributes
            runs.append({
                "workflow_id": wf.id, "run_id": wf.id.rsplit("/", 1)[-1],
                "procedure_id": _attr(attrs, "ProcedureId"), "version": _attr(attrs, "ProcedureVersion"),
                "status": _attr(attrs, "RunStatus"), "current_step": _attr(attrs, "CurrentStep") or None,
                "started_at": _iso(wf.start_time), "closed_at": _iso(wf.close_time),
            })
    return {"runs": runs}


def _attr(attrs, name: str) -> Any:
    for pair in attrs:
        if pair.key.name == name:
            return pair.value
    return None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@router.post("/v1/runs/{run_id}/cancel", status_code=202)
async def cancel_run(run_id: str, tenant: Tenant = Depends(current_tenant),
                     session: Session = Depends(get_session),
                     client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Ask the run to stop; it ends with status `cancelled`."""
    row = _get_run(session, tenant.id, run_id)
    async with temporal_call("cancel run"):
        await client.get_workflow_handle(row.workflow_id).cancel()
    return {"run_id": run_id, "cancel_requested": True}


@router.post("/v1/runs/{run_id}/answer")
async def answer_run(run_id: str, body: AnswerBody, tenant: Tenant = Depends(current_tenant),
                     session: Session = Depends(get_session),
                     client: Client = Depends(get_temporal)) -> dict[str, Any]:
    """Answer the run's waiting `ask` step (outside a conversation)."""
    row = _get_run(session, tenant.id, run_id)
    async with temporal_call("answer"):
        return await client.get_workflow_handle(row.workflow_id).execute_update(
            "answer", T.Answer(text=body.text, step_id=body.step_id))

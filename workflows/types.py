"""Data exchanged between the API, the interpreter workflow and its activities. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Activity names: the workflow refers to activities by name so it never imports I/O code.
CALL_CONNECTOR = "call_connector"
CALL_HTTP = "call_http"
SEND_MESSAGE = "send_message"
SEND_APPROVAL_MAIL = "send_approval_mail"
RESOLVE_PROCEDURE = "resolve_procedure"
PIN_PROCEDURES = "pin_procedures"

WORKFLOW_NAME = "ProcedureRun"
PROCEDURE_EVENT = "procedure_event"  # signal a run sends to its conversation
ANSWER_SIGNAL = "answer_signal"      # signal a conversation sends to its run's `ask`

# Run statuses (the RunStatus search attribute and the `state` query).
RUNNING, WAITING, SUCCEEDED, FAILED, HANDED_OFF, CANCELLED = (
    "running", "waiting", "succeeded", "failed", "handed_off", "cancelled")
FINAL_STATUSES = (SUCCEEDED, FAILED, HANDED_OFF, CANCELLED)


def workflow_id(tenant_id: str, procedure_id: str, run_id: str) -> str:
    """The business key of a run (spec §8)."""
    return f"procedure-run/{tenant_id}/{procedure_id}/{run_id}"


@dataclass
class RunInput:
    tenant_id: str
    run_id: str
    procedure_id: str
    version: int
    sha256: str
    definition: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    conversation: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    parent: str | None = None
    step_budget: int = 1000  # a child's is what its caller had left (its steps count there)
    # procedure id -> version its unversioned `call`s run. None: not pinned yet (the run pins
    # when it starts); a child gets its caller's.
    pins: dict[str, int] | None = None
    depth: int = 0  # `call` nesting: 0 for a run started by the API or a conversation


@dataclass
class Decision:
    """An approver's decision, sent by the approval link page as a Temporal Update."""

    step_id: str  # the pending approval's key: its path and id (`each[1]/approve`; top level: the id)
    approver: str
    decision: str  # approved | rejected
    comment: str = ""
    link_id: str = ""
    request_hash: str = ""


@dataclass
class Answer:
    """A customer's answer to an `ask` step."""

    text: str
    step_id: str | None = None  # the pending ask's key (path and id) or its step id

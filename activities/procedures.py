"""Resolving the procedures a run calls: pinning their versions when the run starts, and loading
a `call` step's (pinned) version when it runs."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.services import Services
from db.errors import NotFound
from db.procedures import get_version
from workflows import types as T
from workflows.state import call_refs

# Procedure versions read to pin one run's calls (the called procedures' own calls included).
MAX_PINNED = 100

Loader = Callable[[str, "int | None"], Awaitable["tuple[int, dict] | None"]]


async def pin_closure(refs: list[list[Any]], load: Loader) -> dict[str, int]:
    """procedure id -> version for every unversioned call reachable from `refs`.

    `load(procedure, version or None)` gives `(version, definition)` (the newest when None), or
    None when there is no such procedure; such a call resolves when it runs (and fails if it is
    still missing). Explicit versions are immutable and need no pin, but their own calls are
    followed. At most MAX_PINNED versions are read.
    """
    pins: dict[str, int] = {}
    walked: set[tuple[str, int]] = set()
    todo = [list(r) for r in refs]
    reads = 0
    while todo and reads < MAX_PINNED:
        procedure, version = todo.pop(0)
        if version is None and procedure in pins:
            continue
        if version is not None and (procedure, int(version)) in walked:
            continue
        reads += 1
        found = await load(procedure, version)
        if found is None:
            continue
        got, definition = found
        if version is None:
            pins[procedure] = got
        if (procedure, got) in walked:
            continue
        walked.add((procedure, got))
        todo.extend(call_refs((definition or {}).get("steps") or []))
    return pins


class ProcedureActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _load(self, tenant_id: str, procedure: str, version: int | None) -> tuple[int, dict] | None:
        try:
            row = await self.services.db(get_version, tenant_id, procedure, version)
        except NotFound:
            return None
        return row.version, row.definition

    @activity.defn(name=T.PIN_PROCEDURES)
    async def pin_procedures(self, p: dict[str, Any]) -> dict[str, Any]:
        pins = await pin_closure(p["procedures"], lambda proc, v: self._load(p["tenant_id"], proc, v))
        return {"pins": pins, "attempt": activity.info().attempt}

    @activity.defn(name=T.RESOLVE_PROCEDURE)
    async def resolve_procedure(self, p: dict[str, Any]) -> dict[str, Any]:
        try:
            row = await self.services.db(get_version, p["tenant_id"], p["procedure_id"], p.get("version"))
        except NotFound as err:
            raise ApplicationError(str(err), type="validation", non_retryable=True) from None
        return {"definition": row.definition, "version": row.version, "sha256": row.sha256,
                "attempt": activity.info().attempt}

    def all(self) -> list:
        return [self.pin_procedures, self.resolve_procedure]

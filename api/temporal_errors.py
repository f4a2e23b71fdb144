"""Temporal client failures seen by the API, as ApiErrors (mapped to HTTP in api/errors.py)."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError, Unavailable


class RunNotFound(ApiError):
    status, code = 404, "not_found"


class Rejected(ApiError):
    """The workflow refused the request (an Update validator said no)."""

    status, code = 409, "rejected"


@asynccontextmanager
async def temporal_call(what: str) -> AsyncIterator[None]:
    """Translate Temporal errors raised inside the block."""
    try:
        yield
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise Rejected(f"{what}: {getattr(cause, 'message', None) or cause or err}") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and "already completed" in (err.message or ""):
            # the run exists but has ended: nothing left to answer, decide or cancel
            raise Rejected(f"{what}: the run has already finished") from None
        if err.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFound(f"{what}: run not found") from None
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            raise Unavailable(f"{what}: Temporal is unavailable, try again") from None
        raise

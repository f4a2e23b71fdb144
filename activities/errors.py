"""Turning connector failures into Temporal application errors named as in spec §4."""
from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from connectors.errors import ConnectorError


def to_application_error(err: ConnectorError) -> ApplicationError:
    """An ApplicationError whose type is the spec error name; attempt number in its details."""
    delay = timedelta(seconds=err.retry_after) if err.retry_after else None
    return ApplicationError(err.message, {"attempt": activity.info().attempt, "status": err.status},
                            type=err.name, non_retryable=not err.retryable, next_retry_delay=delay)

"""The one error type of the connectors package (spec §4 error names)."""
from __future__ import annotations

from typing import Any

ERROR_NAMES = frozenset({"http_4xx", "http_5xx", "timeout", "connection", "validation", "connector"})
_RETRYABLE_4XX = frozenset({408, 429})


class ConnectorError(Exception):
    """A failed connector call or a bad connector spec, named by a spec §4 error name."""

    def __init__(
        self,
        name: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        if name not in ERROR_NAMES:
            raise ValueError(f"unknown connector error name {name!r}")
        super().__init__(message)
        self.name = name
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """False for validation/connector errors and for 4xx other than 408 and 429."""
        if self.name in ("validation", "connector"):
            return False
        if self.name == "http_4xx":
            return self.status in _RETRYABLE_4XX
        return True

    def with_message(self, message: str) -> ConnectorError:
        """The same error with another message (used to redact secrets)."""
        return ConnectorError(self.name, message, status=self.status, retry_after=self.retry_after)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, e.g. for Temporal ApplicationError details."""
        return {
            "name": self.name,
            "message": self.message,
            "status": self.status,
            "retry_after": self.retry_after,
            "retryable": self.retryable,
        }

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"

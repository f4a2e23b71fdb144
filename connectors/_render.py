"""Template rendering for connector calls: ``procedures.expressions.render`` with errors renamed.

Rendering is single pass (inserted values are never rendered again); a string that is exactly
one "{{ expr }}" keeps the value's type. Failures become ConnectorError("connector").
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from procedures.errors import ProcedureError
from procedures.expressions import render as _render

from connectors.errors import ConnectorError

TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render every string inside dicts/lists once against ``scope``."""
    try:
        return _render(value, scope, now=_now)
    except ProcedureError as exc:
        raise ConnectorError("connector", f"template error: {exc}") from None

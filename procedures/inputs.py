"""Validate a run's input against the procedure's ``inputs`` JSON Schema (draft 2020-12)."""
from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

from procedures.errors import ProcedureError


def validate_inputs(schema: dict[str, Any] | bool | None, data: Any) -> list[str]:
    """Error messages (``"email: 'x' is not a 'email'"``), empty when ``data`` is valid.

    A None schema accepts any object (a mapping); an invalid schema raises ProcedureError.
    """
    if schema is None:
        return [] if isinstance(data, dict) else [f"(input): {data!r} is not of type 'object'"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ProcedureError(f"invalid inputs schema: {exc.message}") from None
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(input)'}: {e.message}" for e in errors]

"""The one error type of the procedures package, and located problems."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Problem:
    """One located problem in a procedure document."""

    file: str
    line: int
    column: int
    step_id: str | None
    message: str
    rule: str

    def format(self) -> str:
        """Render as ``FILE:LINE:COL: STEP_ID: message`` ("-" when not in a step), on one line:
        control characters from the document (a key with a line break, say) are escaped."""
        return (f"{_one_line(self.file)}:{self.line}:{self.column}: {_one_line(self.step_id or '-')}: "
                f"{_one_line(self.message)}")


def _one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class ProcedureError(Exception):
    """Raised for every problem found by this package; ``problems`` lists located details."""

    def __init__(self, message: str, problems: Iterable[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems: list[Problem] = list(problems or [])

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        lines = [p.format() for p in self.problems]
        return "\n".join(lines if lines == [self.message] else [self.message, *lines])


class ExpressionError(ProcedureError):
    """An expression or template that does not parse, is forbidden, or fails to evaluate."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"expression {expression!r}: {reason}")
        self.expression = expression
        self.reason = reason

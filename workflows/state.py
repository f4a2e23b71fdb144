"""Run state kept by the interpreter and shown by the `state` query. Pure."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from procedures.expressions import to_text

_SECRETISH = re.compile(r"(secret|token|password|passwd|authorization|api[_-]?key|credential)", re.I)
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """Copy of `value` with every value under a secret-looking key replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRETISH.search(k) else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


# What an approval request shows its approvers (and what its request hash covers).
DETAIL_ROWS = 40          # rows shown; more are summarized in one last row
DETAIL_TEXT = 200         # characters of one value (longer ones are cut with an ellipsis)
DETAIL_DEPTH = 4          # levels of nesting flattened into dotted names
DETAIL_HIDDEN = ("run", "conversation")  # ids and the customer's contact, not what is approved
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def approval_details(variables: dict[str, Any]) -> list[list[str]]:
    """The run's inputs and the names saved so far as readable `[name, value]` rows.

    Secret-looking keys are redacted; nested objects become dotted names (`order.total`), lists of
    objects `items[0].sku`; each value is one line of at most DETAIL_TEXT characters (a line break
    in customer data could otherwise pose as a link line in the plain-text e-mail).
    """
    rows: list[list[str]] = []

    def walk(label: str, value: Any, depth: int) -> None:
        if isinstance(value, dict) and value and depth < DETAIL_DEPTH:
            for key, item in value.items():
                walk(f"{label}.{key}", item, depth + 1)
        elif (isinstance(value, list) and value and depth < DETAIL_DEPTH
              and all(isinstance(v, dict) for v in value)):
            for i, item in enumerate(value):
                walk(f"{label}[{i}]", item, depth + 1)
        else:
            text = _CONTROL.sub(" ", to_text(value)).strip()
            if len(text) > DETAIL_TEXT:
                text = text[:DETAIL_TEXT - 1] + "\u2026"
            rows.append([_CONTROL.sub(" ", label)[:120], text])

    clean = redact(variables)
    for name in ["inputs", *[n for n in clean if n != "inputs"]]:
        if name in clean and name not in DETAIL_HIDDEN:
            walk(name, clean[name], 0)
    if len(rows) > DETAIL_ROWS:
        rows = rows[:DETAIL_ROWS - 1] + [["\u2026", f"{len(rows) - DETAIL_ROWS + 1} more values not shown"]]
    return rows


# Line breaks of every kind (what str.splitlines splits on, and what mail clients may show as a
# new line) and the other control characters.
_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def one_line_values(value: Any) -> Any:
    """Copy of `value` with every text in it on one line (runs of line breaks and control
    characters become one space): what an approval message interpolates cannot add lines."""
    if isinstance(value, str):
        return _BREAKS.sub(" ", value)
    if isinstance(value, dict):
        return {k: one_line_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [one_line_values(v) for v in value]
    return value


def call_refs(steps: list[Any]) -> list[list[Any]]:
    """`[procedure, version or None]` of every `call` step in `steps`, nested ones too, once each."""
    found: list[list[Any]] = []

    def walk(items: Any) -> None:
        for step in items if isinstance(items, list) else []:
            if not isinstance(step, dict):
                continue
            if step.get("type") == "call" and isinstance(step.get("procedure"), str):
                ref = [step["procedure"], step.get("version")]
                if ref not in found:
                    found.append(ref)
            for branch in (step.get("branches") or {}).values() if isinstance(step.get("branches"), dict) else []:
                walk(branch)
            walk(step.get("steps"))

    walk(steps)
    return found


class StepFailure(Exception):
    """A step failed with a spec §4 error name; `on_error` may catch it."""

    def __init__(self, name: str, message: str, step_id: str | None = None,
                 attempts: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.step_id = step_id
        self.attempts = attempts

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step_id, "message": self.message}


class Finish(Exception):
    """Ends the whole run (succeed, fail, handoff, end of the top-level list)."""

    def __init__(self, status: str, error: dict | None = None, result: Any = None) -> None:
        super().__init__(status)
        self.status = status
        self.error = error
        self.result = result


@dataclass
class Scope:
    """Variables visible to a block of steps, and the names that block saved."""

    vars: dict[str, Any]
    saved: dict[str, Any] = field(default_factory=dict)

    def child(self, **extra: Any) -> "Scope":
        return Scope(vars={**self.vars, **extra})

    def save(self, name: str, value: Any) -> None:
        """Store `value` at `name`; a dotted name nests into objects (`order.total`)."""
        root, *rest = name.split(".")
        if not rest:
            self.vars[root] = value
            self.saved[root] = value
            return
        base = self.vars.get(root)
        base = dict(base) if isinstance(base, dict) else {}
        node = base
        for part in rest[:-1]:
            nxt = node.get(part)
            node[part] = dict(nxt) if isinstance(nxt, dict) else {}
            node = node[part]
        node[rest[-1]] = value
        self.vars[root] = base
        self.saved[root] = base


@dataclass
class StepRecord:
    id: str
    type: str
    status: str
    started_at: str
    path: str = ""
    attempts: int = 0
    ended_at: str | None = None
    error: dict | None = None
    output: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "path": self.path, "status": self.status,
                "attempts": self.attempts, "started_at": self.started_at,
                "ended_at": self.ended_at, "error": self.error, "output": redact(self.output)}

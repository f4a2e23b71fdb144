"""The version-1 document model as data tables (spec §1, §3, §4).

Each field maps to a *kind*; the validator checks a field by its kind, reports fields that
are not in the table of their step type, and uses ``REQUIRED`` for missing ones.

Which step fields are templates (spec §2: "every string value of a step is a template, except
id, type, step targets and the bare expressions") follows from the kinds: ``template*``,
``step_duration``, ``duration_list``, ``url``, ``auth``, ``template_regex`` and ``escalate``'s
``to`` and ``after`` are rendered at run time. The other string kinds are structure the
validator must resolve before a run (names saved into the scope, connectors, operations, the
called procedure, HTTP methods, JSONPaths, error names, retry policy), so they are literal.
"""
from __future__ import annotations

import re

LANGUAGE_VERSION = 1

PROCEDURE_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,63}")
STEP_ID = re.compile(r"[a-z0-9_]+")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Names always in the run scope (spec §2); ``secrets`` only in http url/headers/query/auth.
ROOT_NAMES = frozenset({"inputs", "conversation", "run"})
SECRET_FIELDS = frozenset({"url", "headers", "query", "auth"})

ERROR_NAMES = (
    "http_4xx", "http_5xx", "timeout", "connection", "validation", "expression",
    "approval_rejected", "approval_timeout", "ask_timeout", "connector", "any",
)
NOT_RETRIED = frozenset({"validation", "expression"})

TOP_LEVEL_FIELDS: dict[str, str] = {
    "procedure": "procedure_id", "title": "string", "description": "string",
    "version": "positive_int", "trigger": "trigger", "inputs": "inputs_schema",
    "secrets": "secret_names", "defaults": "defaults", "steps": "steps",
}
TOP_LEVEL_REQUIRED = ("procedure", "steps")
TRIGGER_FIELDS: dict[str, str] = {"intents": "string_list", "keywords": "string_list"}
DEFAULTS_FIELDS: dict[str, str] = {"timeout": "duration", "retry": "retry"}  # literal: no step scope
RETRY_FIELDS: dict[str, str] = {
    "max_attempts": "attempts", "initial_interval": "duration", "backoff": "number",
    "max_interval": "duration", "non_retryable": "non_retryable",
}
ON_ERROR_FIELDS: dict[str, str] = {"errors": "error_names", "goto": "target"}
CASE_FIELDS: dict[str, str] = {"when": "expression", "goto": "target"}
ESCALATE_FIELDS: dict[str, str] = {"to": "template_list", "after": "step_duration"}
MAX_RETRY_ATTEMPTS = 100
MAX_INT = 2 ** 31 - 1  # versions, counts and limits: what both databases store as an integer

COMMON_FIELDS: dict[str, str] = {
    "id": "step_id", "type": "step_type", "if": "expression", "next": "target",
    "end": "true", "save_as": "name", "timeout": "step_duration", "retry": "retry",
    "on_error": "on_error",
}
TERMINAL_TYPES = frozenset({"handoff", "succeed", "fail"})
_NOT_ON_TERMINAL = ("next", "end")

_CONNECTOR_FIELDS: dict[str, str] = {
    "connector": "connector", "operation": "operation", "params": "template",
    "assign": "assign",
}
STEP_FIELDS: dict[str, dict[str, str]] = {
    "message": {"text": "template_text"},
    "ask": {"text": "template_text", "schema": "answer_schema", "pattern": "template_regex",
            "max_attempts": "positive_int", "timeout": "step_duration", "on_timeout": "target"},
    "lookup": dict(_CONNECTOR_FIELDS),
    "action": dict(_CONNECTOR_FIELDS),
    "http": {"method": "http_method", "url": "url", "headers": "template_map",
             "query": "template_map", "body": "template", "auth": "auth",
             "expect_status": "status_list", "extract": "jsonpath_map", "assign": "assign"},
    "set": {"set": "set_map"},
    "switch": {"cases": "cases", "default": "target"},
    "approval": {"approvers": "template_list", "quorum": "quorum",
                 "message": "template_text", "timeout": "step_duration",
                 "reminders": "duration_list", "escalate": "escalate",
                 "on_reject": "target", "on_timeout": "target"},
    "wait": {"for": "step_duration", "until": "template_text"},
    "parallel": {"branches": "branches"},
    "for_each": {"items": "expression", "as": "identifier", "steps": "steps",
                 "max_items": "positive_int", "max_concurrency": "positive_int"},
    "call": {"procedure": "procedure_id", "version": "positive_int", "inputs": "template"},
    "handoff": {"reason": "template_text", "team": "template_text"},
    "succeed": {"output": "template"},
    "fail": {"error": "template_text", "message": "template_text"},
}
STEP_TYPES: tuple[str, ...] = tuple(STEP_FIELDS)

REQUIRED: dict[str, tuple[str, ...]] = {
    "message": ("text",), "ask": ("text",), "lookup": ("connector", "operation"),
    "action": ("connector", "operation"), "http": ("url",), "set": ("set",),
    "approval": ("approvers",), "parallel": ("branches",), "for_each": ("items", "steps"),
    "call": ("procedure",), "handoff": ("reason",),
}
# Checked by their own rules rather than as plain missing fields.
WAIT_TYPES = frozenset({"approval", "ask"})
TARGET_FIELDS = ("next", "default", "on_reject", "on_timeout")

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "header": ("name", "value"), "query": ("name", "value"), "bearer": ("token",),
    "basic": ("username", "password"),
    "oauth2_client_credentials": ("token_url", "client_id", "client_secret", "scope"),
}
AUTH_PLAIN_FIELDS = frozenset({"type", "name", "token_url", "scope"})
CREDENTIAL_HEADER = re.compile(r"^(authorization|proxy-authorization|x-api-key|cookie)$|token|secret|password"
                               r"|passwd|api[-_]?key|access[-_]?key|credential", re.I)
CREDENTIAL_NAME = CREDENTIAL_HEADER  # header, query and URL parameter names that carry credentials


def step_fields(step_type: str) -> dict[str, str]:
    """All fields (name -> kind) a step of ``step_type`` may have."""
    own = STEP_FIELDS[step_type]
    common = {k: v for k, v in COMMON_FIELDS.items()
              if not (step_type in TERMINAL_TYPES and k in _NOT_ON_TERMINAL)}
    return {**common, **own}


def nested_step_lists(step: dict) -> list[tuple[tuple[str, ...], list]]:
    """The step lists nested in a step: ``(relative path, steps)`` for branches and loop bodies."""
    found: list[tuple[tuple[str, ...], list]] = []
    if step.get("type") == "parallel" and isinstance(step.get("branches"), dict):
        for name, steps in step["branches"].items():
            if isinstance(steps, list):
                found.append((("branches", name), steps))
    if step.get("type") == "for_each" and isinstance(step.get("steps"), list):
        found.append((("steps",), step["steps"]))
    return found

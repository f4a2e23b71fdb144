"""Normalize a document in the original design's shape (spec §6) to version 1.

Generated nodes keep the location of the original node they came from, so problems found
later point into the file the author wrote.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from procedures.errors import ExpressionError
from procedures.expressions import names_used, template_expressions
from procedures.parser import Document, Path

ConnectorCatalog = Mapping[str, dict]
ORIGINAL_APPROVAL_TIMEOUT = "72h"
USER_STEP_ID = "user_context"
USER_VALUE = "{{ conversation.customer or inputs }}"
_DROPPED_TOP = {"enabled"}
_DROPPED_STEP = {"name", "description"}
_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)


def is_original_shape(data: Mapping[str, Any]) -> bool:
    """True for the original design's shape: ``id``+``name`` on top, or ``config``/``nextStep`` steps."""
    if "procedure" not in data and "id" in data and "name" in data:
        return True
    steps = data.get("steps")
    return isinstance(steps, list) and any(
        isinstance(s, dict) and ("config" in s or "nextStep" in s) for s in steps
    )


def snake_case(name: str) -> str:
    """``orderId`` -> ``order_id``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def strip_placeholders(condition: str) -> str:
    """``"{{order.total}} > 100"`` -> ``"order.total > 100"`` (a bare expression)."""
    return _PLACEHOLDER.sub(lambda m: m.group(1), condition).strip()


def normalize(doc: Document, catalog: ConnectorCatalog | None = None) -> Document:
    """Return ``doc`` unchanged when it is version 1, else its version-1 equivalent."""
    if not is_original_shape(doc.data):
        return doc
    return _Normalizer(doc, catalog).run()


class _Normalizer:
    def __init__(self, doc: Document, catalog: ConnectorCatalog | None) -> None:
        self.doc = doc
        self.catalog = catalog or {}
        self.out = Document(data={}, filename=doc.filename, format=doc.format)

    # --- locations -------------------------------------------------------------------------
    def place(self, new: Path, orig: Path) -> None:
        """Give the generated node at ``new`` the location (and key location) of ``orig``."""
        self.out.locations[new] = self.doc.where(orig)
        self.out.key_locations[new] = self.doc.where(orig, key=True)

    def copy(self, new: Path, orig: Path, value: Any) -> Any:
        """Copy a subtree, carrying every location along."""
        self.place(new, orig)
        if isinstance(value, dict):
            return {k: self.copy((*new, k), (*orig, k), v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.copy((*new, i), (*orig, i), v) for i, v in enumerate(value)]
        return value

    # --- document --------------------------------------------------------------------------
    def run(self) -> Document:
        data, out = self.doc.data, self.out.data
        self.place((), ())
        renames = {"id": "procedure", "name": "title"}
        for key, value in data.items():
            if key in _DROPPED_TOP or key == "steps":
                continue
            if key == "trigger" and isinstance(value, dict) and "type" in value:
                trigger = self.trigger(value)
                if trigger:
                    out["trigger"] = trigger
                continue
            new_key = renames.get(key, key)
            out[new_key] = self.copy((new_key,), (key,), value)
        steps = data.get("steps")
        if isinstance(steps, list):
            out["steps"] = self.steps(steps)
        elif steps is not None:
            out["steps"] = self.copy(("steps",), ("steps",), steps)
        return self.out

    def trigger(self, trigger: dict) -> dict | None:
        kind, condition = trigger.get("type"), trigger.get("condition")
        field = {"keyword": "keywords", "intent": "intents"}.get(kind) if isinstance(kind, str) else None
        if field is None:
            return None if kind == "manual" else self.copy(("trigger",), ("trigger",), trigger)
        self.place(("trigger",), ("trigger",))
        values = condition if isinstance(condition, list) else [condition]
        self.place(("trigger", field), ("trigger", "condition"))
        for i in range(len(values)):
            self.place(("trigger", field, i), ("trigger", "condition"))
        return {field: list(values)}

    def steps(self, steps: list[Any]) -> list[Any]:
        offset = 1 if self.uses_user(steps) else 0
        result = [self.step(i, i + offset, step, steps) for i, step in enumerate(steps)]
        if offset:
            result.insert(0, self.user_step())
        return result

    def uses_user(self, steps: list[Any]) -> bool:
        """True when any placeholder or condition of the original steps reads ``user``."""
        exprs = [e for text in _strings(steps) for e in template_expressions(text)]
        exprs += [strip_placeholders(s["config"]["condition"]) for s in steps
                  if isinstance(s, dict) and isinstance(s.get("config"), dict)
                  and isinstance(s["config"].get("condition"), str)]
        for expr in exprs:
            try:
                if "user" in names_used(expr):
                    return True
            except ExpressionError:
                continue
        return False

    def user_step(self) -> dict:
        base = ("steps", 0)
        for path in (base, (*base, "id"), (*base, "type"), (*base, "set"), (*base, "set", "user")):
            self.place(path, ("steps",))
        return {"id": USER_STEP_ID, "type": "set", "set": {"user": USER_VALUE}}

    # --- steps -----------------------------------------------------------------------------
    def step(self, i: int, k: int, step: Any, steps: list[Any]) -> Any:
        orig, new = ("steps", i), ("steps", k)
        if not isinstance(step, dict) or "config" not in step and "nextStep" not in step:
            return self.copy(new, orig, step)
        self.place(new, orig)
        config = step.get("config") if isinstance(step.get("config"), dict) else {}
        result: dict[str, Any] = {}
        for key, value in step.items():
            if key in _DROPPED_STEP or key in ("config", "nextStep", "type"):
                continue
            result[key] = self.copy((*new, key), (*orig, key), value)
        stype = step.get("type")
        converter = self.converters.get(stype) if isinstance(stype, str) else None
        if converter is None:
            result["type"] = self.copy((*new, "type"), (*orig, "type"), stype)
            self.config_fields(result, new, orig, config, {})
        else:
            self.place((*new, "type"), (*orig, "type"))
            converter(self, result, new, orig, config)
        if "nextStep" in step:
            result["next"] = self.copy((*new, "next"), (*orig, "nextStep"), step["nextStep"])
        elif stype != "conditional" and i < len(steps) - 1:
            result["end"] = True
            self.place((*new, "end"), orig)
        return result

    def config_fields(self, result: dict, new: Path, orig: Path, config: dict,
                      renames: dict[str, str]) -> None:
        """Copy config entries under their version-1 names; unknown ones pass through."""
        for key, value in config.items():
            target = renames.get(key, key)
            if target is None:
                continue
            src = (*orig, "config", key)
            if target == "params" and isinstance(value, dict):
                self.place((*new, "params"), src)
                result["params"] = {}
                for name, item in value.items():
                    snake = snake_case(name)
                    result["params"][snake] = self.copy((*new, "params", snake), (*src, name), item)
            else:
                result[target] = self.copy((*new, target), src, value)

    def _message(self, result: dict, new: Path, orig: Path, config: dict) -> None:
        result["type"] = "message"
        self.config_fields(result, new, orig, config, {"template": "text", "message": "text"})

    def _data_lookup(self, result: dict, new: Path, orig: Path, config: dict) -> None:
        result["type"] = "lookup"
        self.connector_step(result, new, orig, config, "query")

    def _api_call(self, result: dict, new: Path, orig: Path, config: dict) -> None:
        result["type"] = "action"
        self.connector_step(result, new, orig, config, "endpoint")

    def connector_step(self, result: dict, new: Path, orig: Path, config: dict, op_key: str) -> None:
        """``responseMapping`` (source path -> dotted target, spec §6) or else the operation's
        ``legacy_response`` (target -> JSONPath) becomes ``assign`` (target -> JSONPath)."""
        self.config_fields(result, new, orig, config,
                           {"dataConnector": "connector", op_key: "operation", "responseMapping": None})
        if "responseMapping" in config:
            mapping = config["responseMapping"]
            src = (*orig, "config", "responseMapping")
            if not isinstance(mapping, dict):  # the validator reports the wrong type at its place
                result["assign"] = self.copy((*new, "assign"), src, mapping)
                return
            self.place((*new, "assign"), src)
            result["assign"] = {}
            for source, target in mapping.items():
                name = target if isinstance(target, str) else repr(target)
                result["assign"][name] = _jsonpath(source)
                self.out.locations[(*new, "assign", name)] = self.doc.where((*src, source), key=True)
                self.out.key_locations[(*new, "assign", name)] = self.doc.where((*src, source))
            return
        spec = self.catalog.get(str(result.get("connector"))) or {}
        operation = (spec.get("operations") or {}).get(str(result.get("operation"))) or {}
        mapping = operation.get("legacy_response")
        if isinstance(mapping, dict) and mapping:
            src = (*orig, "config", op_key)
            self.place((*new, "assign"), src)
            result["assign"] = {}
            for target, jsonpath in mapping.items():
                result["assign"][target] = _jsonpath(jsonpath)
                self.place((*new, "assign", target), src)

    def _conditional(self, result: dict, new: Path, orig: Path, config: dict) -> None:
        result["type"] = "switch"
        self.config_fields(result, new, orig, config,
                           {"condition": None, "trueStep": None, "falseStep": "default"})
        src = (*orig, "config")
        condition = config.get("condition")
        case = {"when": strip_placeholders(condition) if isinstance(condition, str) else condition,
                "goto": config.get("trueStep")}
        self.place((*new, "cases"), (*src, "condition"))
        self.place((*new, "cases", 0), (*src, "condition"))
        self.place((*new, "cases", 0, "when"), (*src, "condition"))
        self.place((*new, "cases", 0, "goto"), (*src, "trueStep"))
        result["cases"] = [case]

    def _approval(self, result: dict, new: Path, orig: Path, config: dict) -> None:
        result["type"] = "approval"
        self.config_fields(result, new, orig, config, {})
        if "timeout" not in result:
            result["timeout"] = ORIGINAL_APPROVAL_TIMEOUT
            self.place((*new, "timeout"), (*orig, "config"))

    # The original step types, by name (an explicit table: a `type` such as "_init__" must not
    # reach an arbitrary method).
    converters = {"message": _message, "data_lookup": _data_lookup, "api_call": _api_call,
                  "conditional": _conditional, "approval": _approval}


def _jsonpath(path: Any) -> Any:
    """``orders[0].total_price`` -> ``$.orders[0].total_price``; other values unchanged (checked later)."""
    return path if not isinstance(path, str) or path.startswith("$") else f"$.{path}"


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)

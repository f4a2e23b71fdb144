"""Validation of a version-1 document (spec §7): every problem located, with a fix hint."""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

from jsonpath_ng import parse as jsonpath_parse
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from procedures import flow, models as m
from procedures.durations import duration_problem
from procedures.errors import ExpressionError, Problem
from procedures.expressions import (
    bare_secrets, is_single_template, names_used, parse_check, secret_refs, template_expressions)
from procedures.urls import url_credential_problem
from procedures.parser import Document, Path
from procedures.regexes import regex_problem, schema_pattern_problems

ConnectorCatalog = Mapping[str, dict]


def validate(doc: Document, catalog: ConnectorCatalog | None = None) -> list[Problem]:
    """Return every problem of ``doc`` (empty when valid), sorted by position."""
    ctx = _Context(doc, catalog)
    ctx.check_fields((), doc.data, m.TOP_LEVEL_FIELDS, "the procedure", None)
    for name in m.TOP_LEVEL_REQUIRED:
        if name not in doc.data:
            ctx.report((), "missing-field", None, f"missing `{name}`; add `{name}:` at the top level")
    secrets = doc.data.get("secrets")
    ctx.declared_secrets = {s for s in secrets if isinstance(s, str)} if isinstance(secrets, list) else set()
    steps = doc.data.get("steps")
    if isinstance(steps, list):
        ctx.check_step_list(("steps",), steps)
        ctx.check_flow(("steps",), steps, set())
        ctx.check_uses()
    return sorted(ctx.problems, key=lambda p: (p.line, p.column, p.rule))


@lru_cache(maxsize=256)
def _schema_error(schema_json: str) -> tuple[tuple[Any, ...], str] | None:
    """(path, message) of the first error of a JSON Schema given as JSON text, or None.

    Checking a schema against the 2020-12 meta-schema is most of a validation's time, and the
    same schemas come back again and again (every publish, every dry run): cached by content.
    """
    try:
        Draft202012Validator.check_schema(json.loads(schema_json))
    except SchemaError as exc:
        return tuple(exc.path), exc.message
    return None


def _hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


@dataclass
class _Use:
    """An expression found in a step, checked for names once dataflow is known."""

    path: Path
    step_path: Path | None
    step_id: str | None
    expr: str
    secrets_ok: bool


@dataclass
class _Context:
    doc: Document
    catalog: ConnectorCatalog | None
    problems: list[Problem] = field(default_factory=list)
    declared_secrets: set[str] = field(default_factory=set)
    uses: list[_Use] = field(default_factory=list)
    avail: dict[Path, set[str]] = field(default_factory=dict)
    first_ids: dict[str, Path] = field(default_factory=dict)
    step_path: Path | None = None
    step_id: str | None = None

    # --- reporting -------------------------------------------------------------------------
    def report(self, path: Path, rule: str, step_id: str | None, message: str, *, key: bool = False) -> None:
        line, col = self.doc.where(path, key=key)
        self.problems.append(Problem(self.doc.filename, line, col, step_id, message, rule))

    def bad(self, path: Path, message: str, rule: str = "field-type") -> None:
        self.report(path, rule, self.step_id, message)

    # --- generic fields ----------------------------------------------------------------------
    def check_fields(self, path: Path, value: Any, fields: Mapping[str, str], what: str,
                     required: tuple[str, ...] | None = ()) -> bool:
        """Check a mapping's keys against ``fields`` and each value by its kind."""
        if not isinstance(value, dict):
            self.bad(path, f"{what} must be a mapping with fields {', '.join(fields)}")
            return False
        suggested: set[str] = set()
        for key, item in value.items():
            if key not in fields:
                hint = _hint(key, fields)
                suggested.add(hint.split("'")[1] if hint else "")
                self.report((*path, key), "unknown-field", self.step_id,
                            f"unknown field '{key}' in {what}{hint or '; allowed: ' + ', '.join(fields)}",
                            key=True)
            else:
                self.check_kind(fields[key], (*path, key), item)
        for key in required or ():
            if key not in value and key not in suggested:
                self.bad(path, f"{what} is missing `{key}`; add `{key}: ...`", "missing-field")
        return True

    def check_kind(self, kind: str, path: Path, value: Any) -> None:
        checker: Callable[[Path, Any], None] | None = getattr(self, f"_k_{kind}", None)
        if checker is not None:
            checker(path, value)

    # --- kinds -------------------------------------------------------------------------------
    def _k_procedure_id(self, path: Path, value: Any) -> None:
        if not isinstance(value, str) or not m.PROCEDURE_ID.fullmatch(value):
            suggestion = re.sub(r"[^a-z0-9-]+", "-", str(value).lower()).strip("-")
            self.bad(path, f"invalid procedure id {value!r}: use 3-64 lowercase letters, digits and '-'"
                     f"{', e.g. ' + repr(suggestion) if m.PROCEDURE_ID.fullmatch(suggestion) else ''}", "bad-id")

    def _k_string(self, path: Path, value: Any) -> None:
        if not isinstance(value, str):
            self.bad(path, f"expected text, got {value!r}; quote it")

    def _k_positive_int(self, path: Path, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= m.MAX_INT:
            shown = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 20 else "a huge number"
            self.bad(path, f"expected a whole number from 1 to {m.MAX_INT:,}, got {shown}")

    def _k_quorum(self, path: Path, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.bad(path, f"`quorum` is how many approvals are needed: a whole number from 1 to the number "
                     f"of approvers, got {value!r}; e.g. `quorum: 1`", "bad-quorum")

    def _k_number(self, path: Path, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
            self.bad(path, f"expected a number >= 1, got {value!r}", "bad-retry")

    def _k_true(self, path: Path, value: Any) -> None:
        if value is not True:
            self.bad(path, f"`end` can only be `true`, got {value!r}; remove it to continue with the next step")

    def _k_string_list(self, path: Path, value: Any) -> None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(path, "expected a list of texts, e.g. [refund, money back]")

    def _k_trigger(self, path: Path, value: Any) -> None:
        self.check_fields(path, value, m.TRIGGER_FIELDS, "trigger")

    def _k_defaults(self, path: Path, value: Any) -> None:
        self.check_fields(path, value, m.DEFAULTS_FIELDS, "defaults")

    def _k_secret_names(self, path: Path, value: Any) -> None:
        if not isinstance(value, list) or not all(isinstance(v, str) and m.SECRET_NAME.fullmatch(v) for v in value):
            self.bad(path, "`secrets` must be a list of secret names, e.g. [shop_token]")

    def _k_inputs_schema(self, path: Path, value: Any) -> None:
        self._schema(path, value, "bad-inputs-schema")

    def _k_answer_schema(self, path: Path, value: Any) -> None:
        self._schema(path, value, "bad-ask-schema")

    def _schema(self, path: Path, value: Any, rule: str) -> None:
        found = _schema_error(json.dumps(value, sort_keys=True))
        if found is not None:
            where, message = found
            self.bad((*path, *where), f"invalid JSON Schema at {'/'.join(str(p) for p in where) or '(root)'}: "
                     f"{message}; see https://json-schema.org/draft/2020-12", rule)
            return
        for where, pattern, code, message in schema_pattern_problems(value):
            self.bad((*path, *where), f"schema pattern {pattern!r}: {message}", code)

    def _k_duration(self, path: Path, value: Any) -> None:
        """A literal duration (``defaults`` and ``retry``: policy fixed before any step runs)."""
        problem = duration_problem(value)
        if problem is not None:
            self.bad(path, problem, "bad-duration")

    def _k_step_duration(self, path: Path, value: Any) -> None:
        """A step's duration: literal (checked now) or a template (checked when it renders)."""
        if isinstance(value, str) and "{{" in value:
            self._k_template(path, value)
        else:
            self._k_duration(path, value)

    def _k_duration_list(self, path: Path, value: Any) -> None:
        if not isinstance(value, list):
            self.bad(path, "expected a list of durations, e.g. [24h, 48h]")
            return
        for i, item in enumerate(value):
            self._k_step_duration((*path, i), item)

    def _k_retry(self, path: Path, value: Any) -> None:
        if self.check_fields(path, value, m.RETRY_FIELDS, "retry") and "max_attempts" not in value:
            self.bad(path, "retry needs a finite `max_attempts`; add `max_attempts: 3`", "bad-retry")

    def _k_attempts(self, path: Path, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= m.MAX_RETRY_ATTEMPTS:
            self.bad(path, f"`max_attempts` must be a whole number from 1 to {m.MAX_RETRY_ATTEMPTS}, "
                     f"got {value!r}; e.g. `max_attempts: 3`", "bad-retry")

    def _k_error_names(self, path: Path, value: Any) -> None:
        if not isinstance(value, list) or not value:
            self.bad(path, f"expected a list of error names from: {', '.join(m.ERROR_NAMES)}")
            return
        for i, name in enumerate(value):
            if name not in m.ERROR_NAMES:
                self.bad((*path, i), f"unknown error name {name!r}"
                         f"{_hint(str(name), m.ERROR_NAMES) or '; known: ' + ', '.join(m.ERROR_NAMES)}",
                         "unknown-error")

    def _k_non_retryable(self, path: Path, value: Any) -> None:
        self._k_error_names(path, value)
        if isinstance(value, list) and "any" in value:
            self.bad((*path, value.index("any")), "`any` in `non_retryable` would mean \"retry nothing\"; "
                     "set `max_attempts: 1` instead, or list the error names not to retry",
                     "non-retryable-any")

    def _k_on_error(self, path: Path, value: Any) -> None:
        if not isinstance(value, list):
            self.bad(path, "`on_error` must be a list of `{errors: [names], goto: step_id}`")
            return
        for i, handler in enumerate(value):
            self.check_fields((*path, i), handler, m.ON_ERROR_FIELDS, "an on_error entry", ("errors", "goto"))
            errors = handler.get("errors") if isinstance(handler, dict) else None
            if isinstance(errors, list) and "any" in errors and (i < len(value) - 1 or errors[-1] != "any"):
                self.bad((*path, i, "errors"), "`errors: [any]` catches everything, so it must be the "
                         "last on_error entry; move it to the end", "any-not-last")

    def _k_cases(self, path: Path, value: Any) -> None:
        if not isinstance(value, list) or not value:
            self.bad(path, "`cases` must be a non-empty list of `{when: condition, goto: step_id}`")
            return
        for i, case in enumerate(value):
            self.check_fields((*path, i), case, m.CASE_FIELDS, "a switch case", ("when", "goto"))

    def _k_escalate(self, path: Path, value: Any) -> None:
        if not isinstance(value, list):
            self.bad(path, "`escalate` must be a list of `{to: [emails], after: duration}`")
            return
        for i, item in enumerate(value):
            self.check_fields((*path, i), item, m.ESCALATE_FIELDS, "an escalate entry", ("to", "after"))

    def _k_ends_run(self, path: Path, value: Any) -> None:
        stype = self._step_type()
        self.report(path, "unknown-field", self.step_id,
                    f"a {stype} step ends the run, so it takes no `{path[-1]}`; remove it"
                    + (" (to go on after it, use another step type)" if path[-1] == "next" else ""), key=True)

    def _k_target(self, path: Path, value: Any) -> None:
        if not isinstance(value, str):
            self.bad(path, f"a step target must be a step id, got {value!r}")

    def _k_name(self, path: Path, value: Any) -> None:
        if not isinstance(value, str) or not m.IDENTIFIER.fullmatch(value) or value in m.ROOT_NAMES | {"secrets"}:
            self.bad(path, f"invalid variable name {value!r}: use letters, digits and '_' "
                     "(not inputs, conversation, run or secrets)", "bad-name")

    def _k_identifier(self, path: Path, value: Any) -> None:
        self._k_name(path, value)

    def _k_expression(self, path: Path, value: Any) -> None:
        if not isinstance(value, str):
            self.bad(path, f"expected a condition such as `order.total > 100`, got {value!r}", "expression-syntax")
        elif self._parses(path, value, bare=True):
            self.uses.append(_Use(path, self.step_path, self.step_id, value, False))

    def _parses(self, path: Path, expr: str, *, bare: bool) -> bool:
        try:
            parse_check(expr)
        except ExpressionError as exc:
            if bare and "{{" in expr:
                inner = " ".join(template_expressions(expr)) or expr.replace("{", "").replace("}", "").strip()
                self.bad(path, f"conditions and `items` are bare expressions: write {inner!r} without the "
                         "{{ }}", "expression-syntax")
            else:
                self.bad(path, f"expression {exc.expression!r} {exc.reason}", "expression-syntax")
            return False
        return True

    def _k_template(self, path: Path, value: Any) -> None:
        if isinstance(value, str):
            secrets_ok = self.step_path is not None and len(path) > len(self.step_path) \
                and path[len(self.step_path)] in m.SECRET_FIELDS and self._step_type() == "http"
            for expr in template_expressions(value):
                if self._parses(path, expr, bare=False):
                    self.uses.append(_Use(path, self.step_path, self.step_id, expr, secrets_ok))
        elif isinstance(value, dict):
            for key, item in value.items():
                self._k_template((*path, key), item)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self._k_template((*path, i), item)

    def _step_type(self) -> Any:
        step = self._get(self.step_path or ())
        return step.get("type") if isinstance(step, dict) else None

    def _get(self, path: Path) -> Any:
        node: Any = self.doc.data
        for part in path:
            node = node[part]
        return node

    def _k_template_text(self, path: Path, value: Any) -> None:
        if not isinstance(value, str):
            self.bad(path, f"expected text, got {value!r}; quote it")
        else:
            self._k_template(path, value)

    def _k_template_list(self, path: Path, value: Any) -> None:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.bad(path, "expected a non-empty list of texts, e.g. [manager@example.com]")
        else:
            self._k_template(path, value)

    def _k_template_map(self, path: Path, value: Any) -> None:
        if not isinstance(value, dict):
            self.bad(path, "expected a mapping of names to values")
            return
        self._k_template(path, value)
        for key, item in value.items():
            if m.CREDENTIAL_HEADER.search(str(key)) and not secret_refs(item):
                self.bad((*path, key), f"credential '{key}' is written inline; store it as a tenant "
                         f"secret and write `{key}: \"{{{{ secrets.NAME }}}}\"`", "inline-credential")

    def _k_set_map(self, path: Path, value: Any) -> None:
        if not isinstance(value, dict) or not value:
            self.bad(path, "`set` must be a mapping of variable names to values, e.g. {count: 0}")
            return
        for key, item in value.items():
            if not m.DOTTED_NAME.fullmatch(key) or key.split(".")[0] in m.ROOT_NAMES | {"secrets"}:
                self.report((*path, key), "bad-name", self.step_id,
                            f"invalid variable name {key!r}: use letters, digits, '_' and '.'", key=True)
            self._k_template((*path, key), item)

    def _k_assign(self, path: Path, value: Any) -> None:
        self._jsonpaths(path, value, m.DOTTED_NAME, "order.total")

    def _k_jsonpath_map(self, path: Path, value: Any) -> None:
        self._jsonpaths(path, value, m.IDENTIFIER, "total")

    def _jsonpaths(self, path: Path, value: Any, names: re.Pattern[str], example: str) -> None:
        if not isinstance(value, dict):
            self.bad(path, f"expected a mapping of names to JSONPaths, e.g. {{{example}: \"$.orders[0].total\"}}")
            return
        for key, expr in value.items():
            if not names.fullmatch(key) or key.split(".")[0] in m.ROOT_NAMES | {"secrets"}:
                self.report((*path, key), "bad-name", self.step_id, f"invalid name {key!r}; e.g. {example}", key=True)
            try:
                if not isinstance(expr, str):
                    raise ValueError("not text")
                jsonpath_parse(expr)
            except Exception as exc:  # jsonpath-ng raises several exception types
                self.bad((*path, key), f"JSONPath {expr!r} does not compile ({exc}); "
                         "write e.g. \"$.orders[0].id\"", "bad-jsonpath")

    def _k_template_regex(self, path: Path, value: Any) -> None:
        """A regular expression; with ``{{ }}`` parts a template, compiled once it is rendered."""
        if isinstance(value, str) and "{{" in value:
            self._k_template(path, value)
            return
        if not isinstance(value, str):
            self.bad(path, f"pattern must be text (a regular expression), got {value!r}; quote it", "bad-pattern")
            return
        problem = regex_problem(value)
        if problem is not None:
            code, message = problem
            hint = "; e.g. \"^#?[0-9]{4,}$\"" if code == "bad-pattern" else ""
            self.bad(path, f"pattern {value!r}: {message}{hint}", code)

    def _k_http_method(self, path: Path, value: Any) -> None:
        if not isinstance(value, str) or value not in m.HTTP_METHODS:
            hint = _hint(value.upper(), m.HTTP_METHODS) if isinstance(value, str) else ""
            self.bad(path, f"unknown HTTP method {value!r}{hint or '; use one of ' + ', '.join(sorted(m.HTTP_METHODS))}")

    def _k_url(self, path: Path, value: Any) -> None:
        self._k_template_text(path, value)
        problem = url_credential_problem(value) if isinstance(value, str) else None
        if problem:
            self.bad(path, problem, "inline-credential")

    def _k_status_list(self, path: Path, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in items):
            self.bad(path, "`expect_status` must be a status code or a list of them, e.g. [200, 201]")

    def _k_auth(self, path: Path, value: Any) -> None:
        if not isinstance(value, dict) or not isinstance(value.get("type"), str) \
                or value["type"] not in m.AUTH_FIELDS:
            self.bad(path, f"`auth` needs a `type` from: {', '.join(m.AUTH_FIELDS)}")
            return
        fields = {"type": "string", **{f: "auth_value" for f in m.AUTH_FIELDS[value["type"]]}}
        self.check_fields(path, value, fields, f"{value['type']} auth")
        self._k_template(path, value)
        for key, item in value.items():
            if key in m.AUTH_PLAIN_FIELDS or key not in fields:
                continue
            refs = secret_refs(item)
            if not (isinstance(item, str) and refs and re.fullmatch(r"\s*\{\{[^{}]*\}\}\s*", item)):
                self.bad((*path, key), f"credential `{key}` is written inline; auth values must be secret "
                         f"references: `{key}: \"{{{{ secrets.NAME }}}}\"`", "inline-credential")

    # --- steps -------------------------------------------------------------------------------
    def _k_steps(self, path: Path, value: Any) -> None:
        if not isinstance(value, list) or not value:
            self.bad(path, "expected a non-empty list of steps")

    def check_step_list(self, path: Path, steps: list[Any]) -> None:
        for i, step in enumerate(steps):
            self.check_step((*path, i), step)

    def check_step(self, path: Path, step: Any) -> None:
        outer = (self.step_path, self.step_id)
        sid = step.get("id") if isinstance(step, dict) else None
        self.step_path, self.step_id = path, sid if isinstance(sid, str) else None
        try:
            self._check_step(path, step)
        finally:
            self.step_path, self.step_id = outer

    def _check_step(self, path: Path, step: Any) -> None:
        if not isinstance(step, dict):
            self.bad(path, "a step must be a mapping with `id` and `type`")
            return
        self._check_step_id(path, step.get("id"))
        stype = step.get("type")
        if stype not in m.STEP_TYPES:
            what = "missing `type`" if stype is None else f"unknown step type {stype!r}"
            self.bad((*path, "type") if stype is not None else path,
                     f"{what}{_hint(str(stype), m.STEP_TYPES) or '; known types: ' + ', '.join(m.STEP_TYPES)}",
                     "unknown-type")
            return
        fields = m.step_fields(stype)
        if stype in m.TERMINAL_TYPES:  # a clearer word than "unknown field" for next/end
            fields = {**fields, "next": "ends_run", "end": "ends_run"}
        self.check_fields(path, step, fields, f"a {stype} step", m.REQUIRED.get(stype, ()))
        if step.get("end") is True and "next" in step and stype != "switch":
            self.bad((*path, "next"), "a step with `end: true` finishes there, so its `next` is never "
                     "used; remove `next` or `end`", "end-and-next")
        getattr(self, f"_step_{stype}", lambda p, s: None)(path, step)
        for rel, steps in m.nested_step_lists(step):
            self.check_step_list((*path, *rel), steps)

    def _check_step_id(self, path: Path, sid: Any) -> None:
        if sid is None:
            self.bad(path, "a step needs an `id`; add `id: my_step`", "missing-field")
            return
        if not isinstance(sid, str) or not m.STEP_ID.fullmatch(sid):
            fixed = re.sub(r"[^a-z0-9_]+", "_", str(sid).lower()).strip("_") or "step_1"
            self.bad((*path, "id"), f"invalid step id {sid!r}: use lowercase letters, digits and '_', "
                     f"e.g. {fixed!r}", "bad-id")
        if isinstance(sid, str) and sid in self.first_ids:
            line, col = self.doc.where((*self.first_ids[sid], "id"))
            self.bad((*path, "id"), f"duplicate step id {sid!r} (first used at line {line}, column {col}); "
                     "rename one of them", "duplicate-id")
        elif isinstance(sid, str):
            self.first_ids[sid] = path

    def _step_wait_timeout(self, path: Path, step: dict) -> None:
        if "timeout" not in step:
            self.bad(path, f"{step['type']} steps wait durably and need a finite timeout; "
                     "add `timeout: 48h`", "missing-timeout")

    def _step_ask(self, path: Path, step: dict) -> None:
        self._step_wait_timeout(path, step)
        if "pattern" in step and "schema" in step:
            self.bad((*path, "pattern"), "an ask checks its answer with `pattern` or with `schema`, not both; "
                     "remove one (a schema `{type: string, pattern: ...}` does both)", "pattern-and-schema")

    def _step_approval(self, path: Path, step: dict) -> None:
        self._step_wait_timeout(path, step)
        quorum = step.get("quorum")
        if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
            return  # reported by its kind
        people: list[Any] = list(step.get("approvers") or []) if isinstance(step.get("approvers"), list) else []
        for tier in step.get("escalate") if isinstance(step.get("escalate"), list) else []:
            if isinstance(tier, dict) and isinstance(tier.get("to"), list):
                people += tier["to"]
        if not all(isinstance(p, str) for p in people) or any(is_single_template(p) for p in people):
            return  # a `{{ }}` may give a list of approvers: known only at run time
        count = len({p.strip().lower() for p in people})
        if quorum > count:
            self.bad((*path, "quorum"), f"`quorum: {quorum}` needs more approvals than there are approvers "
                     f"({count}, counting escalation tiers), so it could never be approved; lower the quorum "
                     "or add approvers", "bad-quorum")

    def _step_switch(self, path: Path, step: dict) -> None:
        if "default" not in step:
            self.bad(path, "a switch needs a `default` target for when no case matches; "
                     "add `default: <step id>`", "switch-default")
        if "end" in step:
            self.report((*path, "end"), "end-on-switch", self.step_id,
                        "a switch always goes to one of its cases' `goto` or its `default`, so `end` does "
                        "nothing; remove it (point `default` at a `succeed` step to finish)", key=True)

    def _step_call(self, path: Path, step: dict) -> None:
        own = self.doc.data.get("procedure")
        if isinstance(own, str) and step.get("procedure") == own:
            self.bad((*path, "procedure"), f"this step calls {own!r}, the procedure it is in, which would "
                     "recurse until the run's step budget stops it; call another procedure or use a loop "
                     "(`for_each`, or a `switch` going back to an earlier step)", "recursive-call")

    def _step_wait(self, path: Path, step: dict) -> None:
        if ("for" in step) == ("until" in step):
            self.bad(path, "a wait needs exactly one of `for: 1h` or `until: <ISO-8601 time>`", "missing-field")

    def _step_for_each(self, path: Path, step: dict) -> None:
        if "max_items" not in step:
            self.bad(path, "for_each needs `max_items` to bound the loop; add `max_items: 100`",
                     "for-each-max-items")

    def _step_parallel(self, path: Path, step: dict) -> None:
        branches = step.get("branches")
        if not isinstance(branches, dict) or not branches:
            self.bad((*path, "branches"), "`branches` must map branch names to step lists")
            return
        for name in branches:
            if not m.IDENTIFIER.fullmatch(name):
                self.report((*path, "branches", name), "bad-branch-name", self.step_id,
                            f"branch name {name!r} must be an identifier (letters, digits, '_')", key=True)
        self._parallel_conflicts(path, branches)

    def _parallel_conflicts(self, path: Path, branches: dict) -> None:
        writes = {n: set().union(*(flow.written_names(s) for s in b)) if isinstance(b, list) else set()
                  for n, b in branches.items()}
        for name, branch in branches.items():
            others = set().union(set(), *(w for n, w in writes.items() if n != name))
            for i, step in enumerate(branch if isinstance(branch, list) else []):
                if isinstance(step, dict) and step.get("type") == "action":
                    clash = sorted(flow.written_names(step) & others)
                    if clash:
                        self.report((*path, "branches", name, i), "parallel-conflict", step.get("id"),
                                    f"this action writes {', '.join(clash)}, which another branch also writes; "
                                    "use a different `save_as`/`assign` name in each branch")

    def _step_lookup(self, path: Path, step: dict) -> None:
        self._connector_step(path, step, read_only=True)

    def _step_action(self, path: Path, step: dict) -> None:
        self._connector_step(path, step, read_only=False)

    def _connector_step(self, path: Path, step: dict, *, read_only: bool) -> None:
        name, op = step.get("connector"), step.get("operation")
        if self.catalog is None or not isinstance(name, str) or not isinstance(op, str):
            return
        if name not in self.catalog:
            self.bad((*path, "connector"), f"unknown connector {name!r}"
                     f"{_hint(name, self.catalog) or '; available: ' + ', '.join(sorted(self.catalog))}",
                     "unknown-connector")
            return
        operations = self.catalog[name].get("operations") or {}
        if op not in operations:
            self.bad((*path, "operation"), f"connector {name!r} has no operation {op!r}"
                     f"{_hint(op, operations) or '; available: ' + ', '.join(sorted(operations))}",
                     "unknown-operation")
        elif read_only and not operations[op].get("read_only", False):
            self.bad((*path, "operation"), f"operation {name}.{op} has side effects, so it cannot be a "
                     "lookup; use `type: action`", "lookup-not-read-only")

    # --- flow and names ----------------------------------------------------------------------
    def check_flow(self, path: Path, steps: list[Any], entry: set[str]) -> None:
        ids = flow.step_ids(steps)
        broken = False
        for i, step in enumerate(steps):
            sid = step.get("id") if isinstance(step, dict) else None
            for edge in flow.step_edges(steps, i):
                if not edge.implicit and edge.target is not None and edge.target not in ids:
                    broken = True
                    self._unknown_target((*path, i, *edge.path), edge.target, ids, sid)
        graph = flow.successors(steps)
        seen = flow.reachable(graph)
        if not broken:  # with a missing target, reachability problems would only be noise
            self._check_reachability(path, steps, graph, seen)
        avail = flow.available_names(steps, entry)
        for i, step in enumerate(steps):
            if i not in avail or not isinstance(step, dict):
                continue
            self.avail[(*path, i)] = avail[i]
            for rel, inner in m.nested_step_lists(step):
                name = step.get("as") if isinstance(step.get("as"), str) else "item"
                extra = {name} if step.get("type") == "for_each" else set()
                self.check_flow((*path, i, *rel), inner, avail[i] | extra)

    def _check_reachability(self, path: Path, steps: list[Any], graph: dict, seen: set[int]) -> None:
        for i, step in enumerate(steps):
            if i not in seen and isinstance(step, dict):
                sid = step.get("id")
                self.report((*path, i), "unreachable", sid if isinstance(sid, str) else None,
                            f"step {sid!r} is never reached; point a `next`/`goto` at it or remove it")
        stuck = sorted(seen - flow.can_finish(graph))
        if stuck:
            names = ", ".join(str(steps[i].get("id")) for i in stuck if isinstance(steps[i], dict))
            first = steps[stuck[0]]
            self.report((*path, stuck[0]), "no-finish", first.get("id") if isinstance(first, dict) else None,
                        f"no way to finish from step(s) {names}: they loop forever; add an exit "
                        "(e.g. a switch `default` that leaves the loop, `end: true` or a `succeed` step)")

    def _unknown_target(self, path: Path, target: str, ids: dict[str, int], sid: Any) -> None:
        hint = _hint(target, ids)
        if not hint and target in self.first_ids:
            hint = ("; that step is in another step list, and targets must be in the same list "
                    "(top level, the same branch or loop body)")
        self.report(path, "unknown-target", sid if isinstance(sid, str) else None,
                    f"target {target!r} is not a step{hint or '; steps here: ' + ', '.join(ids)}")

    def check_uses(self) -> None:
        for use in self.uses:
            if use.step_path is None or use.step_path not in self.avail:
                continue
            known = self.avail[use.step_path] | m.ROOT_NAMES
            names = names_used(use.expr)
            if "secrets" in names:
                self._check_secrets(use)
                names.discard("secrets")
            for name in sorted(names - known):
                hint = _hint(name, known) or f"; store it first with `save_as: {name}`"
                self.report(use.path, "unknown-name", use.step_id,
                            f"{name!r} in {use.expr!r} is not set by any earlier step{hint}")

    def _check_secrets(self, use: _Use) -> None:
        if not use.secrets_ok:
            self.report(use.path, "secret-outside-http", use.step_id,
                        f"secrets can only be used in an http step's url, headers, query or auth "
                        f"(found in {use.expr!r}); move the call into a connector or an http step")
            return
        if bare_secrets(use.expr):
            self.report(use.path, "bare-secrets", use.step_id,
                        f"{use.expr!r} reads `secrets` as a whole; name one secret: `{{{{ secrets.NAME }}}}`")
            return
        for name in sorted(secret_refs(f"{{{{ {use.expr} }}}}") - self.declared_secrets):
            self.report(use.path, "undeclared-secret", use.step_id,
                        f"secret {name!r} is not declared; add it to the top-level `secrets: [{name}]`")

"""Connector spec validation and normalization (spec §5 shape and the original-design shape).

Every problem names where it is as a path (``operations.orders.get.query.api_key``); a spec read
from text with ``load_connector`` is also located by line and column. Every template expression
is checked with the procedure language's own expression checker (it must parse and may only use
``params`` and ``secrets``, ``base_url`` only ``secrets``), and credentials may not be written
inline: not in ``auth``, not in credential-named headers or query parameters, not in a URL.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from connectors.errors import ConnectorError
from connectors.jsonpaths import compile_path
from procedures.errors import ExpressionError, ProcedureError
from procedures.expressions import bare_secrets, names_used, secret_refs, template_expressions
from procedures.models import CREDENTIAL_NAME
from procedures.urls import url_credential_problem

Path = tuple[str | int, ...]

CONNECTOR_ID = re.compile(r"[a-z0-9][a-z0-9_-]{1,63}")
OPERATION_ID = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
BODY_FORMATS = ("json", "form")
SPEC_FIELDS = {"connector", "title", "description", "base_url", "auth", "body_format", "secrets", "operations"}
LEGACY_FIELDS = {"id", "name", "provider", "description", "base_url", "baseUrl", "auth", "endpoints"}
OP_FIELDS = {
    "method", "path", "query", "headers", "body", "body_format", "read_only", "response",
    "legacy_response", "idempotency_header", "description",
}
LEGACY_OP_FIELDS = {"id", "method", "path", "params", "responseMapping", "description", "headers"}
AUTH_FIELDS = {
    "header": ({"name", "value"}, set()),
    "query": ({"name", "value"}, set()),
    "bearer": ({"token"}, set()),
    "basic": ({"username", "password"}, set()),
    "oauth2_client_credentials": ({"token_url", "client_id", "client_secret"}, {"scope"}),
}
CREDENTIAL_FIELDS = {"value", "token", "username", "password", "client_id", "client_secret"}
CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "cookie"}
_TEMPLATE_PART = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_ROOT = re.compile(r"^([A-Za-z_]\w*)")


class ConnectorSpecError(ConnectorError):
    """A connector spec that does not validate (error name ``validation``).

    ``path`` is where the problem is (``("operations", "orders.get", "method")``); ``line`` and
    ``column`` are set when the spec was read from text (``load_connector``).
    """

    def __init__(self, reason: str, path: Path = (), *, filename: str | None = None,
                 line: int | None = None, column: int | None = None) -> None:
        where = f"{filename}:{line}:{column}: " if filename and line else (f"{filename}: " if filename else "")
        super().__init__("validation", f"{where}{dotted(path)}: {reason}")
        self.reason, self.path = reason, tuple(path)
        self.filename, self.line, self.column = filename, line, column


def dotted(path: Path) -> str:
    """``("endpoints", 0, "id")`` -> ``endpoints[0].id``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "connector"


def _fail(where: Path, message: str) -> None:
    raise ConnectorSpecError(message, where)


def _values(value: Any, path: Path) -> list[tuple[Path, str]]:
    """Every string value inside ``value`` with its path (mapping keys are not templates)."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, Mapping):
        return [found for k, v in value.items() for found in _values(v, (*path, k))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _values(v, (*path, i))]
    return []


def _keys(value: Any, path: Path) -> list[tuple[Path, str]]:
    if isinstance(value, Mapping):
        return [(path, str(k)) for k in value] + [f for k, v in value.items() for f in _keys(v, (*path, k))]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _keys(v, (*path, i))]
    return []


def _check_templates(where: Path, value: Any, roots: tuple[str, ...]) -> None:
    """Every ``{{ }}`` in ``value`` parses and reads only ``roots`` (``secrets`` only as ``secrets.NAME``)."""
    for path, key in _keys(value, where):
        if "{{" in key:
            _fail((*path, key), "names are not templates: write the name itself and put the template in the value")
    allowed = " and ".join(f"`{r}`" for r in roots)
    for path, text in _values(value, where):
        for expr in template_expressions(text):
            try:
                names = names_used(expr)
            except ExpressionError as exc:
                _fail(path, f"template {{{{ {expr[:80]} }}}}: {exc.reason}")
            others = sorted(names - set(roots))
            if others:
                _fail(path, f"template {{{{ {expr[:80]} }}}} uses {', '.join(others)}; connector templates "
                      f"may only use {allowed} (e.g. {{{{ {roots[0]}.name }}}})")
            if "secrets" in names and bare_secrets(expr):
                _fail(path, f"template {{{{ {expr[:80]} }}}} must name one secret: write {{{{ secrets.NAME }}}}")


def _secret_names(value: Any) -> set[str]:
    return secret_refs(value)


def _has_template(value: Any) -> bool:
    return any("{{" in text for _, text in _values(value, ()))


def _check_fields(where: Path, data: Any, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(data, Mapping):
        _fail(where, f"must be an object with fields {', '.join(sorted(allowed))}")
    unknown = sorted(str(k) for k in set(data) - allowed)
    if unknown:
        _fail((*where, unknown[0]), f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(f for f in required if data.get(f) in (None, ""))
    if missing:
        _fail(where, f"missing required field(s) {', '.join(missing)}")


def _check_mapping(where: Path, mapping: Any) -> dict[str, str]:
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        _fail(where, "must be an object of name -> JSONPath, e.g. {total: \"$.orders[0].total_price\"}")
    for name, path in mapping.items():
        try:
            compile_path(path)
        except ValueError as exc:
            _fail((*where, name), f"{exc}; write e.g. \"$.orders[0].id\"")
    return dict(mapping)


def _check_str_map(where: Path, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        _fail(where, "must be an object with text keys")
    for key, item in value.items():
        if isinstance(item, (dict, list)) and where[-1] == "headers":
            _fail((*where, key), "header values must be text")
    return dict(value)


def _check_inline_credentials(where: Path, values: Mapping[str, Any]) -> None:
    """Headers or query parameters named like credentials must not hold literal values."""
    for name, value in values.items():
        if CREDENTIAL_NAME.search(name) and value not in (None, "") and not _has_template(value):
            _fail((*where, name), f"credential `{name}` is written inline; store it as a tenant secret and "
                  f"write `{name}: \"{{{{ secrets.NAME }}}}\"` (or use `auth`)")


def _check_url(where: Path, url: str) -> None:
    problem = url_credential_problem(url, literal_only=True)
    if problem:
        _fail(where, problem)


def normalize_auth(auth: Any, where: str | Path = ("auth",)) -> dict[str, Any] | None:
    """Validate an auth object; every credential must be a {{ secrets.NAME }} reference."""
    where = (where,) if isinstance(where, str) else tuple(where)
    if auth is None:
        return None
    if not isinstance(auth, Mapping) or not isinstance(auth.get("type"), str) or auth["type"] not in AUTH_FIELDS:
        _fail((*where, "type") if isinstance(auth, Mapping) else where,
              f"type must be one of {', '.join(AUTH_FIELDS)}")
    required, optional = AUTH_FIELDS[auth["type"]]
    _check_fields(where, auth, required | optional | {"type"}, required)
    for field in sorted(required | optional):
        if field in auth and not isinstance(auth[field], str):
            _fail((*where, field), "must be text")
    _check_templates(where, auth, ("secrets",))
    for field in sorted(CREDENTIAL_FIELDS & set(auth)):
        if not _secret_names(auth[field]):
            _fail((*where, field), "credentials may not be written inline; use \"{{ secrets.NAME }}\"")
    if "token_url" in auth:
        _check_url((*where, "token_url"), auth["token_url"])
    return dict(auth)


def _normalize_operation(where: Path, op: Any, default_format: str) -> dict[str, Any]:
    _check_fields(where, op, OP_FIELDS, {"method", "path"})
    if not isinstance(op["method"], str) or op["method"].upper() not in METHODS:
        _fail((*where, "method"), f"must be one of {', '.join(METHODS)}")
    method = op["method"].upper()
    path = op["path"]
    if not isinstance(path, str) or not path.startswith("/"):
        _fail((*where, "path"), "must be text starting with '/'")
    body_format = op.get("body_format") or default_format
    if body_format not in BODY_FORMATS:
        _fail((*where, "body_format"), "must be json or form")
    read_only = op.get("read_only", method in ("GET", "HEAD"))
    if not isinstance(read_only, bool):
        _fail((*where, "read_only"), "must be true or false")
    headers = _check_str_map((*where, "headers"), op.get("headers"))
    for name, value in headers.items():
        if name.lower() in CREDENTIAL_HEADERS and not _secret_names(value):
            _fail((*where, "headers", name), "credentials may not be written inline; use auth")
    query = _check_str_map((*where, "query"), op.get("query"))
    _check_inline_credentials((*where, "headers"), headers)
    _check_inline_credentials((*where, "query"), query)
    _check_url((*where, "path"), "https://host" + path)
    idem = op.get("idempotency_header")
    if idem is not None and not (isinstance(idem, str) and idem.strip()):
        _fail((*where, "idempotency_header"), "must be a header name")
    normalized = {
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": op.get("body"),
        "body_format": body_format,
        "read_only": read_only,
        "response": _check_mapping((*where, "response"), op.get("response")),
        "legacy_response": _check_mapping((*where, "legacy_response"), op.get("legacy_response")),
        "idempotency_header": idem,
        "description": str(op.get("description") or ""),
    }
    for key in ("path", "query", "headers", "body"):
        _check_templates((*where, key), normalized[key], ("params", "secrets"))
    return normalized


def _legacy_template(text: str) -> str:
    """'{orderId}' / '{{orderId}}' -> '{{ params.orderId }}' (roots other than params/secrets)."""
    def fix(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        root = _ROOT.match(expr)
        if root and root.group(1) in ("params", "secrets"):
            return "{{ " + expr + " }}"
        return "{{ params." + expr + " }}"
    text = _TEMPLATE_PART.sub(fix, text)
    return re.sub(r"(?<!\{)\{([A-Za-z_]\w*)\}(?!\})", lambda m: "{{ params." + m.group(1) + " }}", text)


def _legacy_operation(where: Path, endpoint: Any) -> tuple[str, dict[str, Any]]:
    _check_fields(where, endpoint, LEGACY_OP_FIELDS, {"id", "path"})
    if not isinstance(endpoint["id"], str):
        _fail((*where, "id"), "must be text like 'orders.get'")
    if not isinstance(endpoint["path"], str):
        _fail((*where, "path"), "must be text starting with '/'")
    method = endpoint.get("method") or "GET"
    if not isinstance(method, str):
        _fail((*where, "method"), f"must be one of {', '.join(METHODS)}")
    method = method.upper()
    params = endpoint.get("params") or {}
    if isinstance(params, list):
        if not all(isinstance(p, str) for p in params):
            _fail((*where, "params"), "must be a list of parameter names or an object")
        params = {p: "{{ params." + p + " }}" for p in params}
    if not isinstance(params, Mapping):
        _fail((*where, "params"), "must be a list of names or an object")
    params = {k: _legacy_template(v) if isinstance(v, str) else v for k, v in params.items()}
    mapping = endpoint.get("responseMapping") or {}
    if not isinstance(mapping, Mapping):
        _fail((*where, "responseMapping"), "must be an object of source path -> target name")
    legacy, response = {}, {}
    for source, target in mapping.items():
        if not isinstance(target, str):
            _fail((*where, "responseMapping", source), "the target must be a dotted name such as order.total")
        path = source if str(source).startswith("$") else "$." + str(source)
        legacy[target] = path
        short = target.rsplit(".", 1)[-1]
        response[target if short in response else short] = path
    op = {
        "method": method,
        "path": _legacy_template(endpoint["path"]),
        "query" if method in ("GET", "HEAD", "DELETE") else "body": params or None,
        "headers": endpoint.get("headers"),
        "response": response,
        "legacy_response": legacy,
        "description": endpoint.get("description"),
    }
    return endpoint["id"], {k: v for k, v in op.items() if v is not None}


# Where a field of a converted operation was written in an original-design endpoint.
_LEGACY_OP_PATHS = {"query": "params", "body": "params", "response": "responseMapping",
                    "legacy_response": "responseMapping"}


def _from_legacy(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """The spec §5 form of an original-design connector, and operation id -> its endpoint's path."""
    _check_fields((), data, LEGACY_FIELDS, {"id", "endpoints"})
    endpoints = data["endpoints"]
    if not isinstance(endpoints, list):
        _fail(("endpoints",), "must be a list of {id, method, path, params, responseMapping}")
    operations: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for i, endpoint in enumerate(endpoints):
        op_id, op = _legacy_operation(("endpoints", i), endpoint)
        if op_id in operations:
            _fail(("endpoints", i, "id"), f"duplicate endpoint id {op_id!r}; give each endpoint its own id")
        operations[op_id] = op
        origin[op_id] = ("endpoints", i)
    spec: dict[str, Any] = {"connector": data["id"], "operations": operations}
    base_url = data.get("base_url") or data.get("baseUrl")
    provider = _provider(data.get("provider"))
    if base_url:
        spec["base_url"] = base_url
    elif provider:
        spec["base_url"] = provider["base_url"]
        spec.setdefault("body_format", provider.get("body_format", "json"))
    if data.get("auth") is not None:
        spec["auth"] = data["auth"]
    elif provider and provider.get("auth"):
        spec["auth"] = provider["auth"]
    for key in ("name", "description"):
        if data.get(key):
            spec["title" if key == "name" else key] = data[key]
    return spec, origin


def _provider(name: Any) -> dict[str, Any] | None:
    if not isinstance(name, str):
        return None
    from connectors.catalog import builtin_connectors  # lazy: the catalog uses this module
    return builtin_connectors().get(name)


def _legacy_path(path: Path, origin: Mapping[str, Path], data: Mapping[str, Any]) -> Path:
    """A path in the converted spec -> the path where the author wrote it (original shape)."""
    if len(path) >= 2 and path[0] == "operations" and path[1] in origin:
        rest = path[2:]
        if rest:
            rest = (_LEGACY_OP_PATHS.get(str(rest[0]), rest[0]), *rest[1:])
        return (*origin[str(path[1])], *rest)
    if path and path[0] == "connector":
        return ("id", *path[1:])
    if path and path[0] == "base_url" and "baseUrl" in data:
        return ("baseUrl", *path[1:])
    if path and path[0] == "title":
        return ("name", *path[1:])
    return path


def normalize_connector(data: dict) -> dict:
    """Validate a connector (spec §5 or original-design shape) and return the normalized dict.

    Raises ConnectorSpecError (a ConnectorError named ``validation``) on the first problem; its
    ``path`` points into ``data`` as the author wrote it.
    """
    if not isinstance(data, Mapping):
        _fail((), "a connector spec must be an object (`connector: ...`, `base_url: ...`, `operations: {...}`)")
    if "endpoints" in data or ("id" in data and "connector" not in data):
        original = data
        data, origin = _from_legacy(data)
        try:
            return _normalize(data)
        except ConnectorSpecError as exc:
            raise ConnectorSpecError(exc.reason, _legacy_path(exc.path, origin, original)) from None
    return _normalize(data)


def _normalize(data: Mapping[str, Any]) -> dict:
    _check_fields((), data, SPEC_FIELDS, {"connector", "base_url", "operations"})
    cid = data["connector"]
    if not isinstance(cid, str) or not CONNECTOR_ID.fullmatch(cid):
        _fail(("connector",), "id must be 2..64 of lowercase letters, digits, '-' or '_'")
    base_url = data["base_url"]
    if not isinstance(base_url, str) or not re.match(r"^(https?://|\{\{)", base_url):
        _fail(("base_url",), "must be an http(s) URL")
    _check_templates(("base_url",), base_url, ("secrets",))
    _check_url(("base_url",), base_url)
    default_format = data.get("body_format") or "json"
    if default_format not in BODY_FORMATS:
        _fail(("body_format",), "must be json or form")
    ops = data["operations"]
    if not isinstance(ops, Mapping) or not ops:
        _fail(("operations",), "must be a non-empty object of operation id -> operation")
    operations = {}
    for op_id, op in ops.items():
        if not isinstance(op_id, str) or not OPERATION_ID.fullmatch(op_id):
            _fail(("operations", op_id), "id must look like 'orders.get' (lowercase, digits, '_', '.')")
        operations[op_id] = _normalize_operation(("operations", op_id), op, default_format)
    declared = data.get("secrets") or []
    if not isinstance(declared, list) or not all(isinstance(s, str) for s in declared):
        _fail(("secrets",), "must be a list of secret names")
    spec = {
        "connector": cid,
        "title": str(data.get("title") or cid),
        "description": str(data.get("description") or ""),
        "base_url": base_url,
        "auth": normalize_auth(data.get("auth")),
        "body_format": default_format,
        "operations": operations,
    }
    spec["secrets"] = sorted(_secret_names(spec) | set(declared))
    return spec


def load_connector(text: str, filename: str = "<connector>") -> dict:
    """Parse a connector spec from YAML/JSON text and normalize it; problems carry line:column.

    Raises ConnectorSpecError whose message starts ``FILE:LINE:COL: path: ...``.
    """
    from procedures.parser import parse_document  # the located YAML 1.2 reader of procedures

    try:
        doc = parse_document(text, filename)
    except ProcedureError as exc:
        problem = exc.problems[0] if exc.problems else None
        if problem is None:
            raise ConnectorSpecError(exc.message, filename=filename) from None
        message = problem.message
        if problem.rule == "document":
            message = "a connector spec must be a mapping (`connector: ...`, `operations: {...}`)"
        raise ConnectorSpecError(message, filename=filename, line=problem.line, column=problem.column) from None
    try:
        return normalize_connector(doc.data)
    except ConnectorSpecError as exc:
        key = bool(exc.path) and exc.reason.startswith("unknown field")
        line, column = doc.where(exc.path, key=key)
        raise ConnectorSpecError(exc.reason, exc.path, filename=filename, line=line, column=column) from None

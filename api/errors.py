"""The one place where exceptions become HTTP responses (JSON: {"error": code, "message": ...})."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from channels.errors import ChannelError
from connectors.errors import ConnectorError
from connectors.spec import ConnectorSpecError, dotted
from db.errors import Conflict, Invalid, NotFound, StoreError
from knowledge import errors as kerrors
from procedures.errors import ProcedureError
from security import SecurityError

log = logging.getLogger("flywheel.api")


class ApiError(Exception):
    """An error the API itself raises (auth, bad body, ...), with its HTTP status and code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class InvalidBody(ApiError):
    status, code = 422, "invalid_body"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class TooLarge(ApiError):
    status, code = 413, "too_large"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def error_json(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """The JSON error response every handler returns."""
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def _problems(exc: ProcedureError) -> list[dict[str, Any]]:
    return [
        {
            "file": p.file, "line": p.line, "column": p.column, "step_id": p.step_id,
            "message": p.message, "rule": p.rule, "text": p.format(),
        }
        for p in exc.problems
    ]


def _connector_problems(exc: ConnectorError) -> list[dict[str, Any]]:
    """A bad connector spec's problem in the shape of a procedure's (`path` where a step would be)."""
    if not isinstance(exc, ConnectorSpecError):
        return []
    return [{"file": exc.filename, "line": exc.line, "column": exc.column, "step_id": None,
             "path": dotted(exc.path), "message": exc.reason, "rule": "connector-spec", "text": exc.message}]


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the input (it may be a secret value): location, message and type only.
    return [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]


def _store_status(exc: StoreError) -> tuple[int, str]:
    if isinstance(exc, NotFound):
        return 404, "not_found"
    if isinstance(exc, Conflict):
        return 409, "conflict"
    if isinstance(exc, Invalid):
        return 422, "invalid"
    return 500, "store_error"


def _security_status(exc: SecurityError) -> tuple[int, str]:
    try:
        from security import links  # LinkExpired/LinkTampered are optional here
    except ImportError:
        return 403, "forbidden"
    for name, status, code in (("LinkExpired", 410, "link_expired"), ("LinkTampered", 403, "link_invalid")):
        cls = getattr(links, name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return status, code
    return 403, "forbidden"


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_json(exc.status, exc.code, exc.message)


async def _procedure_error(_: Request, exc: ProcedureError) -> JSONResponse:
    return error_json(422, "invalid_procedure", str(exc), problems=_problems(exc))


async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
    status, code = _store_status(exc)
    if status == 500:
        log.error("store error", exc_info=exc)
        return error_json(500, code, "internal error")
    return error_json(status, code, str(exc))


async def _connector_error(_: Request, exc: ConnectorError) -> JSONResponse:
    return error_json(422, "invalid_connector", exc.message, name=exc.name, problems=_connector_problems(exc))


def _knowledge_status(exc: kerrors.KnowledgeError) -> tuple[int, str]:
    for cls, status, code in ((kerrors.UnsupportedFile, 415, "unsupported_file"),
                              (kerrors.TooLarge, 413, "too_large"),
                              (kerrors.HostileFile, 422, "hostile_file"),
                              (kerrors.CrawlError, 422, "crawl_error")):
        if isinstance(exc, cls):
            return status, code
    return 422, "knowledge_error"


async def _channel_error(_: Request, exc: ChannelError) -> JSONResponse:
    code = getattr(exc, "code", "") or {403: "forbidden", 404: "not_configured", 413: "too_large",
                                         422: "invalid_config"}.get(exc.status, "bad_request")
    return error_json(exc.status, code, exc.message)


async def _knowledge_error(_: Request, exc: kerrors.KnowledgeError) -> JSONResponse:
    status, code = _knowledge_status(exc)
    return error_json(status, code, exc.message)


async def _security_error(_: Request, exc: SecurityError) -> JSONResponse:
    status, code = _security_status(exc)
    return error_json(status, code, str(exc) or code)


async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_json(422, "invalid_request", "request validation failed", details=_validation_details(exc))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_json(exc.status_code, code, str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_json(500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on the app."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ProcedureError, _procedure_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(ConnectorError, _connector_error)
    app.add_exception_handler(SecurityError, _security_error)
    app.add_exception_handler(kerrors.KnowledgeError, _knowledge_error)
    app.add_exception_handler(ChannelError, _channel_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

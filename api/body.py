"""Reading a document (procedure or connector) from a request: raw YAML/JSON text or a multipart file."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml
from fastapi import Request

from api.errors import InvalidBody, TooLarge, UnsupportedMediaType
from connectors.errors import ConnectorError
from procedures.errors import ProcedureError

log = logging.getLogger("flywheel.api")

MAX_DOCUMENT_BYTES = 1_000_000
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
JSON_TYPES = {"application/json"}
TEXT_TYPES = YAML_TYPES | JSON_TYPES | {"text/plain"}


@dataclass(frozen=True)
class Document:
    """A decoded document: its text, a file name for messages, and its format (yaml|json)."""

    text: str
    filename: str
    fmt: str


def _fmt(content_type: str, filename: str, text: str) -> str:
    if content_type in JSON_TYPES or filename.lower().endswith(".json"):
        return "json"
    if content_type in YAML_TYPES or filename.lower().endswith((".yaml", ".yml")):
        return "yaml"
    return "json" if text.lstrip().startswith(("{", "[")) else "yaml"


def _decode(raw: bytes) -> str:
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise TooLarge(f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidBody(f"document is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise InvalidBody("document contains NUL characters")
    if not text.strip():
        raise InvalidBody("document is empty")
    return text


async def _limited_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise TooLarge(f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _from_multipart(request: Request) -> tuple[bytes, str, str]:
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=MAX_DOCUMENT_BYTES)
    except Exception as exc:  # malformed multipart of any kind is the client's error
        raise InvalidBody(f"could not read the multipart body: {exc}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidBody("multipart body must contain a file field named 'file'")
    raw = await upload.read(MAX_DOCUMENT_BYTES + 1)
    return raw, upload.filename or "upload", (upload.content_type or "").split(";")[0].strip().lower()


async def read_document(request: Request, default_name: str = "<request>") -> Document:
    """The request's document; 415 for other content types, 422 for undecodable text."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        raw, filename, content_type = await _from_multipart(request)
    elif content_type in TEXT_TYPES or content_type == "":
        raw, filename = await _limited_body(request), default_name
    else:
        raise UnsupportedMediaType(
            f"unsupported content type {content_type!r}: send YAML or JSON text "
            "(application/yaml, application/json, text/plain) or a multipart file field 'file'"
        )
    text = _decode(raw)
    return Document(text=text, filename=filename, fmt=_fmt(content_type, filename, text))


def parse_data(doc: Document) -> Any:
    """Parse a document as YAML (JSON is YAML); 422 on syntax errors or absurd nesting."""
    try:
        return yaml.safe_load(doc.text)
    except yaml.YAMLError as exc:
        raise InvalidBody(f"{doc.filename}: not valid YAML/JSON: {exc}") from None
    except RecursionError:
        raise InvalidBody(f"{doc.filename}: document is nested too deeply") from None


@contextmanager
def pure_input_errors(filename: str, what: str) -> Iterator[None]:
    """Around a pure parser/validator call: its own errors pass through; a crash on the client's
    document (a bug there, logged) or absurd nesting becomes 422, never 500."""
    try:
        yield
    except (ProcedureError, ConnectorError):
        raise
    except RecursionError:
        raise InvalidBody(f"{filename}: document is nested too deeply") from None
    except Exception:
        log.exception("%s validation crashed on %s", what, filename)
        raise InvalidBody(f"{filename}: the {what} could not be validated; check its structure") from None

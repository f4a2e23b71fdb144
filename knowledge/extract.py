"""Text extraction from uploaded files: PDF, DOCX, HTML, Markdown and plain text.

``extract`` picks the format from the file extension, then the content type, then the
magic bytes, and returns Markdown-ish text (``#`` headings, blank-line separated paragraphs,
``- `` list items). A Markdown file may start with YAML front matter (``title``, ``url``,
``id``, ``questions``): it is read and stripped. Size, hostile-file and empty-result checks raise
KnowledgeError subclasses whose messages say what to do.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import yaml

from knowledge.errors import TooLarge, UnsupportedFile
from knowledge.extract_common import Extracted, clean_questions, first_heading, tidy
from knowledge.extract_docx import docx_to_text
from knowledge.extract_html import parse_html, soup_to_extracted
from knowledge.extract_html_sandbox import parse_limited
from knowledge.extract_pdf import pdf_to_text

__all__ = ["SUPPORTED", "Extracted", "extract", "front_matter", "html_to_text"]

MAX_BYTES = 10_000_000
MAX_FRONT_MATTER = 20_000  # characters of YAML between the --- lines
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)^(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL | re.MULTILINE)
FRONT_MATTER_KEYS = ("title", "url", "id")
SUPPORTED = "PDF (.pdf), Word (.docx), HTML (.html, .htm), Markdown (.md) and text (.txt)"
EXTENSIONS = {
    ".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
}
CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html", "application/xhtml+xml": "html",
    "text/markdown": "markdown", "text/x-markdown": "markdown", "text/plain": "text",
}


def html_to_text(html: str | bytes, url: str | None = None) -> Extracted:
    """Readable text of an HTML page, boilerplate (nav, header, footer, banners...) removed.
    Parses in this process, without limits: for trusted input only (``extract`` parses
    uploads in the sandbox)."""
    return soup_to_extracted(parse_html(html), url)


def _sniff(data: bytes) -> str | None:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        return "docx"
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    return None


def _kind(filename: str, content_type: str | None, data: bytes) -> str:
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind = EXTENSIONS.get(suffix) or CONTENT_TYPES.get(media) or _sniff(data)
    if kind is None:
        described = suffix or media or "unknown type"
        raise UnsupportedFile(f"{filename!r} ({described}) is not a supported file type. "
                              f"Upload one of: {SUPPORTED}.")
    return kind


def _without_nul(filename: str, data: bytes, what: str) -> bytes:
    """``data`` without its NUL bytes when they are stray (at most one per 1,000 bytes: a bad
    export); more mean a binary file (random bytes have one in 256): UnsupportedFile."""
    count = data.count(b"\x00")
    if not count:
        return data
    if count > len(data) // 1000:
        raise UnsupportedFile(f"{filename!r} contains NUL bytes, so it is binary, not {what}. "
                              f"Upload one of: {SUPPORTED}.")
    return data.replace(b"\x00", b"")


def _decode_text(filename: str, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte order mark
        return tidy(data.decode("utf-16", errors="replace").lstrip("\ufeff").replace("\x00", ""))
    data = _without_nul(filename, data, "text")
    return tidy(data.decode("utf-8", errors="replace").lstrip("\ufeff"))


def front_matter(text: str, filename: str = "<text>") -> tuple[dict[str, Any], str]:
    """({title, url, id, questions, handoff} that are set, the text after the front matter) of
    Markdown text that starts with a ``---`` YAML block; ({}, text) without one. UnsupportedFile
    for YAML that is too long or not a mapping, whose title/url/id is not plain text, whose
    `questions` is not a list of example questions within the limits (``clean_questions``), or
    whose `handoff` is not true/false.
    Only plain values are read, so aliases cannot expand."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    block = match.group(1)
    if len(block) > MAX_FRONT_MATTER:
        raise UnsupportedFile(f"{filename!r}: the front matter is longer than {MAX_FRONT_MATTER:,} characters")
    try:
        meta: Any = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        raise UnsupportedFile(f"{filename!r}: the front matter is not valid YAML ({exc})") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise UnsupportedFile(f"{filename!r}: the front matter must be a YAML mapping (title: ..., url: ...)")
    values = {}
    for key in FRONT_MATTER_KEYS:
        value = meta.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, (dict, list, bool)):
            raise UnsupportedFile(f"{filename!r}: front matter {key!r} must be text")
        values[key] = str(value).strip()
    try:
        questions = clean_questions(meta.get("questions"))
    except ValueError as err:
        raise UnsupportedFile(f"{filename!r}: front matter {err}") from None
    if questions:
        values["questions"] = questions
    handoff = meta.get("handoff", False)
    if not isinstance(handoff, bool):
        raise UnsupportedFile(f"{filename!r}: front matter 'handoff' must be true or false")
    if handoff:
        values["handoff"] = True
    url = values.get("url")
    if url and (not url.lower().startswith(("http://", "https://")) or any(ord(c) < 33 for c in url)):
        raise UnsupportedFile(f"{filename!r}: front matter url must be an http(s) URL, not {url[:100]!r}")
    return values, text[match.end():]


def _stem(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).stem or filename


def extract(filename: str, data: bytes, content_type: str | None = None, *,
            max_bytes: int = MAX_BYTES) -> Extracted:
    """Title and Markdown-ish text of an uploaded file.

    Raises TooLarge (over ``max_bytes``), UnsupportedFile (unknown type, binary "text",
    damaged or empty file) or HostileFile (zip/XML/PDF bombs, XML entities, parse limits).
    """
    if len(data) > max_bytes:
        raise TooLarge(f"{filename!r} is {len(data):,} bytes; the limit is {max_bytes:,} bytes. "
                       "Split the document into smaller files and upload them separately.")
    kind = _kind(filename, content_type, data)
    title: str | None
    if kind == "pdf":
        title, text = pdf_to_text(data)
    elif kind == "docx":
        title, text = docx_to_text(data)
    elif kind == "html":
        page = parse_limited(_without_nul(filename, data, "an HTML page"))
        title, text = page.title, page.text
    else:
        text = _decode_text(filename, data)
        meta: dict[str, Any] = {}
        if kind == "markdown":
            meta, rest = front_matter(text, filename)
            text = tidy(rest)
        title = meta.get("title") or first_heading(text)
    if not text.strip():
        raise UnsupportedFile(f"no text found in {filename!r}. If it is a scanned document, run OCR "
                              "on it first; otherwise check that the right file was uploaded.")
    if kind in ("markdown", "text"):
        return Extracted(title=title or _stem(filename), text=text, url=meta.get("url"),
                         article_id=meta.get("id"), questions=tuple(meta.get("questions", ())),
                         handoff=bool(meta.get("handoff")))
    return Extracted(title=title or _stem(filename), text=text)

"""DOCX (Office Open XML) to Markdown-ish text without python-docx.

The file is a zip: entry count, total uncompressed size and compression ratio are checked
from the central directory before anything is inflated, and reads are capped as well, so a
zip bomb costs neither time nor memory. XML is parsed with defusedxml (no DTDs, no entities).
"""
from __future__ import annotations

import io
import re
import zipfile
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from knowledge.errors import HostileFile, UnsupportedFile
from knowledge.extract_common import collapse

MAX_ENTRIES = 2_000
MAX_TOTAL_BYTES = 50_000_000
MAX_RATIO = 100
RATIO_MIN_BYTES = 1_000_000  # tiny entries may legitimately compress very well
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_HEADING_STYLE = re.compile(r"^heading\s*([1-6])$", re.IGNORECASE)
_FIX = "Open it in Word (or LibreOffice), save it again as .docx or export it as PDF, and re-upload."


def _bomb(detail: str) -> HostileFile:
    return HostileFile(f"rejected DOCX: zip bomb suspected ({detail}). {_FIX}")


def _check_archive(archive: zipfile.ZipFile) -> None:
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise _bomb(f"{len(entries)} entries, the limit is {MAX_ENTRIES}")
    total = sum(info.file_size for info in entries)
    if total > MAX_TOTAL_BYTES:
        raise _bomb(f"{total:,} bytes uncompressed, the limit is {MAX_TOTAL_BYTES:,}")
    for info in entries:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_MIN_BYTES and ratio > MAX_RATIO:
            raise _bomb(f"{info.filename} compresses {ratio:.0f}:1, the limit is {MAX_RATIO}:1")


def _read(archive: zipfile.ZipFile, name: str) -> bytes | None:
    """The entry's bytes (None when absent), never more than MAX_TOTAL_BYTES."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    with archive.open(info) as entry:
        data = entry.read(MAX_TOTAL_BYTES + 1)
    if len(data) > MAX_TOTAL_BYTES:
        raise _bomb(f"{name} inflates beyond {MAX_TOTAL_BYTES:,} bytes")
    return data


def _parse_xml(data: bytes, name: str) -> Element:
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise HostileFile(
            f"rejected DOCX: {name} declares a DTD or XML entities; XML entities are not allowed "
            f"(they enable 'billion laughs' attacks). {_FIX}"
        ) from None
    except ParseError as exc:
        raise UnsupportedFile(f"the DOCX is damaged: {name} is not valid XML ({exc}). {_FIX}") from None


def _heading_styles(styles: Element | None) -> dict[str, int]:
    """styleId -> heading level, from styles.xml names ("heading 1", "Title")."""
    levels: dict[str, int] = {}
    if styles is None:
        return levels
    for style in styles.iter(f"{W}style"):
        style_id = style.get(f"{W}styleId") or ""
        name_el = style.find(f"{W}name")
        name = (name_el.get(f"{W}val") if name_el is not None else "") or ""
        level = _style_level(name)
        if style_id and level:
            levels[style_id] = level
    return levels


def _style_level(style: str) -> int | None:
    match = _HEADING_STYLE.match(style.strip())
    if match:
        return int(match.group(1))
    return 1 if style.strip().lower() == "title" else None


def _paragraph_text(paragraph: Element) -> str:
    """Text of the paragraph's runs, not descending into nested paragraphs (text boxes)."""
    parts: list[str] = []
    stack = list(reversed(list(paragraph)))
    while stack:
        node = stack.pop()
        if node.tag == f"{W}p":
            continue
        if node.tag == f"{W}t":  # w:delText (deleted text) is skipped
            parts.append(node.text or "")
        elif node.tag in (f"{W}tab", f"{W}br", f"{W}cr"):
            parts.append(" ")
        stack.extend(reversed(list(node)))
    return collapse("".join(parts))


def _paragraph_markdown(paragraph: Element, levels: dict[str, int]) -> str:
    text = _paragraph_text(paragraph)
    if not text:
        return ""
    props = paragraph.find(f"{W}pPr")
    style_el = props.find(f"{W}pStyle") if props is not None else None
    style = (style_el.get(f"{W}val") if style_el is not None else "") or ""
    level = levels.get(style) or _style_level(style)
    if level:
        return "#" * level + " " + text
    if props is not None and (props.find(f"{W}numPr") is not None or style.lower() == "listparagraph"):
        return "- " + text
    return text


def docx_to_text(data: bytes) -> tuple[str | None, str]:
    """(title or None, Markdown-ish text) of a DOCX file."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise UnsupportedFile(f"the file is not a valid DOCX (zip) document. {_FIX}") from None
    with archive:
        _check_archive(archive)
        try:
            document = _read(archive, "word/document.xml")
            styles_xml = _read(archive, "word/styles.xml")
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
            raise UnsupportedFile(f"the DOCX is damaged ({exc}). {_FIX}") from None
    if document is None:
        raise UnsupportedFile(f"the file is not a Word document (word/document.xml is missing). {_FIX}")
    root = _parse_xml(document, "word/document.xml")
    levels = _heading_styles(_parse_xml(styles_xml, "word/styles.xml") if styles_xml else None)
    title: str | None = None
    blocks: list[str] = []
    for paragraph in root.iter(f"{W}p"):
        block = _paragraph_markdown(paragraph, levels)
        if not block:
            continue
        if title is None and block.startswith("#"):
            title = block.lstrip("#").strip()
        if blocks and block.startswith("- ") and blocks[-1].startswith("- "):
            blocks[-1] += "\n" + block
        else:
            blocks.append(block)
    return title, "\n\n".join(blocks)

"""Child process of the PDF extractor: limits itself, then parses the PDF on stdin with pypdf.

Run as ``python -I extract_pdf_child.py MEMORY_BYTES CPU_SECONDS MAX_PAGES MAX_CHARS``; writes
one JSON object to stdout: ``{"title": str | null, "pages": [str, ...]}`` or
``{"error": "memory" | "pages" | "chars" | "encrypted" | "limit" | "loop" | "invalid", "detail": str}``
("loop": a cyclic page tree or /Parent chain, which pypdf detects).
Only the stdlib is imported before the limits are set.
"""
from __future__ import annotations

import io
import json
import resource
import sys


def _limit(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _parse(data: bytes, max_pages: int, max_chars: int) -> dict:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            return {"error": "encrypted", "detail": "password required"}
        count = len(reader.pages)
        if count > max_pages:
            return {"error": "pages", "detail": f"{count} pages, the limit is {max_pages}"}
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            total += len(text)
            if total > max_chars:
                return {"error": "chars", "detail": f"more than {max_chars:,} characters of text"}
            pages.append(text)
        title = reader.metadata.title if reader.metadata else None
        return {"title": str(title) if title else None, "pages": pages}
    except LimitReachedError as exc:
        return {"error": "loop" if "cycl" in str(exc).lower() else "limit", "detail": str(exc)}
    except RecursionError:
        return {"error": "limit", "detail": "object structure nested too deeply"}
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            AssertionError, OSError, UnicodeError, ArithmeticError) as exc:
        if "cycl" in str(exc).lower():
            return {"error": "loop", "detail": str(exc)[:300]}
        return {"error": "invalid", "detail": f"{type(exc).__name__}: {exc}"[:300]}


def main(argv: list[str]) -> None:
    memory_bytes, cpu_seconds, max_pages, max_chars = (int(value) for value in argv[1:5])
    data = sys.stdin.buffer.read()
    _limit(memory_bytes, cpu_seconds)
    try:
        result = _parse(data, max_pages, max_chars)
    except MemoryError:
        result = {"error": "memory", "detail": f"more than {memory_bytes // 2**20} MB of memory"}
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)

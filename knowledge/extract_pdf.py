"""PDF to text, parsed by pypdf in a resource-limited child process.

A PDF can be built to loop, nest or inflate without end; the child (``extract_pdf_child.py``)
runs with an address-space limit (RLIMIT_AS), a CPU limit and a page limit, and is killed
after a wall-clock timeout. Anything that hits a limit is reported as HostileFile.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from knowledge.errors import HostileFile, UnsupportedFile
from knowledge.extract_common import tidy

CHILD = Path(__file__).with_name("extract_pdf_child.py")
MEMORY_BYTES = 512 * 2**20
TIMEOUT = 20.0
MAX_PAGES = 2_000
MAX_CHARS = 20_000_000
_FIX = "If the document is genuine, split it into smaller PDFs or export its text as .txt or .docx."


def pdf_to_text(data: bytes, *, timeout: float = TIMEOUT, memory_bytes: int = MEMORY_BYTES,
                max_pages: int = MAX_PAGES, max_chars: int = MAX_CHARS) -> tuple[str | None, str]:
    """(title or None, text with pages separated by blank lines) of a PDF."""
    command = [sys.executable, "-I", str(CHILD), str(memory_bytes), str(math.ceil(timeout)),
               str(max_pages), str(max_chars)]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HostileFile(f"rejected PDF: parsing did not finish within {timeout:g} s and was stopped "
                          f"(a looping or oversized structure). {_FIX}") from None
    try:
        result = json.loads(done.stdout)
    except ValueError:
        raise HostileFile(f"rejected PDF: the parser was stopped by its resource limits "
                          f"(exit status {done.returncode}). {_FIX}") from None
    error = result.get("error")
    if error == "invalid":
        raise UnsupportedFile(f"the PDF could not be read ({result['detail']}). "
                              "Re-export it from its source application and upload it again.")
    if error == "encrypted":
        raise UnsupportedFile("the PDF is password-protected. Remove the password and upload it again.")
    if error == "loop":
        raise HostileFile(f"rejected PDF: its object structure loops ({result['detail']}). {_FIX}")
    if error:
        raise HostileFile(f"rejected PDF: {result['detail']} (limit reached). {_FIX}")
    pages = [tidy(page) for page in result["pages"]]
    return result["title"], "\n\n".join(page for page in pages if page)

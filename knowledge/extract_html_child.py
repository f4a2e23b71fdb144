"""Child process of the HTML sandbox: imports the parser, limits its own memory, then parses
the pages it is sent, one at a time, with ``knowledge.extract_html.read_page``.

Run as ``python -I extract_html_child.py MEMORY_BYTES``. Each request on stdin is one JSON line
``{"size": N, "charset": str | null, "url": str | null}`` followed by N bytes of HTML; each
answer on stdout is one JSON line: ``{"title", "text", "links", "robots"}`` or
``{"error": "memory" | "limit", "detail": str}``. After a MemoryError the child answers and
exits (its heap may be unusable); time limits are enforced by the parent, which kills it.
Another child (channels/email_child.py) runs ``main`` with its own ``handle``.
"""
from __future__ import annotations

import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # -I leaves the project off sys.path

from knowledge.child_guard import die_with_parent  # noqa: E402
from knowledge.extract_html import read_page  # noqa: E402  (imported before the limit is set)


def _answer(result: dict) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def read(request: dict, data: bytes) -> dict:
    """The answer to one page: its title, text, links and robots directives."""
    page = read_page(data, request.get("charset"), request.get("url"))
    return {"title": page.title, "text": page.text, "links": list(page.links), "robots": sorted(page.robots)}


def main(argv: list[str], handle: Callable[[dict, bytes], dict] = read) -> None:
    die_with_parent()
    memory_bytes = int(argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    stdin = sys.stdin.buffer
    while True:
        header = stdin.readline()
        if not header:
            return
        request = json.loads(header)
        data = stdin.read(request["size"])
        try:
            result = handle(request, data)
        except MemoryError:
            del data
            _answer({"error": "memory", "detail": f"more than {memory_bytes // 2**20} MB of memory"})
            return
        except RecursionError:
            result = {"error": "limit", "detail": "markup nested too deeply"}
        _answer(result)


if __name__ == "__main__":
    main(sys.argv)

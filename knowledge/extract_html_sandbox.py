"""HTML parsing under limits: a tag budget checked before any tree is built, then the parse
in a child process with an address-space limit, killed at a wall-clock timeout.

Measured (4 MB pages, this code in the worker): 400,000 nested <div> took 11 s and 293 MB,
1,000,000 <br> 32 s and 676 MB, and 32 kB of unclosed "<b" tags 23 s (html.parser is
quadratic there); the cost is the tag count (and parser pathologies), not the nesting. A tag
budget alone cannot catch the pathologies, so both limits apply: ``MAX_TAGS`` rejects tag
floods in milliseconds with a clear message, the child bounds everything else. One child
serves many pages (a crawl keeps one: its start-up, ~0.2 s for Python and bs4, is paid once);
a child that timed out or ran out of memory is replaced on the next page.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from knowledge.child_guard import child_env
from knowledge.errors import HostileFile
from knowledge.extract_html import ParsedPage, count_tags

CHILD = Path(__file__).with_name("extract_html_child.py")
MAX_TAGS = 100_000          # a long help article has ~2,000; at the limit a parse takes ~3 s
MEMORY_BYTES = 512 * 2**20
TIMEOUT = 10.0
_FIX = "If the page is genuine, split it into smaller pages or upload its text as .md or .txt."


class HtmlSandbox:
    """Parses HTML pages in a resource-limited child process, one page at a time (thread-safe).

    Use as a context manager (the child is stopped on exit) or call ``close()``. A subclass may
    set ``child`` to another script that runs ``extract_html_child.main`` with its own handler
    and send it its own requests with ``request()`` (the e-mail channel parses whole mails so).
    """

    child: Path = CHILD

    def __init__(self, *, timeout: float = TIMEOUT, memory_bytes: int = MEMORY_BYTES,
                 max_tags: int = MAX_TAGS) -> None:
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self.max_tags = max_tags
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> HtmlSandbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child. Kills it first, so a parse running in another thread (a cancelled
        crawl) ends at once instead of holding the lock until its timeout."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        with self._lock:
            self._stop()

    def parse(self, html: bytes | str, charset: str | None = None, url: str | None = None) -> ParsedPage:
        """Title, text, links (when ``url`` is given) and robots directives of a page.

        Raises HostileFile when the page has more than ``max_tags`` tags, or its parse needs
        more than ``memory_bytes`` or ``timeout`` seconds."""
        data = html.encode("utf-8") if isinstance(html, str) else html
        if isinstance(html, str):
            charset = "utf-8"
        tags = count_tags(data, self.max_tags)
        if tags > self.max_tags:
            raise HostileFile(f"rejected HTML: {tags:,} tags, the limit is {self.max_tags:,} "
                              f"(a tag flood). {_FIX}")
        result = self.request({"charset": charset, "url": url}, data)
        error = result.get("error")
        if error:
            raise HostileFile(f"rejected HTML: {result.get('detail', error)} (limit reached). {_FIX}")
        return ParsedPage(title=result["title"], text=result["text"], links=tuple(result["links"]),
                          robots=frozenset(result["robots"]))

    def request(self, fields: dict, data: bytes) -> dict:
        """One request to the child (``fields`` plus ``size`` as its JSON line, then ``data``)
        and the child's answer; HostileFile when it ran out of time or was stopped by its limits."""
        header = json.dumps({**fields, "size": len(data)}).encode() + b"\n"
        with self._lock:
            return self._exchange(header, data)

    # ---- the child -----------------------------------------------------------------------

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(self.child), str(self.memory_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env())
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def _exchange(self, header: bytes, data: bytes) -> dict:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        try:
            proc.stdin.write(header)
            proc.stdin.write(data)
            proc.stdin.flush()
            line = self._read_line(proc.stdout.fileno(), deadline)
        except TimeoutError:
            self._stop()
            raise HostileFile(f"rejected HTML: parsing did not finish within {self.timeout:g} s and was "
                              f"stopped (a pathological or oversized page). {_FIX}") from None
        except (BrokenPipeError, EOFError):
            status = proc.wait()
            self._stop()
            raise HostileFile(f"rejected HTML: the parser was stopped by its resource limits "
                              f"(exit status {status}). {_FIX}") from None
        result = json.loads(line)
        if result.get("error") == "memory":
            self._stop()  # it exits after a MemoryError; a fresh one parses the next page
        return result

    @staticmethod
    def _read_line(fd: int, deadline: float) -> bytes:
        """One newline-terminated answer from the child, before ``deadline`` (TimeoutError);
        EOFError when the child died."""
        chunks: list[bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                return b"".join(chunks)


def parse_limited(html: bytes | str, charset: str | None = None, url: str | None = None, *,
                  timeout: float = TIMEOUT, memory_bytes: int = MEMORY_BYTES,
                  max_tags: int = MAX_TAGS) -> ParsedPage:
    """Parse one page in a fresh sandbox (for single files; a crawl keeps one HtmlSandbox)."""
    with HtmlSandbox(timeout=timeout, memory_bytes=memory_bytes, max_tags=max_tags) as sandbox:
        return sandbox.parse(html, charset, url)

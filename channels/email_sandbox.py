"""Inbound mail read under limits: the SMTP listener and the inbound-parse webhook never parse
an untrusted mail in their own process.

One hostile mail could otherwise stall a worker or API thread for minutes or exhaust its memory
(measured in-process, before this module: 16 kB of unclosed HTML tags 1.7 s, growing
quadratically up to the 500,000 characters of HTML read; 7 MB of tiny MIME parts 48 s; 200,000
addresses in To over 2 minutes; 20,000 encoded words in a Subject 2.7 GB). So the whole read
(MIME structure, headers, the HTML body's tag budget and conversion, quote stripping) runs in a
child of knowledge/extract_html_sandbox.py's HtmlSandbox (channels/email_child.py): at most
``MEMORY_BYTES`` of address space, killed after ``TIMEOUT`` seconds. A genuine 10 MB mail with
an attachment takes ~0.2 s there.

Mails are read on ``PARSERS`` threads of their own, each with one long-lived child (started on
first use, ~0.2 s, replaced after a timeout): a flood of hostile mail queues there and never
takes the threads the database calls and the rest of the process use.

Outcomes: an Inbound; RefusedMail (a tag flood, a read past its time or memory limit, MIME parts
nested too deeply): the SMTP listener answers 550 and the webhook 422, since reading it again
would cost the same; ChannelError for a body that is not a usable form or mail (400, SMTP 554).
"""
from __future__ import annotations

import asyncio
import atexit
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from channels.email_parse import Inbound, RefusedMail
from channels.errors import ChannelError
from knowledge.errors import HostileFile
from knowledge.extract_html_sandbox import HtmlSandbox

TIMEOUT = 5.0               # a genuine mail takes well under a second
MEMORY_BYTES = 512 * 2**20
PARSERS = 2                 # mails read at the same time per process (the machine's cores)


class MailSandbox(HtmlSandbox):
    """An HtmlSandbox whose child reads whole mails (channels/email_child.py)."""

    child = Path(__file__).with_name("email_child.py")

    def read(self, fields: dict, data: bytes) -> Inbound:
        try:
            answer = self.request(fields, data)
        except HostileFile:  # out of time, or killed by its limits
            answer = {"error": "limit"}
        if "inbound" in answer:
            return Inbound.from_dict(answer["inbound"])
        if "invalid" in answer:
            raise ChannelError(str(answer["invalid"]))
        raise RefusedMail(str(answer.get("refused") or
                              f"reading the message took more than {self.timeout:g} s or "
                              f"{self.memory_bytes // 2**20} MB of memory (a pathological or oversized message); "
                              f"if it is genuine, send it as plain text"))


_local = threading.local()
_sandboxes: list[MailSandbox] = []
_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _sandbox() -> MailSandbox:
    sandbox = getattr(_local, "sandbox", None)
    if sandbox is None:
        sandbox = _local.sandbox = MailSandbox(timeout=TIMEOUT, memory_bytes=MEMORY_BYTES)
        with _lock:
            _sandboxes.append(sandbox)
    return sandbox


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=PARSERS, thread_name_prefix="flywheel-mail")
        return _executor


def read_mail(raw: bytes) -> Inbound:
    """A raw MIME message read in this thread's sandbox (RefusedMail, ChannelError)."""
    return _sandbox().read({"kind": "mime"}, raw)


def read_form(content_type: str, body: bytes) -> Inbound:
    """An inbound-parse webhook's body read in this thread's sandbox (RefusedMail, ChannelError)."""
    return _sandbox().read({"kind": "form", "content_type": content_type}, body)


async def parse_mail(raw: bytes) -> Inbound:
    """`read_mail` on one of the mail threads."""
    return await asyncio.get_running_loop().run_in_executor(_pool(), read_mail, raw)


async def parse_form(content_type: str, body: bytes) -> Inbound:
    """`read_form` on one of the mail threads."""
    return await asyncio.get_running_loop().run_in_executor(_pool(), read_form, content_type, body)


@atexit.register
def close() -> None:
    """Stop every child (they also end on their own when this process goes: stdin closes)."""
    with _lock:
        sandboxes = list(_sandboxes)
    for sandbox in sandboxes:
        sandbox.close()

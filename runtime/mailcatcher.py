"""A local SMTP server that keeps what it receives: the dev mailbox and the tests' SMTP peer.

`flywheel dev` runs it so approval mails work on a laptop with no mail server (links are
printed and the messages saved as .eml files); tests read `messages` to follow the links.
"""
from __future__ import annotations

import email
import email.policy
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Callable

from aiosmtpd.controller import Controller


class _Handler:
    def __init__(self, catcher: "MailCatcher") -> None:
        self.catcher = catcher

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                       policy=email.policy.default)
        self.catcher._keep(msg)
        return "250 Message accepted"


class MailCatcher:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, save_dir: Path | None = None,
                 on_message: Callable[[EmailMessage], None] | None = None) -> None:
        self.messages: list[EmailMessage] = []
        self.save_dir, self.on_message = save_dir, on_message
        self._cond = threading.Condition()
        self._controller = Controller(_Handler(self), hostname=host, port=port or _free_port(host))

    @property
    def port(self) -> int:
        return self._controller.port

    def _keep(self, msg: EmailMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()
        if self.save_dir:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns()}.eml"
            (self.save_dir / name).write_bytes(msg.as_bytes())
        if self.on_message:
            self.on_message(msg)

    def wait_for(self, predicate: Callable[[EmailMessage], bool], timeout: float = 30.0,
                 count: int = 1) -> list[EmailMessage]:
        """Block until `count` received messages match `predicate`; returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.messages if predicate(m)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {count} matching mails, got {len(found)}")
                self._cond.wait(left)

    def start(self) -> "MailCatcher":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> "MailCatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port(host: str) -> int:
    import socket
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def text_body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content().replace("\r\n", "\n") if part else ""

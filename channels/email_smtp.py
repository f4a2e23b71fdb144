"""The inbound SMTP listener of the e-mail channel (aiosmtpd).

`start_email_listener(settings, on_accept)` starts it on settings.email_inbound_host/port in
its own thread and returns the Controller (`.stop()` stops it). Recipients are accepted only when
they are a configured tenant's address (`{tenant}@{email_inbound_domain}` or
`support+{tenant}@...`); others get 550. Messages above settings.email_max_bytes get 552. Each
message is read in a resource-limited child (channels/email_sandbox.py): one that cannot be read
within its limits (a tag flood, past 5 s or 512 MB) gets 550 5.6.0 with the reason, one the
parser gives up on 554. Each accepted message goes through channels.email.ingest per recipient
tenant (recorded in the inbound outbox; the workers' relay hands it to the conversation); when
the database fails the sender gets 451 and retries later.

Run it on its own: `python -m channels.email_smtp` (settings from FLYWHEEL_*; port
FLYWHEEL_EMAIL_INBOUND_PORT, which must not be 0).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from channels.email import configured, engine_runner, ingest
from channels.email_parse import RefusedMail, tenant_of_address
from channels.email_sandbox import parse_mail
from channels.errors import ChannelError
from channels.text import clean_short
from db.engine import make_engine

log = logging.getLogger("flywheel.channels.email.smtp")

MAX_RECIPIENTS = 20


class _Handler:
    def __init__(self, settings: Any, engine: Any, on_accept: Callable[[], None] | None) -> None:
        self.settings, self.engine, self.on_accept = settings, engine, on_accept
        self.db = engine_runner(engine)

    def tenant(self, address: str) -> str | None:
        return tenant_of_address(address, self.settings.email_inbound_domain)

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options) -> str:
        tenant = self.tenant(address)
        if tenant is None or await self.db(configured, tenant) is None:
            return f"550 5.1.1 <{address}>: no such mailbox here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            mail = await parse_mail(raw)
        except RefusedMail as err:
            # for good: reading it again would cost the same; the sender's bounce says why
            log.warning("mail from %s refused: %s", clean_short(envelope.mail_from, 300), err.message)
            return f"550 5.6.0 message refused: {clean_short(err.message, 400)}"
        except ChannelError as err:  # the parser is lenient; this is a truly broken message
            log.warning("unparseable mail from %s refused: %s", clean_short(envelope.mail_from, 300), err.message)
            return "554 5.6.0 the message could not be parsed"
        tenants = list(dict.fromkeys(t for t in map(self.tenant, envelope.rcpt_tos) if t))
        try:
            for tenant in tenants:
                result = await ingest(self.db, tenant, mail)
                log.info("mail %s for %s: %s", mail.message_id, tenant, result)
        except Exception:
            # a tenant that took it already has the Message-ID recorded: the retry is a duplicate there
            log.exception("mail %s could not be recorded", mail.message_id)
            return "451 4.3.0 temporary failure, try again later"
        if self.on_accept is not None:
            self.on_accept()
        return "250 2.0.0 Message accepted"


class _CappedSMTP(SMTP):
    """An SMTP session that is only served while fewer than `limit` others are: each session
    may buffer a whole message in memory, so many parallel senders could exhaust the process."""

    def __init__(self, handler: Any, *, sessions: dict[str, int], limit: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions, self._limit = sessions, limit

    async def _handle_client(self) -> None:
        if self._sessions["open"] >= self._limit:
            await self.push("421 4.7.0 too many connections, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        self._sessions["open"] += 1  # the listener's own event loop: no other thread counts
        try:
            await super()._handle_client()
        finally:
            self._sessions["open"] -= 1


class EmailListener(Controller):
    """The aiosmtpd Controller of the listener; stopping it also releases its database engine."""

    def __init__(self, handler: _Handler, *, max_sessions: int = 32, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.handler_ = handler
        self.max_sessions = max_sessions
        self.sessions = {"open": 0}

    def factory(self) -> SMTP:
        return _CappedSMTP(self.handler, sessions=self.sessions, limit=self.max_sessions, **self.SMTP_kwargs)

    def stop(self, no_assert: bool = False) -> None:
        super().stop(no_assert=no_assert)
        self.handler_.engine.dispose()


def start_email_listener(settings: Any, on_accept: Callable[[], None] | None = None) -> Controller:
    """Start the SMTP listener on settings.email_inbound_host/email_inbound_port (in a thread);
    `on_accept()` is called (from the listener's thread) after a message was recorded. OSError
    when the address cannot be bound."""
    if not settings.email_inbound_port:
        raise ValueError("email_inbound_port is 0: the SMTP listener is off")
    engine = make_engine(settings.resolved_database_url())
    controller = EmailListener(_Handler(settings, engine, on_accept), hostname=settings.email_inbound_host,
                               port=settings.email_inbound_port, data_size_limit=settings.email_max_bytes,
                               max_sessions=settings.email_max_sessions,
                               server_hostname=settings.email_inbound_domain or None)
    try:
        controller.start()  # OSError when the port is taken (e.g. by another worker on this host)
    except BaseException:
        engine.dispose()
        raise
    log.info("e-mail listener on %s:%s", settings.email_inbound_host, controller.port)
    return controller


def main() -> None:  # pragma: no cover - a long-running process
    from settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    controller = start_email_listener(settings)
    stop = asyncio.Event()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()


if __name__ == "__main__":  # pragma: no cover
    main()

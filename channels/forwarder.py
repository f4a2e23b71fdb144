"""The inbound outbox relay: hands accepted channel messages to their conversations.

A webhook only records the message (de-duplication key + outbox row, one transaction) and
acknowledges. This relay runs in every worker process beside the Temporal worker (worker.py):
it polls the outbox every `settings.inbound_poll_s` (and at once when this process accepted
a message itself, e.g. the inbound SMTP listener), signals-with-start the conversations and
marks the rows forwarded. When Temporal refuses or is away, the rows stay pending (attempts and
last error recorded) and are tried again, after a growing pause while nothing gets through, so
an accepted message is never lost.

Giving up: a row that fails for a reason of its own (Temporal refuses it: INVALID_ARGUMENT,
e.g. a payload over the size limit, FAILED_PRECONDITION ...; or it cannot be converted) waits
`retry_base_s` x 2^attempts (at most RETRY_MAX_S) before its next try, and after `max_attempts`
(MAX_ATTEMPTS) such failures it is marked failed (`failed_at`, logged as an error, listed by
`GET /v1/channels/inbound`, retried by `POST /v1/channels/inbound/{id}/retry`). A waiting or
failed row never holds up other threads' rows (only the later rows of its own thread wait for
it, to keep their order; once it is given up they go on). Temporal being away or overloaded
(UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ..., or no connection) is nobody's row's
fault: those failures pause the whole relay and never give a row up, so an accepted message is
not lost however long Temporal is away.

A `call_ended` row (the end of a phone call, channels/twilio.py) is told to the running
conversation with the `channel_event` signal (never a start; no conversation: nothing to do).

The API process does no forwarding: a webhook's acknowledgement never waits on Temporal and
never shares its process with this work. Messages of one thread are forwarded in order;
different threads in parallel. Several workers may forward the same row: the conversation
drops the second copy by its message id, and a thread's first copy of each message still
arrives in order (every relay sends a thread's rows in order).
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import timedelta
from functools import partial
from typing import Any, Awaitable, Callable

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from channels.inbound import deliver_event, deliver_inbound
from db.channels import mark_failed, mark_forwarded, pending_inbound
from db.engine import run_in_session
from db.models import utcnow

log = logging.getLogger("flywheel.channels.forwarder")
PARALLEL = 32       # threads forwarded at once
BATCH = 200         # rows read per drain
MAX_BACKOFF_S = 30.0
MAX_ATTEMPTS = 10   # failures of a row's own before it is given up
RETRY_BASE_S = 1.0  # a failed row waits RETRY_BASE_S * 2^attempts ...
RETRY_MAX_S = 300.0  # ... at most this long (10 attempts: about 17 minutes)
# Temporal is away or overloaded: no row's fault
SYSTEMIC = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED,
                      RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.ABORTED, RPCStatusCode.UNKNOWN,
                      RPCStatusCode.INTERNAL, RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED,
                      RPCStatusCode.NOT_FOUND, RPCStatusCode.UNIMPLEMENTED})


def systemic(err: BaseException) -> bool:
    """Whether a failure is Temporal's (away, overloaded, misconfigured), not the row's."""
    if isinstance(err, RPCError):
        return err.status in SYSTEMIC
    return isinstance(err, (OSError, TimeoutError, asyncio.TimeoutError))


class Forwarder:
    def __init__(self, settings: Any, engine: Engine, client_factory: Callable[[], Awaitable[Client]],
                 poll_s: float | None = None, *, batch: int = BATCH, max_attempts: int = MAX_ATTEMPTS,
                 retry_base_s: float = RETRY_BASE_S) -> None:
        self.settings, self.engine, self.client_factory = settings, engine, client_factory
        self.poll_s = float(poll_s if poll_s is not None else getattr(settings, "inbound_poll_s", 0.1))
        self.batch, self.max_attempts, self.retry_base_s = batch, max_attempts, retry_base_s
        self._kick = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.backoff_s = 0.0   # > 0 while forwarding fails

    @classmethod
    def with_client(cls, settings: Any, engine: Engine, client: Client) -> "Forwarder":
        async def same() -> Client:
            return client
        return cls(settings, engine, same)

    def start(self) -> "Forwarder":
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="inbound-forwarder")
        return self

    def kick(self) -> None:
        """New rows are waiting: look now instead of at the next poll."""
        self._kick.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _db(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return run_in_session(self.engine, fn, *args)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=self.backoff_s or self.poll_s)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()
            try:
                while True:
                    forwarded, failed = await self.drain()
                    if failed and not forwarded:  # Temporal refuses everything: pause
                        self.backoff_s = min(MAX_BACKOFF_S, max(1.0, self.backoff_s * 2))
                        break
                    self.backoff_s = 0.0
                    if forwarded < self.batch:
                        break
            except asyncio.CancelledError:
                raise
            except Exception:  # the database or Temporal is away: try again after a pause
                self.backoff_s = min(MAX_BACKOFF_S, max(1.0, self.backoff_s * 2))
                log.exception("forwarding inbound messages failed; next try in %.0f s", self.backoff_s)

    async def _forward(self, client: Client, row: Any) -> None:
        if row.kind == "call_ended":
            await deliver_event(client, tenant_id=row.tenant_id, channel=row.channel, thread=row.thread,
                                event={"kind": "call_ended", **(row.customer or {})})
            return
        await deliver_inbound(client, self.settings, tenant_id=row.tenant_id, channel=row.channel,
                              thread=row.thread, text=row.text, customer=row.customer,
                              message_id=row.message_id, attachments=row.attachments or [])

    async def drain(self) -> tuple[int, int]:
        """Forward what is due (one batch): (forwarded, failed because of Temporal). Rows that
        failed for their own reason wait (or are given up) and count in neither."""
        rows = await self._db(pending_inbound, self.batch)
        if not rows:
            return 0, 0
        client = await self.client_factory()
        threads: dict[tuple[str, str, str], list] = defaultdict(list)
        for row in rows:
            threads[(row.tenant_id, row.channel, row.thread)].append(row)
        gate = asyncio.Semaphore(PARALLEL)
        done: list[int] = []
        failed: list[tuple[Any, BaseException]] = []

        async def forward(batch: list) -> None:
            async with gate:
                for row in batch:  # in order within a thread; stop at the first failure
                    try:
                        await self._forward(client, row)
                    except Exception as err:
                        failed.append((row, err))
                        return
                    done.append(row.id)

        await asyncio.gather(*(forward(batch) for batch in threads.values()))
        await self._db(mark_forwarded, done)
        away = 0
        for row, err in failed:
            error = f"{type(err).__name__}: {err}"
            if systemic(err):
                away += 1
                if row.attempts % 10 == 0:
                    log.warning("inbound message %s not forwarded yet (attempt %d): %s", row.id,
                                row.attempts + 1, error)
                await self._db(mark_failed, row.id, error)
                continue
            attempts = row.attempts + 1
            if attempts >= self.max_attempts:
                log.error("inbound message %s (tenant %s, %s thread %s) given up after %d attempts: %s",
                          row.id, row.tenant_id, row.channel, row.thread, attempts, error)
                await self._db(partial(mark_failed, give_up=True), row.id, error)
            else:
                wait = min(RETRY_MAX_S, self.retry_base_s * 2 ** row.attempts)
                log.warning("inbound message %s refused (attempt %d, next in %.0f s): %s", row.id, attempts,
                            wait, error)
                await self._db(partial(mark_failed, retry_at=utcnow() + timedelta(seconds=wait)), row.id, error)
        return len(done), away

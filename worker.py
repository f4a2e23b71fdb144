"""The Flywheel worker: runs procedure workflows and their activities.

`python worker.py` (or `flywheel worker`). SIGTERM/SIGINT shut it down gracefully: it stops
polling, lets running activities finish (up to the graceful timeout) and exits.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

from temporalio.client import Client

from activities.services import Services
from channels.forwarder import Forwarder
from runtime.keys import ensure_keys
from runtime.priority import lower_priority
from runtime.workers import activities_for, build_worker
from settings import Settings, get_settings

log = logging.getLogger("flywheel.worker")


def warm_up(services: Services) -> None:
    """Load the embedding model and open the knowledge index now, not on the first turn."""
    from activities.conversation import ConversationActivities
    acts = ConversationActivities(services)
    acts.embedder.embed(["warm up"])
    _ = acts.index


def _threadsafe(loop: asyncio.AbstractEventLoop, fn):
    """`fn` callable from another thread (the SMTP listener runs in its own)."""
    return lambda: loop.call_soon_threadsafe(fn)


def _warmed(done: asyncio.Future) -> None:
    if done.exception():
        log.warning("warm-up failed: %s", done.exception())
    # Everything loaded so far (the embedding model, torch, the index client: millions of
    # objects) lives as long as the process: keep it out of the cyclic garbage collector, whose
    # full passes over it would otherwise stall every thread (and any SQLite write lock a
    # thread holds) for hundreds of milliseconds.
    gc.freeze()


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    settings = ensure_keys(settings)
    services = Services.from_settings(settings)
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    worker = build_worker(client, settings.task_queue, activities_for(services))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    # the channels' inbound outbox relay: accepted webhook messages -> their conversations
    forwarder = Forwarder.with_client(settings, services.engine, client)
    listener = None
    if settings.email_inbound_port:  # the e-mail channel's inbound SMTP listener
        from channels.email_smtp import start_email_listener
        try:
            listener = start_email_listener(settings, on_accept=_threadsafe(loop, forwarder.kick))
        except OSError as err:  # e.g. a second worker on this host: one listener is enough
            log.warning("e-mail listener not started (%s); this worker runs without it", err)
    async with worker:
        forwarder.start()
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        if settings.worker_warm_up:
            warming = loop.run_in_executor(None, warm_up, services)
            warming.add_done_callback(_warmed)
        else:
            gc.freeze()
        await stop.wait()
        log.info("shutting down")
        await forwarder.stop()
        if listener is not None:
            listener.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # the twilio client logs every request and response header at INFO: eleven lines per reply
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    settings = get_settings()
    lower_priority(settings.resolved_worker_nice())  # before any thread starts: every thread inherits it
    asyncio.run(run_worker(settings))
    # The worker has shut down gracefully (no task in flight). Leave without interpreter
    # finalization: the Temporal core's threads can abort a finalizing interpreter
    # (PyGILState_Release), turning a clean stop into SIGABRT.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

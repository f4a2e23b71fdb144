"""Engine and sessions: SQLite (file, WAL) by default, PostgreSQL via psycopg."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

from db import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from db.migrate import add_missing_columns

R = TypeVar("R")


def normalize_url(url: str) -> str:
    """Use the psycopg (v3) driver for plain postgres URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.close()


def sqlite_begin_write(session: Session, poll_s: float = 0.001) -> None:
    """Start the session's transaction holding SQLite's write lock, asking for it every
    `poll_s` (SQLite's own busy handler sleeps up to 100 ms between tries, so a short writer
    can wait behind a stream of other processes' writes far longer than they hold the lock).
    For latency-sensitive writes (a webhook's acknowledgement); gives up like the busy timeout."""
    raw = session.connection().connection.dbapi_connection
    if raw.in_transaction:
        return
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(poll_s)
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def make_engine(url: str, *, create_tables: bool = True) -> Engine:
    """Create an engine for `url` and (by default) create the tables that are missing."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if create_tables:
        SQLModel.metadata.create_all(engine)
        add_missing_columns(engine)  # a database made by an earlier version
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose objects stay readable after commit; rolled back on error, then closed."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def call_in_session(engine: Engine, fn: Callable[..., R], *args: Any) -> R:
    """`fn(session, *args)` with a session of its own (see session_scope)."""
    with session_scope(engine) as session:
        return fn(session, *args)


async def run_in_session(engine: Engine, fn: Callable[..., R], *args: Any) -> R:
    """`call_in_session` in a thread: the database drivers are synchronous."""
    return await asyncio.to_thread(call_in_session, engine, fn, *args)


@contextmanager
def open_database(url: str) -> Iterator[Session]:
    """Engine + session for one short job (CLI commands); the engine is disposed afterwards."""
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()

"""One sender per database: the lock `run-due` and `worker` hold while they send.

SQLite: an ``fcntl.flock`` on a file next to the database (``wacamp.db.run-due.lock``), taken
without waiting. PostgreSQL: ``pg_try_advisory_lock`` held on a dedicated connection for the whole
run. Either way the operating system or the server drops the lock when the process dies, so a
crashed run never blocks the next one.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import is_sqlite, safe_url
from campaigns.core.exceptions import LockedError, is_passing_database_trouble

log = logging.getLogger(__name__)

#: The lock every sending loop (run-due, worker) takes.
SEND_LOCK = "run-due"


def lock_file_path(engine: Engine, name: str = SEND_LOCK) -> Path | None:
    """The lock file beside a SQLite database file (None for an in-memory database)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).resolve().with_name(f"{Path(database).name}.{name}.lock")


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_try_advisory_lock`, derived from the lock's name."""
    digest = hashlib.sha256(f"wacamp:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def exclusive_lock(engine: Engine, name: str = SEND_LOCK) -> Iterator[None]:
    """Hold the database-wide lock `name` for the block, or raise LockedError at once."""
    if is_sqlite(engine):
        with _file_lock(engine, name):
            yield
    else:
        with _advisory_lock(engine, name):
            yield


@contextmanager
def _file_lock(engine: Engine, name: str) -> Iterator[None]:
    path = lock_file_path(engine, name)
    if path is None:  # an in-memory database lives in one process: nothing to share
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise LockedError(
                f"another wacamp {name} is already sending from {safe_url(engine)}"
                f"{holder} (lock file {path}); this one exits without sending"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextmanager
def _advisory_lock(engine: Engine, name: str) -> Iterator[None]:
    key = advisory_key(name)
    # A session-level advisory lock lives as long as this connection: keep it out of the pool's
    # reach for the whole run, and never inside a transaction left open.
    with engine.connect() as conn:
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
        conn.commit()
        if not got:
            raise LockedError(
                f"another wacamp {name} is already sending from {safe_url(engine)} "
                f"(advisory lock {key} is held); this one exits without sending"
            )
        try:
            yield
        finally:
            _unlock(conn, "SELECT pg_advisory_unlock(:key)", key)


@contextmanager
def worker_lock(engine: Engine, name: str = SEND_LOCK) -> Iterator[None]:
    """The lock a `wacamp worker` holds for its life (scale-out: `scheduler.sending.leases`).

    PostgreSQL: the *shared* form of the send lock (``pg_try_advisory_lock_shared``), so any number
    of workers run side by side (they share the senders through sender leases) while a `run-due`,
    which takes the exclusive form, still never sends at the same time. SQLite: the exclusive lock
    (one process sends per SQLite database).
    """
    if is_sqlite(engine):
        with _file_lock(engine, name):
            yield
        return
    key = advisory_key(name)
    with engine.connect() as conn:
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock_shared(:key)"), {"key": key}).scalar())
        conn.commit()
        if not got:
            raise LockedError(
                f"a wacamp run-due is sending from {safe_url(engine)} "
                f"(advisory lock {key} is held); this worker exits without sending"
            )
        try:
            yield
        finally:
            _unlock(conn, "SELECT pg_advisory_unlock_shared(:key)", key)


def _unlock(conn: sa.Connection, statement: str, key: int) -> None:
    """Release an advisory lock; a session the server dropped (a restart) released it already."""
    try:
        conn.execute(sa.text(statement), {"key": key})
        conn.commit()
    except sa.exc.DBAPIError as exc:
        if not is_passing_database_trouble(exc):
            raise
        log.warning("the send lock's session was lost (the database restarted): the lock ended with it")

"""A run's one database thread: every write of the dispatcher runs there, database outages waited out.

Claims, result batches and state changes never contend with each other inside the process, so
SQLite's busy handler (which sleeps in steps of up to 100 ms) never gets involved. Passing database
trouble is retried until the database answers, up to [database] outage_wait_s
(`scheduler.sending.outage.DatabaseWait`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from scheduler.sending.outage import DatabaseWait

T = TypeVar("T")


class RunDatabase:
    """The run's database thread (`executor`, shared with the result writer) and its outage wait."""

    def __init__(self, engine: Engine, *, now: Callable[[], datetime], wait: DatabaseWait) -> None:
        self.engine = engine
        self.now = now
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wacamp-db")
        #: Database trouble is waited out, up to [database] outage_wait_s (`scheduler.sending.outage`).
        self.wait = wait

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run a database write on the run's one database thread.

        Claims, result batches and state changes never contend with each other inside this process,
        so SQLite's busy handler (which sleeps in steps of up to 100 ms) never gets involved.
        Database trouble is waited out (`wait`): the call is retried until the database answers.
        """
        loop = asyncio.get_running_loop()
        return await self.wait.run(
            lambda: loop.run_in_executor(self.executor, functools.partial(func, *args)), what=func.__name__
        )

    async def in_txn(self, func: Callable[..., T], **kwargs: Any) -> T:
        """`func(conn, now=..., **kwargs)` in one write transaction on the run's database thread."""
        return await self.call(self._transact, func, kwargs)

    def _transact(self, func: Callable[..., T], kwargs: dict[str, Any]) -> T:
        now = self.now()
        with write_transaction(self.engine) as conn:
            return func(conn, now=now, **kwargs)

    def shutdown(self) -> None:
        """Stop the thread without waiting (the run's writes are done or abandoned by then)."""
        self.executor.shutdown(wait=False)

"""Group commit into `webhook_inbox`: every request waits for its body to be durable, none waits alone.

A request puts (body, future) on a queue and awaits the future. One task waits a couple of
milliseconds after the first body (`linger_s`, so the requests arriving meanwhile share the commit),
takes everything queued, inserts it in ONE transaction (in a worker thread, so the event loop keeps
accepting), then resolves the futures: the handlers answer 200 only after the commit. While one
commit runs the next batch builds up, so the batch size follows the load by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import WEBHOOK_INBOX_TABLE as INBOX


@dataclass(frozen=True)
class InboxItem:
    """A raw body to store, with an error already known at receipt (e.g. not UTF-8)."""

    body: str
    error: str | None = None


def insert_bodies(engine: Engine, items: list[InboxItem]) -> None:
    """Insert raw bodies into the inbox in one transaction."""
    now = utcnow()
    rows = [{"received_at": now, "body": item.body, "error": item.error} for item in items]
    with write_transaction(engine) as conn:
        conn.execute(sa.insert(INBOX), rows)


class InboxWriter:
    """The group-commit writer. Use as an async context manager; `store` returns once durable."""

    def __init__(self, engine: Engine, *, max_batch: int = 2000, linger_s: float = 0.002) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._queue: asyncio.Queue[tuple[InboxItem, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.stored = 0

    async def __aenter__(self) -> InboxWriter:
        self._task = asyncio.create_task(self._run(), name="webhook-inbox-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_queued(RuntimeError("the webhook inbox writer stopped"))

    async def store(self, item: InboxItem) -> None:
        """Queue one body and wait until its transaction has committed (raises if it failed)."""
        if self._task is None or self._task.done():
            raise RuntimeError("the webhook inbox writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger_s > 0:  # let the requests arriving right now join this commit
                await asyncio.sleep(self._linger_s)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                # shielded: a cancel during shutdown still lets the commit finish and answer.
                await asyncio.shield(asyncio.to_thread(insert_bodies, self._engine, [i for i, _ in batch]))
            except asyncio.CancelledError:
                self._resolve(batch, RuntimeError("the webhook inbox writer stopped"))
                raise
            except Exception as exc:  # the requests answer 500 and the platform retries them
                self._resolve(batch, exc)
                continue
            self.commits += 1
            self.stored += len(batch)
            self._resolve(batch, None)

    @staticmethod
    def _resolve(batch: list[tuple[InboxItem, asyncio.Future[None]]], error: BaseException | None) -> None:
        for _item, future in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _fail_queued(self, error: BaseException) -> None:
        while not self._queue.empty():
            _item, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(error)

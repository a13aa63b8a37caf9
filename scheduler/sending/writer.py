"""The one writer task: send results go to the ledger in batches, never a commit per message.

Send tasks hand their outcome to `ResultWriter.put` (no I/O, no await); the writer gathers up to
`batch_rows` outcomes or waits at most `batch_ms` after the first, then applies them in one short
write transaction (one executemany UPDATE per kind, in a worker thread so the event loop and the
rate limiter keep their timing). No transaction is ever open while a request is on the network.

`close()` flushes everything and is shielded: a cancel arriving during the final flush does not lose
it. If the task itself is cancelled (a forced stop), what is still buffered is written synchronously
before the cancel goes on. Applying an outcome twice is harmless (each statement checks the state).

Database trouble (SQLite locked past its busy timeout, a PostgreSQL restart or failover) does not lose
results: a batch is retried through the run's `DatabaseWait` (one outage clock for the whole run), and
while the database does not answer (or a commit has taken longer than `JOURNAL_AFTER_S`) every result
held is appended to the run's `Journal` (`scheduler.sending.journal`, fsynced), so a `kill -9` during
the outage loses nothing either. Once the journaled results are committed the file is deleted; when the
run gives up on the database it is left for the next command to replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.contacts import effects
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import DatabaseUnavailableError
from campaigns.core.models import THROTTLE_EVENT_TABLE as THROTTLE_EVENT
from scheduler.sending import budget, ledger_outcomes
from scheduler.sending.ledger_outcomes import Outcome
from scheduler.sending.outage import DatabaseWait

log = logging.getLogger(__name__)

#: A commit still running after this long is treated as trouble: what the writer holds is journaled.
JOURNAL_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class ContactAction:
    """A change to a contact that a send result calls for (131050 suppress, 131049 defer).

    Written by `campaigns.contacts.effects`: a suppression keeps the first reason, a deferral only extends.
    """

    contact_id: int
    suppress_reason: str | None = None
    defer_until: datetime | None = None

    @classmethod
    def opted_out(cls, contact_id: int, *, code: int | None, title: str | None) -> ContactAction:
        """131050: suppress the contact, with the reason every other opt-out path spells the same way."""
        return cls(contact_id, suppress_reason=effects.platform_opt_out_reason(code, title))

    @classmethod
    def marketing_limited(cls, contact_id: int, *, until: datetime) -> ContactAction:
        """131049: no marketing to the contact before `until`."""
        return cls(contact_id, defer_until=until)


@dataclass(frozen=True, slots=True)
class ThrottleNote:
    """The platform told a sender to slow down: one `ThrottleEvent` row."""

    sender_name: str
    campaign_id: int | None
    code: int | None
    retry_after_s: float | None
    at: datetime


@dataclass(frozen=True, slots=True)
class TierRefund:
    """A claimed row went back unsent: its recipient's tier count (made by that claim) is given back."""

    portfolio: str
    phone: str
    counted_at: datetime


Item = Outcome | ContactAction | ThrottleNote | TierRefund


@dataclass
class WriteBatch:
    """Everything one write transaction applies."""

    outcomes: list[Outcome] = field(default_factory=list)
    contacts: list[ContactAction] = field(default_factory=list)
    throttles: list[ThrottleNote] = field(default_factory=list)
    refunds: list[TierRefund] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.outcomes) + len(self.contacts) + len(self.throttles) + len(self.refunds)

    def add(self, item: Item) -> None:
        if isinstance(item, ContactAction):
            self.contacts.append(item)
        elif isinstance(item, ThrottleNote):
            self.throttles.append(item)
        elif isinstance(item, TierRefund):
            self.refunds.append(item)
        else:
            self.outcomes.append(item)

    def extend(self, other: WriteBatch) -> None:
        self.outcomes.extend(other.outcomes)
        self.contacts.extend(other.contacts)
        self.throttles.extend(other.throttles)
        self.refunds.extend(other.refunds)


def apply_batch(engine: Engine, batch: WriteBatch) -> None:
    """Write one batch in one transaction (blocking: call it from a thread)."""
    if not len(batch):
        return
    with write_transaction(engine) as conn:
        ledger_outcomes.apply_outcomes(conn, batch.outcomes)
        _apply_contacts(conn, batch.contacts, now=utcnow())
        budget.uncount(conn, [(r.portfolio, r.phone, r.counted_at) for r in batch.refunds])
        if batch.throttles:
            conn.execute(
                sa.insert(THROTTLE_EVENT),
                [
                    {
                        "sender_name": n.sender_name,
                        "campaign_id": n.campaign_id,
                        "code": n.code,
                        "retry_after_s": n.retry_after_s,
                        "at": n.at,
                    }
                    for n in batch.throttles
                ],
            )


def _apply_contacts(conn: Connection, actions: Sequence[ContactAction], *, now: datetime) -> None:
    """One statement per distinct reason and per distinct deferral end (`effects` decides what changes)."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    by_until: dict[datetime, list[int]] = defaultdict(list)
    for action in actions:
        if action.suppress_reason is not None:
            by_reason[action.suppress_reason].append(action.contact_id)
        if action.defer_until is not None:
            by_until[action.defer_until].append(action.contact_id)
    for reason, ids in by_reason.items():
        effects.suppress_contacts(conn, ids, reason=reason, at=now, now=now)
    for until, ids in by_until.items():
        effects.defer_marketing(conn, ids, until=until, now=now)


class JournalSink(Protocol):
    """Where results go while the database does not take them (`scheduler.sending.journal.Journal`)."""

    @property
    def active(self) -> bool:
        """Whether something is journaled and not known to be committed."""
        ...

    def append(self, items: Sequence[Item]) -> None:
        """Append and fsync (blocking)."""

    def discard(self) -> None:
        """Everything journaled is committed: forget it (blocking)."""

    def close(self) -> None:
        """Keep what is journaled for the next command (blocking)."""


class ResultWriter:
    """Batches outcomes into the ledger from one task (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        batch_rows: int,
        batch_ms: int,
        executor: Executor | None = None,
        wait: DatabaseWait | None = None,
        journal: JournalSink | None = None,
    ) -> None:
        self.engine = engine
        #: The run's outage clock (no waiting when None: the first trouble gives up).
        self.wait = wait or DatabaseWait(outage_wait_s=0)
        self.journal = journal
        #: Where batches are written (the dispatcher's one database thread; the default pool if None).
        self.executor = executor
        self.batch_rows = batch_rows
        self.batch_s = batch_ms / 1000
        self._queue: asyncio.Queue[Item | asyncio.Future[None] | None] = asyncio.Queue()
        self._barriers: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._pending = WriteBatch()
        self._applying: WriteBatch | None = None
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.batches = 0
        #: Every item put and not committed yet, in put order (batches are applied in that order).
        self._unwritten: deque[Item] = deque()
        self._committed = 0  # items committed so far (the sequence number of `_unwritten[0]`)
        self._journaled = 0  # items with a lower sequence number are committed or journaled
        self._writing_since: float | None = None

    @property
    def held(self) -> int:
        """Results (and contact actions, notes) put and not committed yet."""
        return len(self._unwritten)

    @property
    def journaled(self) -> int:
        """Of `held`, how many are in the journal."""
        return max(0, self._journaled - self._committed)

    def start(self) -> asyncio.Task[None]:
        """Start the writer task (named `ledger-writer`)."""
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        return self._task

    def put(self, item: Item) -> None:
        """Queue one outcome, contact action or throttle note (never blocks)."""
        self._unwritten.append(item)
        self._queue.put_nowait(item)
        if self._queue.qsize() >= self.batch_rows:
            self._wakeup.set()

    async def flush(self) -> None:
        """Return once everything queued before this call is committed."""
        if self._task is None or self._task.done():
            return
        barrier: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(barrier)
        self._wakeup.set()
        await asyncio.wait({barrier, self._task}, return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        """Write everything queued so far and stop; shielded against a cancel.

        If the database could not take them (the run gave up on it), they are in the journal, kept
        for the next command, and `DatabaseUnavailableError` is raised.
        """
        if self._task is None:
            return
        self._queue.put_nowait(None)
        self._wakeup.set()
        try:
            await asyncio.shield(self._task)
        except DatabaseUnavailableError:
            await asyncio.to_thread(self._keep_in_journal, self._unjournaled())
            raise

    async def _run(self) -> None:
        journaling = asyncio.create_task(self._journal_while_in_trouble(), name="ledger-journal")
        try:
            while True:
                done = await self._gather()
                if len(self._pending):
                    self._applying, self._pending = self._pending, WriteBatch()
                    await self._write(self._applying)
                    self._applying = None
                self._release_barriers()
                if done:
                    return
        except asyncio.CancelledError:
            self._flush_now()
            raise
        except DatabaseUnavailableError:
            journaling.cancel()
            await asyncio.to_thread(self._keep_in_journal, self._unjournaled())
            raise
        finally:
            journaling.cancel()

    async def _write(self, batch: WriteBatch) -> None:
        """Commit one batch, waiting out database trouble; then forget it (and the journal, when all in)."""
        loop = asyncio.get_running_loop()
        self._writing_since = time.monotonic()
        try:
            await self.wait.run(
                lambda: loop.run_in_executor(self.executor, apply_batch, self.engine, batch),
                what=f"{len(batch)} results to write",
            )
        finally:
            self._writing_since = None
        self.written += len(batch.outcomes)
        self.batches += 1
        for _ in range(len(batch)):
            self._unwritten.popleft()
        self._committed += len(batch)
        if self.journal is not None and self.journal.active and self._committed >= self._journaled:
            await asyncio.to_thread(self.journal.discard)

    def _in_trouble(self) -> bool:
        slow = self._writing_since is not None and time.monotonic() - self._writing_since > JOURNAL_AFTER_S
        return self.wait.in_trouble or slow

    async def _journal_while_in_trouble(self) -> None:
        """While the database does not take results, append every new one to the journal (fsynced)."""
        journal = self.journal
        if journal is None:
            return
        while True:
            await asyncio.sleep(min(self.batch_s, 0.1))
            before = self._journaled
            if self._in_trouble() and (items := self._unjournaled()):
                try:
                    await asyncio.to_thread(journal.append, items)
                except OSError:  # a full or read-only disk: the results stay held, tried again next time
                    self._journaled = before
                    log.exception("could not append %d results to the outcome journal", len(items))

    def _unjournaled(self) -> list[Item]:
        """What is held and not journaled yet, counted as journaled from now (call it on the loop)."""
        start = max(self._journaled, self._committed)
        end = self._committed + len(self._unwritten)
        self._journaled = max(self._journaled, end)
        return list(itertools.islice(self._unwritten, start - self._committed, None))

    def _keep_in_journal(self, items: Sequence[Item]) -> None:
        """The database did not take what is held: it goes to the journal, kept for the next command."""
        if self.journal is not None:
            self.journal.append(items)
            self.journal.close()

    def _release_barriers(self) -> None:
        for barrier in self._barriers:
            if not barrier.done():
                barrier.set_result(None)
        self._barriers.clear()

    async def _gather(self) -> bool:
        """Fill `_pending` up to a batch; True when the closing marker was seen.

        After the first item it waits (once, not per item) until `batch_rows` are queued or
        `batch_ms` have passed. A flush barrier ends the batch at once (its caller waits for the commit).
        """
        if self._add(await self._queue.get()):
            return self._closing and self._drain_nowait()
        deadline = asyncio.get_running_loop().time() + self.batch_s
        while True:
            if self._drain_until_marker():
                return self._closing and self._drain_nowait()
            remaining = deadline - asyncio.get_running_loop().time()
            if len(self._pending) >= self.batch_rows or remaining <= 0:
                return False
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _drain_until_marker(self) -> bool:
        """Move queued items into the batch; True when a marker (barrier, close) ended it."""
        while not self._queue.empty() and len(self._pending) < self.batch_rows:
            if self._add(self._queue.get_nowait()):
                return True
        return False

    def _drain_nowait(self) -> bool:
        while not self._queue.empty():
            self._add(self._queue.get_nowait())
        return True

    def _add(self, item: Item | asyncio.Future[None] | None) -> bool:
        """Add an item to the pending batch; True for a marker that ends the batch (barrier, close)."""
        if item is None:
            self._closing = True
            return True
        if isinstance(item, asyncio.Future):
            self._barriers.append(item)
            return True
        self._pending.add(item)
        return False

    def _flush_now(self) -> None:
        """Forced stop: write what is buffered and queued, synchronously, before giving up."""
        self._drain_nowait()
        batch, self._pending = self._pending, WriteBatch()
        if self._applying is not None:  # its thread may not have committed: applying twice is harmless
            self._applying.extend(batch)
            batch = self._applying
        try:
            apply_batch(self.engine, batch)
        except Exception:
            log.exception("could not write %d results on a forced stop", len(batch.outcomes))
            self._keep_in_journal(self._unjournaled())
        else:
            self.written += len(batch.outcomes)
            self._unwritten.clear()
            if self.journal is not None:
                self.journal.discard()

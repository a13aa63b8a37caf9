"""Inbox rows applied to the ledger and the control tables, in batches, idempotently.

One batch = one write transaction: claim pending inbox rows, apply their events, mark them processed.
A crash anywhere before the commit leaves the rows pending and changes nothing; processing a row
twice changes nothing the second time, because every statement only moves things forward: statuses
(`scheduler.webhooks.status_updates`), inbound messages and preferences
(`scheduler.webhooks.inbound_messages`), template, sender and account events
(`scheduler.webhooks.account_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import UTCDateTime, utcnow
from campaigns.core.models import WEBHOOK_INBOX_TABLE as INBOX
from campaigns.core.settings import Settings
from scheduler.webhooks.account_events import AccountEventApplier
from scheduler.webhooks.events import (
    AccountEvent,
    Event,
    InboundEvent,
    MalformedWebhook,
    PreferenceEvent,
    SenderCapabilityEvent,
    StatusEvent,
    TemplateCategoryEvent,
    TemplateStatusEvent,
    parse_webhook,
)
from scheduler.webhooks.inbound_messages import InboundApplier
from scheduler.webhooks.status_updates import StatusApplier

log = logging.getLogger(__name__)


@dataclass
class ProcessResult:
    """What a call to `process_pending` did."""

    rows: int = 0
    events: int = 0
    errors: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, other: ProcessResult) -> None:
        """Fold another result into this one."""
        self.rows += other.rows
        self.events += other.events
        self.errors += other.errors
        for kind, count in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + count


@dataclass(frozen=True)
class _Row:
    id: int
    error: str | None
    events: list[Event]


def _parse_row(row: Any, *, received_at: datetime, tiers: dict[str, int]) -> _Row:
    if row.error:
        return _Row(row.id, row.error, [])
    try:
        payload = json.loads(row.body)
        return _Row(row.id, None, parse_webhook(payload, received_at=received_at, tiers=tiers))
    except json.JSONDecodeError as exc:
        return _Row(row.id, f"malformed JSON: {exc}"[:500], [])
    except MalformedWebhook as exc:
        return _Row(row.id, f"not a webhook: {exc}"[:500], [])
    except Exception as exc:  # a shape the parser did not expect: this row only, never the batch
        return _Row(row.id, f"unreadable webhook: {type(exc).__name__}: {exc}"[:500], [])


def _claim(conn: Connection, limit: int) -> list[Any]:
    query = (
        sa.select(INBOX.c.id, INBOX.c.body, INBOX.c.error, INBOX.c.received_at)
        .where(INBOX.c.processed_at.is_(None))
        .order_by(INBOX.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query))


def process_batch(
    engine: Engine, settings: Settings, *, clock: Callable[[], datetime] = utcnow, limit: int | None = None
) -> ProcessResult:
    """Process up to `settings.webhooks.process_batch` pending inbox rows in one write transaction.

    On SQLite the rows are read and parsed BEFORE the write lock is taken (WAL readers never block the
    receiver), so the lock is held only for the statements; two processors may then apply the same
    rows, which changes nothing (every statement is idempotent). On PostgreSQL rows are claimed with
    FOR UPDATE SKIP LOCKED inside the transaction, so concurrent processors share the work.
    """
    tiers = dict(settings.limits.tiers)
    limit = limit or settings.webhooks.process_batch
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            claimed = _claim(conn, limit)
        if not claimed:
            return ProcessResult()
        rows = [_parse_row(row, received_at=row.received_at, tiers=tiers) for row in claimed]
        try:
            with write_transaction(engine) as conn:
                _apply_rows(conn, settings, rows, now=clock())
        except REFUSED_VALUE:
            _apply_one_by_one(engine, settings, rows, now=clock())
        return _result(rows)
    rows = []
    try:
        with write_transaction(engine) as conn:
            claimed = _claim(conn, limit)
            rows = [_parse_row(row, received_at=row.received_at, tiers=tiers) for row in claimed]
            if rows:
                _apply_rows(conn, settings, rows, now=clock())
    except REFUSED_VALUE:
        _apply_one_by_one(engine, settings, rows, now=clock())
    return _result(rows)


#: The database refused a value of one row (too long, out of range, a constraint): that row is poisoned.
#: Anything else (locked, gone, schema missing) stops the batch and leaves every row pending.
REFUSED_VALUE = (sa.exc.DataError, sa.exc.IntegrityError)


def _apply_one_by_one(engine: Engine, settings: Settings, rows: list[_Row], *, now: datetime) -> None:
    """A batch the database refused: apply each row alone, and mark the one it refuses with the error.

    One poisoned body (a value no column can hold) must not stop every webhook behind it.
    """
    for index, row in enumerate(rows):
        try:
            with write_transaction(engine) as conn:
                _apply_rows(conn, settings, [row], now=now)
        except REFUSED_VALUE as exc:
            log.warning("webhook inbox row %s could not be applied: %s", row.id, exc.orig)
            refused = _Row(row.id, f"could not be applied: {exc.orig}"[:500], [])
            rows[index] = refused
            with write_transaction(engine) as conn:
                _apply_rows(conn, settings, [refused], now=now)


def _apply_rows(conn: Connection, settings: Settings, rows: list[_Row], *, now: datetime) -> None:
    _Applier(conn, settings=settings, now=now).apply([event for row in rows for event in row.events])
    conn.execute(
        sa.update(INBOX)
        .where(INBOX.c.id == sa.bindparam("b_id"), INBOX.c.processed_at.is_(None))
        .values(processed_at=sa.bindparam("b_now", type_=UTCDateTime()), error=sa.bindparam("b_error")),
        [{"b_id": row.id, "b_now": now, "b_error": row.error} for row in rows],
    )


def _result(rows: list[_Row]) -> ProcessResult:
    result = ProcessResult(rows=len(rows), errors=sum(1 for row in rows if row.error))
    for row in rows:
        result.events += len(row.events)
        for event in row.events:
            kind = type(event).__name__
            result.by_kind[kind] = result.by_kind.get(kind, 0) + 1
    return result


def pending_count(engine: Engine) -> int:
    """How many inbox rows wait to be processed."""
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(INBOX).where(INBOX.c.processed_at.is_(None))
        return int(conn.execute(query).scalar_one())


def process_pending(
    engine: Engine,
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    max_batches: int | None = None,
) -> ProcessResult:
    """Process pending inbox rows batch after batch until none is left (or `max_batches`)."""
    total = ProcessResult()
    batches = 0
    while max_batches is None or batches < max_batches:
        result = process_batch(engine, settings, clock=clock)
        batches += 1
        if result.rows == 0:
            break
        total.add(result)
    return total


async def run_processor(
    engine: Engine,
    settings: Settings,
    *,
    stop: asyncio.Event,
    idle_poll_s: float = 0.1,
    db_retry_s: float = 1.0,
    busy_share: float = 1.0,
    batch_rows: int | None = None,
) -> ProcessResult:
    """Process the inbox in the background (in a worker thread) until `stop` is set, then drain it.

    `busy_share` < 1 rests after each batch in proportion to the time it took, so a processor that
    shares its process (and its GIL) with the receiver leaves the event loop time to answer: the
    answers are what the platform measures, the backlog waits safely in the inbox.

    A database that is briefly unavailable (locked, restarting) is logged and retried after
    `db_retry_s`: nothing is lost, the rows stay pending. Any other error ends the task.
    """
    total = ProcessResult()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(process_batch, engine, settings, limit=batch_rows)
        except sa.exc.OperationalError as exc:
            log.warning("webhook processing: database unavailable, retrying: %s", exc.orig)
            result = ProcessResult()
            await _sleep_unless(stop, db_retry_s)
        total.add(result)
        if result.rows == 0:
            await _sleep_unless(stop, idle_poll_s)
        elif busy_share < 1.0:
            await _sleep_unless(stop, (time.perf_counter() - started) * (1.0 / busy_share - 1.0))
    total.add(await asyncio.to_thread(process_pending, engine, settings))
    return total


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class _Applier:
    """Applies a batch of events inside one transaction."""

    def __init__(self, conn: Connection, *, settings: Settings, now: datetime) -> None:
        self.statuses = StatusApplier(conn, settings, now)
        self.inbound = InboundApplier(conn, settings, now)
        self.account = AccountEventApplier(conn, settings, now)

    def apply(self, events: Sequence[Event]) -> None:
        self.statuses.apply_statuses([e for e in events if isinstance(e, StatusEvent)])
        self.inbound.apply_inbound([e for e in events if isinstance(e, InboundEvent)])
        preferences = sorted((e for e in events if isinstance(e, PreferenceEvent)), key=lambda e: e.at)
        self.inbound.apply_preferences(preferences)
        for event in events:
            if isinstance(event, TemplateStatusEvent):
                self.account.apply_template_status(event)
            elif isinstance(event, TemplateCategoryEvent):
                self.account.apply_category(event)
            elif isinstance(event, SenderCapabilityEvent):
                self.account.apply_sender(event)
            elif isinstance(event, AccountEvent) and event.restricts:
                self.account.pause_all(
                    f"account_update {event.event}" + (f": {event.detail}" if event.detail else "")
                )

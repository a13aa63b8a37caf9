"""Scale-out on PostgreSQL: sender leases, the portfolio lock and the fair share of senders.

Several `wacamp worker` processes (on any number of machines) share one database. Each sender is
sent by **one worker at a time**: the worker holds the sender's lease (`Sender.lease_owner`,
`Sender.lease_expires_at`, both written with the *database's* clock) and runs the sender's rate
limiter in-process, so the rate stays exactly what one process keeps (docs/architecture.md,
"Scale-out").

- **Acquire**: a worker takes a sender whose lease is free, expired, or already its own. It then waits
  until one send window (1 s) has passed since the previous holder's lease ended (`Grant.wait_s`):
  the previous holder may have sent right up to that moment.
- **Heartbeat**: the holder renews every ``lease_s / 3``. It fences itself: when it has not renewed
  for ``lease_s * 3 / 4`` (by its own monotonic clock, counted from *before* the last renewal) it
  stops the pass, so it never sends after the lease another worker could take over.
- **Release**: at the end of a pass the lease ends now (the owner is kept, so the same process takes
  it back without waiting).
- **Fair share**: a worker takes at most ``ceil(senders with work / live workers)`` senders; the live
  workers are the sessions holding the shared send lock (`scheduler.sending.locks.worker_lock`), so a
  killed worker stops counting as soon as its connection closes. A worker above its share (workers
  joined after it took its senders) hands the senders it took last over at their next renewal.

The tier budget of a portfolio is shared exactly: every budgeted claim takes
`lock_portfolio` (``pg_advisory_xact_lock``) first, so the check and the count of one portfolio are
serialized across workers (SQLite's claims are serialized by ``BEGIN IMMEDIATE`` already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import SENDER_TABLE as SENDER
from campaigns.core.models import CampaignState
from campaigns.core.settings import Settings
from campaigns.core.settings_sections import SenderSettings
from scheduler.sending.locks import SEND_LOCK, advisory_key

log = logging.getLogger(__name__)

s = SENDER.c

#: The platform's rate window: after a takeover the new holder waits this long past the old lease.
SEND_WINDOW_S = 1.0
#: First key of the two-key advisory locks of portfolios (a namespace of its own in pg_locks).
PORTFOLIO_LOCK_SPACE = 0x7761_6361  # "waca"
#: States of campaigns that still have work for a worker (the fair share counts their senders).
ACTIVE_STATES = (CampaignState.PLANNED.value, CampaignState.RUNNING.value, CampaignState.WAITING.value)


def db_now(conn: Connection) -> datetime:
    """The database's clock (PostgreSQL ``clock_timestamp()``); this process's UTC clock on SQLite."""
    if conn.dialect.name == "postgresql":
        value = conn.scalar(sa.select(sa.func.clock_timestamp()))
        assert isinstance(value, datetime)
        return value
    return utcnow()


def lock_portfolio(conn: Connection, portfolio: str) -> None:
    """Serialize the tier budget's check-and-count of `portfolio` until this transaction ends.

    PostgreSQL: ``pg_advisory_xact_lock(space, hashtext(portfolio))``; SQLite: nothing to do (a write
    transaction already holds the database's only write lock).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock(PORTFOLIO_LOCK_SPACE, sa.func.hashtext(portfolio)))
        )


@dataclass(frozen=True)
class Renewal:
    """A renewed sender lease: until when, and this worker's fair share at that moment."""

    expires_at: datetime
    share: int


@dataclass(frozen=True)
class Grant:
    """A sender lease this worker holds: until when (database clock) and how long to wait first."""

    sender: str
    owner: str
    expires_at: datetime
    wait_s: float
    previous_owner: str | None


def register_senders(conn: Connection, senders: Iterable[SenderSettings], *, now: datetime) -> None:
    """Insert the sender rows that do not exist yet (a lease needs its row)."""
    values = [
        {"name": x.name, "phone_number_id": x.phone_number_id, "portfolio": x.portfolio, "updated_at": now}
        for x in senders
    ]
    if values:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(insert(SENDER).values(values).on_conflict_do_nothing(index_elements=[s.name]))


def try_acquire(conn: Connection, *, sender: str, owner: str, lease_s: float) -> Grant | None:
    """Take `sender`'s lease for `owner` if it is free, expired or already `owner`'s; None if not.

    The row is locked (``FOR UPDATE``) so two workers cannot both take it; the wait after a takeover
    is measured from the previous lease's end on the database's clock.
    """
    row = conn.execute(
        sa.select(s.lease_owner, s.lease_expires_at).where(s.name == sender).with_for_update()
    ).one_or_none()
    if row is None:
        return None
    now = db_now(conn)
    previous, expires = row.lease_owner, row.lease_expires_at
    if previous not in (None, owner) and expires is not None and expires >= now:
        return None
    wait_s = 0.0
    if previous not in (None, owner) and expires is not None:
        wait_s = max(0.0, (expires - now).total_seconds() + SEND_WINDOW_S)
    until = now + timedelta(seconds=lease_s)
    conn.execute(
        sa.update(SENDER)
        .where(s.name == sender)
        .values(lease_owner=owner, lease_expires_at=until, updated_at=now)
    )
    return Grant(sender=sender, owner=owner, expires_at=until, wait_s=wait_s, previous_owner=previous)


def renew(conn: Connection, *, sender: str, owner: str, lease_s: float) -> datetime | None:
    """Extend `owner`'s lease of `sender`; None when another worker holds it now (lease lost)."""
    now = db_now(conn)
    until = now + timedelta(seconds=lease_s)
    updated = conn.execute(
        sa.update(SENDER)
        .where(s.name == sender, s.lease_owner == owner)
        .values(lease_expires_at=until, updated_at=now)
    ).rowcount
    return until if updated else None


def release(conn: Connection, *, sender: str, owner: str) -> None:
    """End `owner`'s lease of `sender` now (the owner stays recorded: the same process needs no wait)."""
    now = db_now(conn)
    conn.execute(
        sa.update(SENDER)
        .where(s.name == sender, s.lease_owner == owner)
        .values(lease_expires_at=now, updated_at=now)
    )


def live_workers(conn: Connection) -> int:
    """Workers alive now: sessions holding the shared send lock (PostgreSQL); 1 on SQLite."""
    if conn.dialect.name != "postgresql":
        return 1
    key = advisory_key(SEND_LOCK) & 0xFFFF_FFFF_FFFF_FFFF
    query = sa.text(
        "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND mode = 'ShareLock' AND objsubid = 1 AND classid::bigint = :hi AND objid::bigint = :lo"
    )
    return max(1, int(conn.scalar(query, {"hi": key >> 32, "lo": key & 0xFFFF_FFFF}) or 0))


def senders_with_work(conn: Connection) -> int:
    """Senders that have a campaign planned, running or waiting."""
    query = sa.select(sa.func.count(sa.distinct(CAMPAIGN.c.sender_name))).where(
        CAMPAIGN.c.state.in_(ACTIVE_STATES)
    )
    return int(conn.scalar(query) or 0)


def fair_share(*, senders: int, workers: int) -> int:
    """Senders one worker may hold: ``ceil(senders / workers)``, at least 1."""
    return max(1, math.ceil(senders / max(1, workers)))


class SenderLeases:
    """The sender leases of one worker process: the gate every pass of `runs.due.run_due` goes through.

    `hold(sender, stop_event)` takes the sender's lease (or declines: another worker holds it, or this
    worker holds its fair share), waits out the takeover window, heartbeats while the pass runs, and
    yields an event that is set when the worker stops *or* the lease can no longer be trusted.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        lease_s: float,
        senders: Iterable[SenderSettings] = (),
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.lease_s = lease_s
        self.held: set[str] = set()
        self.takeovers = 0
        self.handed_over = 0
        #: Held senders in the order they were taken: the last ones are handed over first.
        self._order: list[str] = []
        self._senders = list(senders)
        self._registered = False
        #: One acquisition at a time, so the fair share counts every lease this worker just took.
        self._acquiring = asyncio.Lock()

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings, *, owner: str) -> SenderLeases:
        """Leases of `lease_s` ([dispatch] lease_s) over the configured senders."""
        return cls(engine, owner=owner, lease_s=settings.dispatch.lease_s, senders=settings.all_senders())

    # ------------------------------------------------------------- database
    def _acquire(self, sender: str) -> Grant | None:
        with write_transaction(self.engine) as conn:
            if not self._registered:
                register_senders(conn, self._senders, now=utcnow())
                self._registered = True
            if len(self.held) >= fair_share(senders=senders_with_work(conn), workers=live_workers(conn)):
                return None
            return try_acquire(conn, sender=sender, owner=self.owner, lease_s=self.lease_s)

    def _renew(self, sender: str) -> Renewal | None:
        with write_transaction(self.engine) as conn:
            until = renew(conn, sender=sender, owner=self.owner, lease_s=self.lease_s)
            if until is None:
                return None
            return Renewal(until, fair_share(senders=senders_with_work(conn), workers=live_workers(conn)))

    def _release(self, sender: str) -> None:
        with write_transaction(self.engine) as conn:
            release(conn, sender=sender, owner=self.owner)

    # ---------------------------------------------------------------- gate
    @contextlib.asynccontextmanager
    async def hold(self, sender: str, stop_event: asyncio.Event) -> AsyncIterator[asyncio.Event | None]:
        """Hold `sender` for the block; yields the pass's stop event, or None when declined."""
        if sender in self.held:
            yield None
            return
        async with self._acquiring:
            grant = await asyncio.to_thread(self._acquire, sender)
            if grant is not None:
                self.held.add(sender)
                self._order.append(sender)
        if grant is None:
            yield None
            return
        renewed_mono = time.monotonic()
        pass_stop = asyncio.Event()
        heartbeat = asyncio.create_task(
            self._heartbeat(sender, pass_stop, stop_event, renewed_mono), name=f"lease-{sender}"
        )
        try:
            if grant.previous_owner not in (None, self.owner):
                self.takeovers += 1
                log.info(
                    "sender %s taken over from %s: first send in %.2f s",
                    sender,
                    grant.previous_owner,
                    grant.wait_s,
                    extra={"sender": sender, "previous_owner": grant.previous_owner, "wait_s": grant.wait_s},
                )
            if grant.wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pass_stop.wait(), grant.wait_s)
            yield pass_stop
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.held.discard(sender)
            self._order.remove(sender)
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                await asyncio.to_thread(self._release, sender)

    async def _heartbeat(
        self, sender: str, pass_stop: asyncio.Event, stop_event: asyncio.Event, renewed_mono: float
    ) -> None:
        """Renew every lease_s / 3; stop the pass on a worker stop, a lost lease, or a stale lease."""
        renew_every_s = self.lease_s / 3
        trust_s = self.lease_s * 3 / 4
        renewing: asyncio.Future[Renewal | None] | None = None
        started_mono = renewed_mono
        while not pass_stop.is_set():
            now_mono = time.monotonic()
            if stop_event.is_set():
                pass_stop.set()
            elif now_mono - renewed_mono > trust_s:
                log.error("sender %s: lease not renewed for %.1f s, stopping its pass", sender, trust_s)
                pass_stop.set()
            elif renewing is not None and renewing.done():
                renewed, stop_because = self._renewal_outcome(sender, renewing)
                if renewed:
                    renewed_mono = started_mono
                if stop_because:
                    log.warning("sender %s: %s, stopping its pass", sender, stop_because)
                    pass_stop.set()
                renewing = None
            elif renewing is None and now_mono - renewed_mono >= renew_every_s:
                started_mono = now_mono
                renewing = asyncio.ensure_future(asyncio.to_thread(self._renew, sender))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), 0.1)
        if renewing is not None:
            renewing.cancel()
            with contextlib.suppress(BaseException):
                await renewing

    def _renewal_outcome(self, sender: str, renewing: asyncio.Future[Renewal | None]) -> tuple[bool, str]:
        """(renewed, why the pass must stop or ""): lost to another worker, or above the fair share."""
        if renewing.exception() is not None:
            return False, ""  # tried again next round; the fence stops the pass if it goes on failing
        renewal = renewing.result()
        if renewal is None:
            return False, "lease taken by another worker"
        if sender in self._order[renewal.share :]:
            self.handed_over += 1
            held = len(self._order)
            return True, f"handed over (this worker holds {held} senders, its fair share is {renewal.share})"
        return True, ""

"""The reaper every worker runs: rows a dead worker left `sending` become `unknown`.

A worker that dies (SIGKILL, a lost machine) leaves the rows it had claimed in `sending` with a lease
that nobody renews. Once the lease has expired on the *database's* clock the reaper moves them to
`unknown`: the request may have reached the platform, so they are never resent automatically
(at-most-once). Its planned rows need nothing (any worker claims them), its sender leases expire by
themselves (`scheduler.sending.leases`), and its campaigns, left `running` without a live lease, are due again
(`scheduler.runs.due.find_due`) for the worker that takes the sender over.

Each statement touches at most ``batch_rows`` rows through the ``(state, lease_expires_at)`` index, so
no transaction is long whatever the size of the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.core.db import write_transaction
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import MessageState
from scheduler.sending.leases import db_now

log = logging.getLogger(__name__)

m = MESSAGE.c

SENDING = MessageState.SENDING.value
UNKNOWN = MessageState.UNKNOWN.value
REAPED_TITLE = "in flight when its worker stopped (lease expired)"


def expired_leases(*, now: datetime, limit: int) -> sa.Select[tuple[int]]:
    """Ids of at most `limit` rows still `sending` under a lease that expired before `now`."""
    return (
        sa.select(m.id)
        .where(m.state == SENDING, m.lease_expires_at < now)
        .order_by(m.lease_expires_at)
        .limit(limit)
    )


def reap_once(conn: Connection, *, limit: int = 5000) -> int:
    """Move up to `limit` rows with an expired lease from `sending` to `unknown`; how many moved."""
    now = db_now(conn)
    picked = expired_leases(now=now, limit=limit)
    ids: Any = picked.scalar_subquery()
    if conn.dialect.name == "postgresql":
        # Rows a live claim or outcome is writing right now are left for the next round.
        cte = picked.with_for_update(skip_locked=True).cte("expired").prefix_with("MATERIALIZED")
        ids = sa.select(cte.c.id)
    statement = (
        sa.update(MESSAGE)
        .where(m.id.in_(ids), m.state == SENDING, m.lease_expires_at < now)
        .values(
            state=UNKNOWN,
            error_title=REAPED_TITLE,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    return int(conn.execute(statement).rowcount or 0)


def reap(engine: Engine, *, batch_rows: int = 5000) -> int:
    """Reap every expired lease, one short transaction per batch; how many rows became unknown."""
    total = 0
    while True:
        with write_transaction(engine) as conn:
            moved = reap_once(conn, limit=batch_rows)
        total += moved
        if moved < batch_rows:
            return total


class Reaper:
    """Runs `reap` every `every_s` until stopped (one per worker; several reapers never conflict)."""

    def __init__(self, engine: Engine, *, every_s: float, batch_rows: int = 5000) -> None:
        self.engine = engine
        self.every_s = every_s
        self.batch_rows = batch_rows
        self.reaped = 0

    @classmethod
    def for_lease(cls, engine: Engine, *, lease_s: float) -> Reaper:
        """A reaper that looks twice per lease length (a dead worker's rows wait at most 1.5 leases)."""
        return cls(engine, every_s=max(0.5, lease_s / 2))

    async def run(self, stop: asyncio.Event) -> None:
        """Reap until `stop` is set; a database error is logged and retried next round."""
        while not stop.is_set():
            try:
                moved = await asyncio.to_thread(reap, self.engine, batch_rows=self.batch_rows)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("reaper: %s (retrying in %.1f s)", exc, self.every_s)
                moved = 0
            if moved:
                self.reaped += moved
                log.warning(
                    "reaper: %d rows of a stopped worker were in flight: now unknown (never resent)",
                    moved,
                    extra={"reaped": moved},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)

"""The reaper every worker runs: rows a dead worker held go back to the queue or become `unknown`.

A worker that dies (SIGKILL, a lost machine) or fences itself leaves the rows it held with a lease
nobody renews. Once the lease has expired on the *database's* clock the reaper takes them back
(`scheduler.sending.ledger.recover_expired`): `claimed` rows never left, so they go back to `planned`
(attempt and tier count given back) and any worker sends them; `sending` rows may have reached the
platform, so they become `unknown` and are never resent automatically (at-most-once). Its sender
leases expire by themselves (`scheduler.sending.leases`), and its campaigns, left `running` without a
live lease, are due again (`scheduler.runs.due_campaigns.find_due`) for the worker that takes the sender over.

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
from scheduler.sending import ledger
from scheduler.sending.leases import db_now

log = logging.getLogger(__name__)

REAPED_TITLE = "in flight when its worker stopped (lease expired)"


def expired_leases(*, now: datetime, limit: int) -> sa.Select[Any]:
    """Ids of at most `limit` rows held (`claimed`, `sending`) under a lease that expired before `now`."""
    return ledger.expired_rows(now=now, limit=limit)


def reap_once(conn: Connection, *, limit: int = 5000) -> ledger.Recovered:
    """Take back up to `limit` rows whose lease expired: claimed to `planned`, sending to `unknown`."""
    return ledger.recover_expired(conn, now=db_now(conn), limit=limit, title=REAPED_TITLE)


def reap(engine: Engine, *, batch_rows: int = 5000) -> int:
    """Reap every expired lease, one short transaction per batch; how many rows became unknown."""
    total = ledger.Recovered()
    while True:
        with write_transaction(engine) as conn:
            moved = reap_once(conn, limit=batch_rows)
        total += moved
        if moved.returned + moved.unknown < batch_rows:
            if total.returned:
                log.info("reaper: %d claimed rows of a stopped worker went back to the queue", total.returned)
            return total.unknown


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

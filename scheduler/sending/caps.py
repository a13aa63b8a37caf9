"""The frequency cap where rows are claimed: recipients at the cap are held back (or skipped), never claimed.

What a cap is and what counts for it: `campaigns.caps`. Here, inside the claim's write transaction
and under the portfolio's lock (`scheduler.sending.leases.lock_portfolio`: claims of one portfolio
from several workers take turns on PostgreSQL; SQLite has one writer anyway):

1. `hold_capped` looks at the next due rows a claim would take; those whose contact is at the cap
   get ``next_attempt_at`` = when the oldest counted send leaves the window (policy ``wait``: the run
   then waits for them like for any deferred row, and `run-due` resumes the campaign then), or become
   ``skipped: capped`` (policy ``skip``);
2. the claim itself carries `claimable` (not at the cap), so a row the first step did not look at
   is never claimed at the cap either: the count and the claim are one atomic step.

Each step costs one index lookup per row of the claim batch (the contact's ledger rows through
``uq_message_contact_dedup``), whatever the size of the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.caps import CAPPED, WAIT_TITLE, CapRule, at_cap, oldest_counted
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import MessageState
from scheduler.sending import ledger

m = MESSAGE.c


@dataclass(frozen=True)
class Held:
    """What `hold_capped` did to the rows it looked at."""

    waiting: int = 0
    skipped: int = 0


def claimable(rule: CapRule | None, now: datetime) -> sa.ColumnElement[bool] | None:
    """The condition a claim adds: the row's contact is below the cap (None without a cap)."""
    return None if rule is None else ~at_cap(rule, now)


def hold_capped(conn: Connection, rule: CapRule, *, campaign_id: int, now: datetime, limit: int) -> Held:
    """Hold back (or skip) the recipients at the cap among the next `limit` due rows of the campaign."""
    due = ledger.due_ids(campaign_id=campaign_id, now=now, limit=limit, extra=None).subquery()
    query = sa.select(m.id, oldest_counted(rule, now).label("oldest")).where(
        m.id.in_(sa.select(due.c.id)), at_cap(rule, now)
    )
    capped = conn.execute(query).all()
    if not capped:
        return Held()
    if rule.policy == "skip":
        return Held(skipped=_skip(conn, [row.id for row in capped], now))
    return Held(waiting=_wait(conn, rule, [(row.id, row.oldest) for row in capped], now))


_SKIP = (
    sa.update(MESSAGE)
    .where(m.id.in_(sa.bindparam("b_ids", expanding=True)), m.state == MessageState.PLANNED.value)
    .values(state=MessageState.SKIPPED.value, skip_reason=CAPPED, dedup_hash=None)
)


def _skip(conn: Connection, ids: list[int], now: datetime) -> int:
    return int(conn.execute(_SKIP.values(updated_at=now), {"b_ids": ids}).rowcount or 0)


_WAIT = (
    sa.update(MESSAGE)
    .where(m.id == sa.bindparam("b_id"), m.state == MessageState.PLANNED.value)
    .values(next_attempt_at=sa.bindparam("b_until"), error_title=sa.bindparam("b_title"))
)


def _wait(conn: Connection, rule: CapRule, rows: list[tuple[int, datetime | None]], now: datetime) -> int:
    """Rows wait until their contact's oldest counted send leaves the window (then are checked again)."""
    params = []
    for row_id, oldest in rows:
        until = (oldest or now) + rule.cap.window
        title = f"{WAIT_TITLE} {rule.cap.text}: waits until {until:%Y-%m-%d %H:%M} UTC"
        params.append({"b_id": row_id, "b_until": until, "b_title": title})
    conn.execute(_WAIT.values(updated_at=now), params)
    return len(params)

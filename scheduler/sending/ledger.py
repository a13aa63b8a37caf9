"""Every ledger statement the dispatcher makes, in SQLAlchemy Core, for SQLite and PostgreSQL.

The ledger (`campaigns.core.models.Message`) is the queue. A claim leases rows ``planned → claimed``
(owner, expiry on the database's clock; nothing about the wire); ``claimed → sending`` is marked in a
small group commit just before their requests are written (`mark_sending`); then an outcome is
applied in batches by the writer (`scheduler.sending.ledger_outcomes`). A lease that expired means
its holder is dead: its `claimed` rows go back to `planned` (they never left), its `sending` rows
become `unknown` (`recover_expired`). The functions here take a `Connection` already inside a
transaction (the caller decides its size) unless they say otherwise; none of them ever waits on the
network.

Invariant kept by every statement: ``dedup_hash`` is NULL exactly when the row is `failed` or
`skipped`, and equals ``content_hash`` otherwise.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns import control
from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import TIER_USAGE_TABLE as TIER_USAGE
from campaigns.core.models import MessageState
from campaigns.rollout.stages import released

m = MESSAGE.c

PLANNED = MessageState.PLANNED.value
CLAIMED = MessageState.CLAIMED.value
SENDING = MessageState.SENDING.value
#: The states of a row a run holds under its lease: claimed (not sent) and sending (maybe on the wire).
HELD = (CLAIMED, SENDING)


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A ledger row claimed for sending: what the send needs and nothing more."""

    id: int
    contact_id: int
    phone: str
    body: str
    attempts: int


def new_owner() -> str:
    """A lease owner id: host, pid and a random part (``host:pid:hex``), for people to read.

    Nothing ever decides from the pid whether its owner lives: only an expired lease says so.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def due_ids(
    *, campaign_id: int, now: datetime, limit: int, extra: sa.ColumnElement[bool] | None
) -> sa.Select[Any]:
    """The ids of the first `limit` due planned rows, contacts that must not get them now left out."""
    blocked_contact = (
        sa.select(CONTACT.c.id)
        .where(CONTACT.c.id == m.contact_id)
        .where(
            sa.or_(
                CONTACT.c.suppressed_at.is_not(None),
                CONTACT.c.marketing_deferred_until > now,
            )
        )
    )
    query = (
        sa.select(m.id)
        .where(m.campaign_id == campaign_id, m.state == PLANNED)
        .where(sa.or_(m.next_attempt_at.is_(None), m.next_attempt_at <= now))
        .where(released(campaign_id))
        .where(~blocked_contact.exists())
        .order_by(m.id)
        .limit(limit)
    )
    if extra is not None:
        query = query.where(extra)
    return query


def claim(
    conn: Connection,
    *,
    campaign_id: int,
    owner: str,
    limit: int,
    now: datetime,
    lease_s: float,
    lease_from: datetime | None = None,
    only: sa.ColumnElement[bool] | None = None,
    sending: bool = False,
) -> list[ClaimedRow]:
    """Lease up to `limit` due planned rows to `owner` for `lease_s`, in id order.

    The lease runs from `lease_from` (the database's clock: `scheduler.sending.leases.db_now`), or
    from `now` when not given.

    One ``UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING``; on PostgreSQL the sub-select takes
    ``FOR UPDATE SKIP LOCKED`` so concurrent workers never wait on, nor share, a row. A claimed row
    says nothing about the wire: `mark_sending` does, just before the request. `only` narrows the
    candidates (the tier budget uses it). With `sending` the rows are marked `sending` in the same
    statement (`scheduler.sending.claims`: when the whole claim fits in one mark group).
    """
    if limit <= 0:
        return []
    ids = due_ids(campaign_id=campaign_id, now=now, limit=limit, extra=only)
    picked: Any = ids.scalar_subquery()
    if conn.dialect.name == "postgresql":
        # Materialized once: an IN (sub-select … SKIP LOCKED) may be re-run by the planner and then
        # pick (and lock) more than `limit` rows.
        cte = ids.with_for_update(skip_locked=True, of=MESSAGE).cte("picked").prefix_with("MATERIALIZED")
        picked = sa.select(cte.c.id)
    statement = (
        sa.update(MESSAGE)
        .where(m.id.in_(picked))
        # `state || ''`, not `state`: SQLite would answer a plain `state = 'planned'` from the
        # (state, lease_expires_at) index and walk every planned row of the ledger per claim (O(n):
        # 174 ms per 200 rows at 1M); a term it cannot index leaves it the picked ids' rowids (issue #17).
        .where(m.state.concat("") == PLANNED)
        .values(
            state=SENDING if sending else CLAIMED,
            lease_owner=owner,
            lease_expires_at=(lease_from or now) + timedelta(seconds=lease_s),
            claimed_at=now,
            sending_at=now if sending else None,
            attempts=m.attempts + 1,
            updated_at=now,
        )
        .returning(m.id, m.contact_id, m.phone, m.body, m.attempts)
    )
    rows = [
        ClaimedRow(id=r.id, contact_id=r.contact_id, phone=r.phone, body=r.body or "", attempts=r.attempts)
        for r in conn.execute(statement)
    ]
    rows.sort(key=lambda row: row.id)
    return rows


def mark_sending(conn: Connection, *, owner: str, message_ids: Collection[int], now: datetime) -> set[int]:
    """Mark `owner`'s claimed rows `sending` (their requests leave next); the ids it could mark.

    A row missing from the answer is no longer `owner`'s (its lease expired and it went back to the
    queue): it must not be sent. The caller commits before any of the requests is written.
    """
    if not message_ids:
        return set()
    statement = (
        sa.update(MESSAGE)
        .where(m.id.in_(list(message_ids)), m.state == CLAIMED, m.lease_owner == owner)
        .values(state=SENDING, sending_at=now, updated_at=now)
        .returning(m.id)
    )
    return set(conn.scalars(statement))


def release(conn: Connection, *, owner: str, message_ids: Sequence[int], now: datetime) -> int:
    """Give held rows that were never sent back to the queue (a clean stop). Returns how many."""
    if not message_ids:
        return 0
    statement = (
        sa.update(MESSAGE)
        .where(m.id.in_(list(message_ids)), m.state.in_(HELD), m.lease_owner == owner)
        .values(
            state=PLANNED,
            lease_owner=None,
            lease_expires_at=None,
            sending_at=None,
            attempts=m.attempts - 1,
            updated_at=now,
        )
    )
    return conn.execute(statement).rowcount


def renew_leases(conn: Connection, *, owner: str, until: datetime) -> int:
    """Extend the leases of every row `owner` holds (a live run keeps its claims).

    On PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED``: a row the writer is moving out of
    `sending` at that moment needs no renewal, and waiting for it (while holding the others) could
    deadlock with the writer's batch, which locks the same rows in another order.
    """
    held = sa.select(m.id).where(m.state.in_(HELD), m.lease_owner == owner)
    picked: Any = held.scalar_subquery()
    if conn.dialect.name == "postgresql":
        cte = held.with_for_update(skip_locked=True).cte("held").prefix_with("MATERIALIZED")
        picked = sa.select(cte.c.id)
    statement = (
        sa.update(MESSAGE)
        .where(m.id.in_(picked), m.state.in_(HELD), m.lease_owner == owner)
        .values(lease_expires_at=until)
    )
    return conn.execute(statement).rowcount


def expired_rows(
    *, now: datetime, limit: int, campaign_id: int | None = None, dead_owners: Iterable[str] = ()
) -> sa.Select[Any]:
    """Ids of at most `limit` held rows whose holder is dead: lease expired, no owner, or a dead owner."""
    dead = [owner for owner in dead_owners if owner]
    lost = sa.or_(m.lease_expires_at < now, m.lease_owner.is_(None), m.lease_owner.in_(dead))
    query = sa.select(m.id).where(m.state.in_(HELD)).where(lost).order_by(m.lease_expires_at).limit(limit)
    return query if campaign_id is None else query.where(m.campaign_id == campaign_id)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What `recover_expired` did: claimed rows given back to the queue, sending rows now `unknown`."""

    returned: int = 0
    unknown: int = 0

    def __add__(self, other: Recovered) -> Recovered:
        return Recovered(self.returned + other.returned, self.unknown + other.unknown)


def recover_expired(
    conn: Connection,
    *,
    now: datetime,
    limit: int = 5000,
    campaign_id: int | None = None,
    dead_owners: Iterable[str] = (),
    title: str = "in flight when a previous run stopped",
) -> Recovered:
    """Rows of a dead holder: `claimed` back to `planned` (attempt and tier count given back), `sending`
    to `unknown` (its request may have left: never resent automatically). At most `limit` rows; on
    PostgreSQL, rows another transaction is writing are left for the next round (SKIP LOCKED).
    """
    picked = expired_rows(now=now, limit=limit, campaign_id=campaign_id, dead_owners=dead_owners)
    if conn.dialect.name == "postgresql":
        picked = picked.with_for_update(skip_locked=True, of=MESSAGE)
    rows = conn.execute(picked.with_only_columns(m.id, m.state, m.phone, m.claimed_at)).all()
    claimed = [r for r in rows if r.state == CLAIMED]
    sending = [r.id for r in rows if r.state == SENDING]
    _give_back_tier_counts(conn, [(r.phone, r.claimed_at) for r in claimed if r.claimed_at is not None])
    returned = _update_count(conn, [r.id for r in claimed], CLAIMED, _RETURNED.values(updated_at=now))
    unknown = _update_count(conn, sending, SENDING, _LOST.values(error_title=title, updated_at=now))
    return Recovered(returned=returned, unknown=unknown)


_RETURNED = sa.update(MESSAGE).values(
    state=PLANNED, attempts=m.attempts - 1, lease_owner=None, lease_expires_at=None, claimed_at=None
)
_LOST = sa.update(MESSAGE).values(state=MessageState.UNKNOWN.value, lease_owner=None, lease_expires_at=None)


def _update_count(conn: Connection, ids: list[int], state: str, statement: sa.Update) -> int:
    if not ids:
        return 0
    return int(conn.execute(statement.where(m.id.in_(ids), m.state == state)).rowcount or 0)


_UNCOUNT_CLAIM = sa.delete(TIER_USAGE).where(
    TIER_USAGE.c.phone == sa.bindparam("b_phone"), TIER_USAGE.c.counted_at == sa.bindparam("b_at")
)


def _give_back_tier_counts(conn: Connection, claims: Sequence[tuple[str, datetime]]) -> None:
    """Tier counts made by claims whose rows go back unsent (each count carries its claim's time)."""
    if claims:
        conn.execute(_UNCOUNT_CLAIM, [{"b_phone": phone, "b_at": at} for phone, at in claims])


def skip_suppressed(conn: Connection, *, campaign_id: int, now: datetime) -> int:
    """Planned rows of contacts who opted out after planning become `skipped: suppressed`."""
    suppressed = sa.select(CONTACT.c.id).where(CONTACT.c.suppressed_at.is_not(None))
    statement = (
        sa.update(MESSAGE)
        .where(m.campaign_id == campaign_id, m.state == PLANNED, m.contact_id.in_(suppressed))
        .values(state=MessageState.SKIPPED.value, skip_reason="suppressed", dedup_hash=None, updated_at=now)
    )
    return conn.execute(statement).rowcount


def defer_marketing_limited(conn: Connection, *, campaign_id: int, now: datetime) -> int:
    """Planned rows of contacts under a 131049 deferral wait until it ends (next_attempt_at)."""
    until = (
        sa.select(CONTACT.c.marketing_deferred_until).where(CONTACT.c.id == m.contact_id).scalar_subquery()
    )
    deferred = sa.select(CONTACT.c.id).where(CONTACT.c.marketing_deferred_until > now)
    statement = (
        sa.update(MESSAGE)
        .where(m.campaign_id == campaign_id, m.state == PLANNED, m.contact_id.in_(deferred))
        .values(next_attempt_at=until, updated_at=now)
    )
    return conn.execute(statement).rowcount


@dataclass(frozen=True)
class QueueState:
    """What is left of a campaign's queue: rows due now, rows due later and when the first is."""

    due: int
    later: int
    next_due_at: datetime | None
    #: Rows held under a lease (claimed or sending), by this run or another.
    sending: int


def queue_state(conn: Connection, *, campaign_id: int, now: datetime) -> QueueState:
    """Counts of planned rows due now and later (deferred contacts count as later)."""
    deferred_until = (
        sa.select(CONTACT.c.marketing_deferred_until).where(CONTACT.c.id == m.contact_id).scalar_subquery()
    )
    when = sa.func.coalesce(m.next_attempt_at, now)
    is_due = sa.and_(when <= now, sa.func.coalesce(deferred_until, now) <= now)
    query = sa.select(
        sa.func.count().filter(is_due),
        sa.func.count().filter(~is_due),
        sa.type_coerce(
            sa.func.min(sa.case((~is_due, sa.func.coalesce(deferred_until, when)), else_=None)),
            UTCDateTime(),
        ),
    ).where(m.campaign_id == campaign_id, m.state == PLANNED, released(campaign_id))
    due, later, first = conn.execute(query).one()
    sending = conn.scalar(sa.select(sa.func.count()).where(m.campaign_id == campaign_id, m.state.in_(HELD)))
    return QueueState(due=int(due), later=int(later), next_due_at=first, sending=int(sending or 0))


def counts_by_state(conn: Connection, *, campaign_id: int) -> dict[str, int]:
    """How many rows of a campaign are in each state (counted by `campaigns.control.ledger_counts`)."""
    return control.ledger_counts(conn, campaign_id).by_state


def resend_unknown(conn: Connection, *, campaign_id: int, older_than: datetime, now: datetime) -> int:
    """Move `unknown` rows claimed before `older_than` back to `planned` (only on explicit request).

    The row keeps blocking the same content for the contact (dedup_hash = content_hash), so the
    only send it can lead to is its own.
    """
    statement = (
        sa.update(MESSAGE)
        .where(m.campaign_id == campaign_id, m.state == MessageState.UNKNOWN.value, m.wamid.is_(None))
        .where(sa.or_(m.sending_at.is_(None), m.sending_at <= older_than))
        .values(
            state=PLANNED,
            dedup_hash=m.content_hash,
            next_attempt_at=None,
            error_code=None,
            error_title=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    return conn.execute(statement).rowcount


def count_unknown(conn: Connection, *, campaign_id: int, older_than: datetime) -> tuple[int, int]:
    """(unknown rows old enough to resend, all unknown rows) of a campaign."""
    base = sa.select(sa.func.count()).where(
        m.campaign_id == campaign_id, m.state == MessageState.UNKNOWN.value, m.wamid.is_(None)
    )
    old = base.where(sa.or_(m.sending_at.is_(None), m.sending_at <= older_than))
    return int(conn.scalar(old) or 0), int(conn.scalar(base) or 0)

"""Every ledger statement the dispatcher makes, in SQLAlchemy Core, for SQLite and PostgreSQL.

The ledger (`campaigns.core.models.Message`) is the queue. A row moves ``planned → sending`` in a short
write transaction committed *before* its request is written (the claim), then to an outcome applied
in batches by the writer. The functions here take a `Connection` already inside a transaction (the
caller decides its size) unless they say otherwise; none of them ever waits on the network.

Invariant kept by every statement: ``dedup_hash`` is NULL exactly when the row is `failed` or
`skipped`, and equals ``content_hash`` otherwise.
"""

from __future__ import annotations

import enum
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns import control
from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import MessageState
from campaigns.rollout.stages import released

m = MESSAGE.c

PLANNED = MessageState.PLANNED.value
SENDING = MessageState.SENDING.value


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A ledger row claimed for sending: what the send needs and nothing more."""

    id: int
    contact_id: int
    phone: str
    body: str
    attempts: int


class OutcomeKind(enum.StrEnum):
    """What happened to one claimed row."""

    ACCEPTED = "accepted"
    REQUEUE = "requeue"
    FAILED = "failed"
    UNKNOWN = "unknown"
    RELEASE = "release"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one claimed row, as the writer applies it.

    `refund_attempt` gives back the attempt counted at claim time (throttling, pair rate, a row
    never sent): only real transient failures count towards the bounded attempts.
    """

    kind: OutcomeKind
    message_id: int
    at: datetime
    wamid: str | None = None
    message_status: str | None = None
    next_attempt_at: datetime | None = None
    error_code: int | None = None
    error_title: str | None = None
    refund_attempt: bool = False


def new_owner() -> str:
    """A lease owner id for this process: host, pid and a random part (``host:pid:hex``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_alive(owner: str) -> bool:
    """Whether the process behind a lease owner id still runs (only knowable on this host).

    An owner from another host is assumed alive: only its lease expiry can release its rows.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_elsewhere_on_this_host(owner: str) -> int | None:
    """The pid of `owner` when it is another process on this host that still runs, else None."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return None
    return int(pid_text) if owner_is_alive(owner) else None


def _due_ids(
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
    only: sa.ColumnElement[bool] | None = None,
) -> list[ClaimedRow]:
    """Mark up to `limit` due planned rows `sending` for `owner` and return them in id order.

    One ``UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING``; on PostgreSQL the sub-select takes
    ``FOR UPDATE SKIP LOCKED`` so concurrent workers never wait on, nor share, a row. The caller
    commits before any request is written. `only` narrows the candidates (the tier budget uses it).
    """
    if limit <= 0:
        return []
    ids = _due_ids(campaign_id=campaign_id, now=now, limit=limit, extra=only)
    picked: Any = ids.scalar_subquery()
    if conn.dialect.name == "postgresql":
        # Materialized once: an IN (sub-select … SKIP LOCKED) may be re-run by the planner and then
        # pick (and lock) more than `limit` rows.
        cte = ids.with_for_update(skip_locked=True, of=MESSAGE).cte("picked").prefix_with("MATERIALIZED")
        picked = sa.select(cte.c.id)
    statement = (
        sa.update(MESSAGE)
        .where(m.id.in_(picked))
        .where(m.state == PLANNED)
        .values(
            state=SENDING,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            sending_at=now,
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


def release(conn: Connection, *, owner: str, message_ids: Sequence[int], now: datetime) -> int:
    """Give claimed rows that were never sent back to the queue (a clean stop). Returns how many."""
    if not message_ids:
        return 0
    statement = (
        sa.update(MESSAGE)
        .where(m.id.in_(list(message_ids)), m.state == SENDING, m.lease_owner == owner)
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
    held = sa.select(m.id).where(m.state == SENDING, m.lease_owner == owner)
    picked: Any = held.scalar_subquery()
    if conn.dialect.name == "postgresql":
        cte = held.with_for_update(skip_locked=True).cte("held").prefix_with("MATERIALIZED")
        picked = sa.select(cte.c.id)
    statement = (
        sa.update(MESSAGE)
        .where(m.id.in_(picked), m.state == SENDING, m.lease_owner == owner)
        .values(lease_expires_at=until)
    )
    return conn.execute(statement).rowcount


def stale_owners(conn: Connection, *, campaign_id: int) -> list[str]:
    """The lease owners that still hold `sending` rows of a campaign."""
    query = (
        sa.select(m.lease_owner)
        .where(m.campaign_id == campaign_id, m.state == SENDING)
        .group_by(m.lease_owner)
    )
    return [owner or "" for owner in conn.scalars(query)]


def recover_in_flight(
    conn: Connection, *, campaign_id: int, now: datetime, dead_owners: Iterable[str]
) -> int:
    """Rows left `sending` by a crashed run become `unknown` (never resent automatically).

    A row is recovered when its lease expired or its owner is known to be dead. Returns how many.
    """
    dead = [owner for owner in dead_owners if owner]
    lost = sa.or_(m.lease_expires_at < now, m.lease_owner.is_(None), m.lease_owner.in_(dead))
    statement = (
        sa.update(MESSAGE)
        .where(m.campaign_id == campaign_id, m.state == SENDING)
        .where(lost)
        .values(
            state=MessageState.UNKNOWN.value,
            error_title="in flight when a previous run stopped",
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    return conn.execute(statement).rowcount


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


_ACCEPT = (
    sa.update(MESSAGE)
    .where(m.id == sa.bindparam("b_id"))
    .values(
        # A status webhook may have moved the row on already: never move it back.
        state=sa.case(
            (sa.or_(m.state == SENDING, m.state == MessageState.UNKNOWN.value), MessageState.ACCEPTED.value),
            else_=m.state,
        ),
        wamid=sa.func.coalesce(m.wamid, sa.bindparam("b_wamid")),
        message_status=sa.bindparam("b_status"),
        accepted_at=sa.func.coalesce(m.accepted_at, sa.bindparam("b_at")),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=sa.bindparam("b_at"),
    )
)

_REQUEUE = (
    sa.update(MESSAGE)
    .where(m.id == sa.bindparam("b_id"), m.state == SENDING)
    .values(
        state=PLANNED,
        next_attempt_at=sa.bindparam("b_next"),
        error_code=sa.bindparam("b_code"),
        error_title=sa.bindparam("b_title"),
        attempts=m.attempts - sa.bindparam("b_refund"),
        lease_owner=None,
        lease_expires_at=None,
        sending_at=None,
        updated_at=sa.bindparam("b_at"),
    )
)

_FAIL = (
    sa.update(MESSAGE)
    .where(m.id == sa.bindparam("b_id"), m.state == SENDING)
    .values(
        state=MessageState.FAILED.value,
        dedup_hash=None,
        error_code=sa.bindparam("b_code"),
        error_title=sa.bindparam("b_title"),
        failed_at=sa.bindparam("b_at"),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=sa.bindparam("b_at"),
    )
)

_UNKNOWN = (
    sa.update(MESSAGE)
    .where(m.id == sa.bindparam("b_id"), m.state == SENDING)
    .values(
        state=MessageState.UNKNOWN.value,
        error_code=sa.bindparam("b_code"),
        error_title=sa.bindparam("b_title"),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=sa.bindparam("b_at"),
    )
)

_RELEASE = (
    sa.update(MESSAGE)
    .where(m.id == sa.bindparam("b_id"), m.state == SENDING)
    .values(
        state=PLANNED,
        attempts=m.attempts - 1,
        lease_owner=None,
        lease_expires_at=None,
        sending_at=None,
        updated_at=sa.bindparam("b_at"),
    )
)


def _params(outcome: Outcome) -> dict[str, Any]:
    return {
        "b_id": outcome.message_id,
        "b_at": outcome.at,
        "b_wamid": outcome.wamid,
        "b_status": outcome.message_status,
        "b_next": outcome.next_attempt_at,
        "b_code": outcome.error_code,
        "b_title": (outcome.error_title or "")[:500] or None,
        "b_refund": 1 if outcome.refund_attempt else 0,
    }


_STATEMENTS = {
    OutcomeKind.ACCEPTED: _ACCEPT,
    OutcomeKind.REQUEUE: _REQUEUE,
    OutcomeKind.FAILED: _FAIL,
    OutcomeKind.UNKNOWN: _UNKNOWN,
    OutcomeKind.RELEASE: _RELEASE,
}

_KEYS = {
    OutcomeKind.ACCEPTED: ("b_id", "b_at", "b_wamid", "b_status"),
    OutcomeKind.REQUEUE: ("b_id", "b_at", "b_next", "b_code", "b_title", "b_refund"),
    OutcomeKind.FAILED: ("b_id", "b_at", "b_code", "b_title"),
    OutcomeKind.UNKNOWN: ("b_id", "b_at", "b_code", "b_title"),
    OutcomeKind.RELEASE: ("b_id", "b_at"),
}


def apply_outcomes(conn: Connection, outcomes: Sequence[Outcome]) -> None:
    """Apply a batch of outcomes: one executemany UPDATE per kind (never a statement per row)."""
    by_kind: dict[OutcomeKind, list[dict[str, Any]]] = {}
    for outcome in outcomes:
        params = _params(outcome)
        keys = _KEYS[outcome.kind]
        by_kind.setdefault(outcome.kind, []).append({key: params[key] for key in keys})
    for kind, rows in by_kind.items():
        conn.execute(_STATEMENTS[kind], rows)


@dataclass(frozen=True)
class QueueState:
    """What is left of a campaign's queue: rows due now, rows due later and when the first is."""

    due: int
    later: int
    next_due_at: datetime | None
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
    sending = conn.scalar(sa.select(sa.func.count()).where(m.campaign_id == campaign_id, m.state == SENDING))
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

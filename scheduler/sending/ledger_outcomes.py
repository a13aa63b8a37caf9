"""A send's outcome written to its ledger row: accepted, requeued, failed, unknown or released.

The writer applies them in batches (`apply_outcomes`: one executemany UPDATE per kind, never a
statement per row), inside the transaction it opens. Every statement keeps the ledger's invariant
(``dedup_hash`` is NULL exactly when the row is `failed` or `skipped`) and never moves back a row a
status webhook moved on already.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import MessageState
from scheduler.sending.ledger import CLAIMED, PLANNED, SENDING

m = MESSAGE.c


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
    #: The API that took the message ("cloud", "marketing", "onprem"); None keeps the planned one.
    via: str | None = None
    next_attempt_at: datetime | None = None
    error_code: int | None = None
    error_title: str | None = None
    refund_attempt: bool = False


#: The `message_status` of a send the platform holds for a new or recently non-GREEN template (pacing).
HELD_STATUS = "held_for_quality_assessment"

#: `state IN (claimed, sending)` without an expanding parameter (the outcome statements run as executemany).
_LEASED = sa.or_(m.state == CLAIMED, m.state == SENDING)


def _settle(*where: sa.ColumnElement[bool], **values: Any) -> sa.Update:
    """One row's outcome (executemany on `b_id`): `values`, its lease given up, `updated_at` = `b_at`."""
    lease_given_up: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": sa.bindparam("b_at"),
    }
    return sa.update(MESSAGE).where(m.id == sa.bindparam("b_id"), *where).values(**values, **lease_given_up)


_ACCEPT = _settle(
    # A status webhook may have moved the row on already: never move it back.
    # An answer saying held_for_quality_assessment (template pacing) makes the row `held`.
    state=sa.case(
        (
            sa.or_(m.state == SENDING, m.state == MessageState.UNKNOWN.value),
            sa.case(
                (sa.bindparam("b_status") == HELD_STATUS, MessageState.HELD.value),
                else_=MessageState.ACCEPTED.value,
            ),
        ),
        else_=m.state,
    ),
    wamid=sa.func.coalesce(m.wamid, sa.bindparam("b_wamid")),
    via=sa.func.coalesce(sa.bindparam("b_via"), m.via),
    message_status=sa.bindparam("b_status"),
    accepted_at=sa.func.coalesce(m.accepted_at, sa.bindparam("b_at")),
)

_REQUEUE = _settle(
    _LEASED,
    state=PLANNED,
    next_attempt_at=sa.bindparam("b_next"),
    error_code=sa.bindparam("b_code"),
    error_title=sa.bindparam("b_title"),
    attempts=m.attempts - sa.bindparam("b_refund"),
    sending_at=None,
)

_FAIL = _settle(
    m.state == SENDING,
    state=MessageState.FAILED.value,
    dedup_hash=None,
    error_code=sa.bindparam("b_code"),
    error_title=sa.bindparam("b_title"),
    failed_at=sa.bindparam("b_at"),
)

_UNKNOWN = _settle(
    m.state == SENDING,
    state=MessageState.UNKNOWN.value,
    error_code=sa.bindparam("b_code"),
    error_title=sa.bindparam("b_title"),
)

_RELEASE = _settle(
    _LEASED,
    state=PLANNED,
    attempts=m.attempts - 1,
    sending_at=None,
)


def _params(outcome: Outcome) -> dict[str, Any]:
    return {
        "b_id": outcome.message_id,
        "b_at": outcome.at,
        "b_wamid": outcome.wamid,
        "b_status": outcome.message_status,
        "b_via": outcome.via,
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
    OutcomeKind.ACCEPTED: ("b_id", "b_at", "b_wamid", "b_status", "b_via"),
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

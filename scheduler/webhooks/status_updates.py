"""Status webhooks applied to the ledger: forward-only moves up the funnel, failures and their effects.

A status moves a ledger row up the funnel (sending/unknown/accepted → held → sent → delivered → read)
and never down; `read` implies `delivered`; timestamps are filled when missing (an event's own time
wins over one implied by a later event); `failed` is terminal and only reached from a live row, so a
duplicate `failed` finds nothing to change and its side effects (131049 deferral, 131050 suppression)
run once (`campaigns.outcomes.for_failed_status` decides which).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns import outcomes
from campaigns.contacts import effects
from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.models import MESSAGE_TABLE as M
from campaigns.core.models import (
    MessageState,
)
from campaigns.core.settings import Settings
from scheduler.webhooks.by_recipient import tie_by_recipient
from scheduler.webhooks.events import (
    StatusEvent,
)

S = MessageState
#: Rows a status webhook may touch: everything the platform has (or may have) accepted.
_LIVE = (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD, S.SENT, S.DELIVERED, S.READ)
#: The states each status may move a row from (forward only). `held` (template pacing) comes after
#: accepted and before sent: a held message is released (sent, delivered, read) or fails (132015).
_FORWARD_FROM: dict[str, tuple[S, ...]] = {
    S.HELD: (S.SENDING, S.UNKNOWN, S.ACCEPTED),
    S.SENT: (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD),
    S.DELIVERED: (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD, S.SENT),
    S.READ: (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD, S.SENT, S.DELIVERED),
}
#: The timestamp a status sets, and the earlier ones it implies (held: the platform had accepted it).
_OWN_TIME = {S.HELD: "accepted_at", S.SENT: "sent_at", S.DELIVERED: "delivered_at", S.READ: "read_at"}
_IMPLIED_TIMES: dict[str, tuple[str, ...]] = {
    S.HELD: (),
    S.SENT: (),
    S.DELIVERED: ("sent_at",),
    S.READ: ("sent_at", "delivered_at"),
}
_FAILABLE = (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD, S.SENT, S.DELIVERED)
#: How a status webhook names template pacing (the send answer's `message_status` says the same).
HELD_STATUSES = frozenset({"held_for_quality_assessment", "held"})


@dataclass(frozen=True)
class StatusApplier:
    """Applies a batch's status events inside its transaction."""

    conn: Connection
    settings: Settings
    now: datetime

    def apply_statuses(self, events: list[StatusEvent]) -> None:
        events = tie_by_recipient(
            self.conn, [replace(e, status=S.HELD.value) if e.status in HELD_STATUSES else e for e in events]
        )
        for status in (S.HELD, S.SENT, S.DELIVERED, S.READ):
            matching = [e for e in events if e.status == status and (e.message_id or e.wamid)]
            by_id = [self._status_params(e) for e in matching if e.message_id is not None]
            by_wamid = [self._status_params(e) for e in matching if e.message_id is None]
            if by_id:
                self.conn.execute(_progress_statement(status, by_id=True), by_id)
            if by_wamid:
                self.conn.execute(_progress_statement(status, by_id=False), by_wamid)
        for event in events:
            if event.status == S.FAILED and (event.message_id or event.wamid):
                self._failed(event)

    def _status_params(self, event: StatusEvent) -> dict[str, Any]:
        return {
            "b_id": event.message_id,
            "b_wamid": event.wamid,
            "b_at": event.at,
            "b_now": self.now,
            "b_category": event.pricing_category,
            "b_type": event.pricing_type,
            "b_billable": event.billable,
        }

    def _failed(self, event: StatusEvent) -> None:
        stmt = (
            sa.update(M)
            .where(_row_match(by_id=event.message_id is not None), M.c.state.in_(_FAILABLE))
            .values(
                state=S.FAILED,
                dedup_hash=None,
                error_code=event.error_code,
                error_title=event.error_title,
                failed_at=sa.bindparam("b_at", type_=UTCDateTime()),
                lease_owner=None,
                lease_expires_at=None,
                wamid=sa.func.coalesce(M.c.wamid, sa.bindparam("b_wamid", type_=sa.String())),
                updated_at=sa.bindparam("b_now", type_=UTCDateTime()),
            )
            .returning(M.c.contact_id)
        )
        params = {"b_id": event.message_id, "b_wamid": event.wamid, "b_at": event.at, "b_now": self.now}
        contact_ids = [row.contact_id for row in self.conn.execute(stmt, params)]
        if not contact_ids:
            return  # a duplicate, or a row that is not ours: no side effects
        action = outcomes.for_failed_status(event.error_code, limits=self.settings.limits)
        if isinstance(action, outcomes.DeferRecipient):
            self._defer_marketing(contact_ids, action.until(self.now))
        elif isinstance(action, outcomes.SuppressContact):
            reason = effects.platform_opt_out_reason(event.error_code, event.error_title)
            self._suppress(contact_ids, at=event.at, reason=reason)

    def _defer_marketing(self, contact_ids: list[int], until: datetime) -> None:
        effects.defer_marketing(self.conn, contact_ids, until=until, now=self.now)

    def _suppress(self, contact_ids: list[int], *, at: datetime, reason: str) -> None:
        effects.suppress_contacts(self.conn, contact_ids, reason=reason, at=at, now=self.now)


def _state_in(states: Iterable[S]) -> sa.ColumnElement[bool]:
    """`state IN ('a', 'b')` with inline constants (expanding parameters cannot be used in executemany)."""
    clause: sa.ColumnElement[bool] = M.c.state.in_([sa.literal_column(f"'{s.value}'") for s in states])
    return clause


def _row_match(*, by_id: bool) -> sa.ColumnElement[bool]:
    """The ledger row of a status: by "wacamp:<id>" (and a wamid that agrees), else by wamid."""
    wamid = sa.bindparam("b_wamid", type_=sa.String())
    if by_id:
        return sa.and_(M.c.id == sa.bindparam("b_id"), sa.or_(M.c.wamid.is_(None), M.c.wamid == wamid))
    match: sa.ColumnElement[bool] = M.c.wamid == wamid
    return match


def _progress_statement(status: S, *, by_id: bool) -> sa.Update:
    """UPDATE for a sent/delivered/read status: forward-only state, timestamps filled, pricing kept."""
    at = sa.bindparam("b_at", type_=UTCDateTime())
    own = M.c[_OWN_TIME[status]]
    values: dict[str, Any] = {
        "state": sa.case((_state_in(_FORWARD_FROM[status]), status.value), else_=M.c.state),
        _OWN_TIME[status]: sa.case((sa.or_(own.is_(None), own > at), at), else_=own),
        "wamid": sa.func.coalesce(M.c.wamid, sa.bindparam("b_wamid", type_=sa.String())),
        "pricing_category": sa.func.coalesce(
            sa.bindparam("b_category", type_=sa.String()), M.c.pricing_category
        ),
        "billable": sa.func.coalesce(sa.bindparam("b_billable", type_=sa.Boolean()), M.c.billable),
        "pricing_type": sa.func.coalesce(sa.bindparam("b_type", type_=sa.String()), M.c.pricing_type),
        "updated_at": sa.bindparam("b_now", type_=UTCDateTime()),
    }
    for column in _IMPLIED_TIMES[status]:
        values[column] = sa.func.coalesce(M.c[column], at)
    return sa.update(M).where(_row_match(by_id=by_id), _state_in(_LIVE)).values(values)

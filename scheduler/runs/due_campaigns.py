"""Which campaigns are due, the one due the longest first, and how many still have work.

A campaign is due when

- it is ``draft`` or ``planned`` with a ``scheduled_at`` that has passed (a draft is planned first, so
  the list is read when the campaign is due; a campaign without a schedule is run by a person with
  ``campaigns run``, never by ``run-due``);
- it is ``waiting`` (tier budget, send window, a run cut short) and its ``resume_after`` has passed
  or is unset;
- it is ``running`` but nobody runs it: no row of it is in flight under a live lease (a run that was
  killed; the dispatcher turns its stale in-flight rows into ``unknown`` when it starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import CampaignState
from scheduler.sending import ledger

c = CAMPAIGN.c
m = MESSAGE.c


@dataclass(frozen=True)
class DueCampaign:
    """A campaign `run-due` will give a pass to, and since when it is due (the ordering key)."""

    id: int
    name: str
    state: str
    due_since: datetime
    sender: str = "default"


def _live_lease(now: datetime) -> sa.ColumnElement[bool]:
    in_flight = sa.select(m.id).where(
        m.campaign_id == c.id, m.state.in_(ledger.HELD), m.lease_expires_at > now
    )
    return in_flight.exists()


def _scheduled_and_due(now: datetime) -> sa.ColumnElement[bool]:
    not_started = c.state.in_([CampaignState.DRAFT, CampaignState.PLANNED])
    return sa.and_(not_started, c.scheduled_at.is_not(None), c.scheduled_at <= now)


def _due_filter(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        _scheduled_and_due(now),
        sa.and_(c.state == CampaignState.WAITING, sa.or_(c.resume_after.is_(None), c.resume_after <= now)),
        sa.and_(c.state == CampaignState.RUNNING, ~_live_lease(now)),
    )


def find_due(conn: Connection, *, now: datetime) -> list[DueCampaign]:
    """Every due campaign, the one due the longest first (ties by id)."""
    due_since = sa.type_coerce(sa.func.coalesce(c.scheduled_at, c.created_at), UTCDateTime())
    columns = (c.id, c.name, c.state, due_since.label("due_since"), c.sender_name)
    rows = conn.execute(sa.select(*columns).where(_due_filter(now)).order_by(due_since, c.id)).all()
    return [
        DueCampaign(id=r.id, name=r.name, state=r.state, due_since=r.due_since, sender=r.sender_name)
        for r in rows
    ]


def count_unfinished(conn: Connection, *, now: datetime) -> int:
    """Campaigns with work a later run must do: waiting, running, or planned and already due."""
    query = sa.select(sa.func.count()).where(
        sa.or_(
            c.state.in_([CampaignState.WAITING, CampaignState.RUNNING]),
            _scheduled_and_due(now),
        )
    )
    return int(conn.scalar(query) or 0)

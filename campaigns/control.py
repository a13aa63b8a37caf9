"""Campaign control from any shell: find a campaign, pause, resume.

A running dispatcher polls the campaign's state (`dispatch.control_poll_s`), so a pause written here
by another process stops it within a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import NotFoundError, UserError
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CampaignState

c = CAMPAIGN.c


@dataclass(frozen=True)
class CampaignRef:
    """What the engine needs to know about a campaign to run or steer it."""

    id: int
    name: str
    state: str
    sender_name: str
    pause_reason: str | None
    resume_after: datetime | None


def _ref(row: Any) -> CampaignRef:
    return CampaignRef(
        id=row.id,
        name=row.name,
        state=row.state,
        sender_name=row.sender_name,
        pause_reason=row.pause_reason,
        resume_after=row.resume_after,
    )


def find_campaign(conn: Connection, name_or_id: str) -> CampaignRef:
    """A campaign by name, or by id when given digits that are not a campaign's name."""
    columns = [c.id, c.name, c.state, c.sender_name, c.pause_reason, c.resume_after]
    row = conn.execute(sa.select(*columns).where(c.name == name_or_id)).first()
    if row is None and name_or_id.isdigit():
        row = conn.execute(sa.select(*columns).where(c.id == int(name_or_id))).first()
    if row is None:
        raise NotFoundError(f"no campaign named {name_or_id!r} (see `wacamp campaigns list`)")
    return _ref(row)


def reload(conn: Connection, campaign_id: int) -> CampaignRef:
    """The campaign's current state, as another process may have changed it."""
    return _by_id(conn, campaign_id)


def _by_id(conn: Connection, campaign_id: int) -> CampaignRef:
    columns = [c.id, c.name, c.state, c.sender_name, c.pause_reason, c.resume_after]
    return _ref(conn.execute(sa.select(*columns).where(c.id == campaign_id)).one())


def set_state(
    conn: Connection,
    campaign_id: int,
    *,
    state: CampaignState,
    now: datetime,
    pause_reason: str | None = None,
    resume_after: datetime | None = None,
    **extra: Any,
) -> None:
    """Move a campaign to `state` (pause_reason and resume_after are set, or cleared, with it)."""
    values = {
        "state": state.value,
        "pause_reason": pause_reason,
        "resume_after": resume_after,
        "updated_at": now,
    }
    conn.execute(sa.update(CAMPAIGN).where(c.id == campaign_id).values(**values, **extra))


_PAUSABLE = {CampaignState.PLANNED, CampaignState.RUNNING, CampaignState.WAITING, CampaignState.DRAFT}


def pause(engine: Engine, name_or_id: str, *, reason: str = "paused by a person") -> CampaignRef:
    """Pause a campaign; a run in progress stops claiming within a second and exits 75."""
    with write_transaction(engine) as conn:
        ref = find_campaign(conn, name_or_id)
        if ref.state == CampaignState.PAUSED:
            return ref
        if ref.state not in _PAUSABLE:
            raise UserError(
                f"campaign {ref.name!r} is {ref.state}: only a planned, running or waiting one pauses"
            )
        set_state(conn, ref.id, state=CampaignState.PAUSED, now=utcnow(), pause_reason=reason)
        return _by_id(conn, ref.id)


def resume(engine: Engine, name_or_id: str) -> CampaignRef:
    """Make a paused or waiting campaign runnable again (`campaigns run` continues where it stopped)."""
    with write_transaction(engine) as conn:
        ref = find_campaign(conn, name_or_id)
        if ref.state not in (CampaignState.PAUSED, CampaignState.WAITING):
            raise UserError(f"campaign {ref.name!r} is {ref.state}, not paused or waiting: nothing to resume")
        set_state(conn, ref.id, state=CampaignState.PLANNED, now=utcnow())
        return _by_id(conn, ref.id)

"""The schedule rules around one pass of `run-due` over a campaign (`scheduler.runs.due`).

Before a pass (`prepare_pass`): deadline expiry, the campaign window, planning a draft that came due,
a staged rollout's review, recipients' own windows; the pass gets a deadline that is the earliest of
the run's own (``--until``), the campaign window's closing, the campaign's deadline and the next change
of a recipient-local window, so the dispatcher never sends outside a window. After a pass
(`after_pass`): a campaign stopped by its window waits until the window opens again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.db import write_transaction
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, CampaignState
from campaigns.rollout.review import Reviewer, Step
from campaigns.schedule import (
    SendWindow,
    apply_recipient_windows,
    campaign_gate,
    expire_past_deadline,
    zone,
)
from scheduler.sending import ledger

log = logging.getLogger(__name__)

m = MESSAGE.c

#: Writes a draft campaign's ledger (`campaigns.planning.planner.plan_campaign`) when it comes due.
Planner = Callable[[int], object]

#: The states a due campaign is in; run-due leaves alone one that a person paused or cancelled meanwhile.
DUE_STATES = frozenset(
    {CampaignState.DRAFT, CampaignState.PLANNED, CampaignState.WAITING, CampaignState.RUNNING}
)
_WAITING = frozenset({CampaignState.WAITING})


def load_campaign(engine: Engine, campaign_id: int) -> Campaign:
    """The campaign row as a (detached) model."""
    return control.find_campaign(engine, campaign_id)


def _change_state(
    engine: Engine,
    campaign_id: int,
    target: CampaignState,
    *,
    now: datetime,
    only_from: frozenset[CampaignState] = DUE_STATES,
    **values: Any,
) -> None:
    with write_transaction(engine) as conn:
        control.change_state(conn, campaign_id, target, now=now, only_from=only_from, **values)


def _finish_expired(engine: Engine, campaign: Campaign, *, now: datetime) -> None:
    """The deadline passed: planned rows are skipped; the campaign is over once nothing is in flight."""
    assert campaign.id is not None
    expired = expire_past_deadline(engine, campaign.id, now=now)
    with engine.connect() as conn:
        in_flight = conn.scalar(
            sa.select(sa.func.count()).where(m.campaign_id == campaign.id, m.state.in_(ledger.HELD))
        )
    if not in_flight:
        _change_state(engine, campaign.id, CampaignState.COMPLETED, now=now, finished_at=now)
    log.info("campaign deadline passed", extra={"campaign": campaign.name, "expired": expired})


@dataclass(frozen=True)
class PassPlan:
    """Whether to run a pass now and until when (None = no deadline)."""

    run: bool
    deadline: datetime | None = None
    outcome: str = ""


def prepare_pass(
    engine: Engine,
    campaign_id: int,
    *,
    now: datetime,
    until: datetime | None,
    planner: Planner | None = None,
    reviewer: Reviewer | None = None,
) -> PassPlan:
    """Apply deadline, campaign window and recipient windows; say whether and until when to send.

    A draft campaign is planned (its ledger written) here, when it comes due (even if its window is
    closed then: it waits planned, and the list it got is the one of its due time).
    """
    campaign = load_campaign(engine, campaign_id)
    gate = campaign_gate(campaign, now=now)
    if not gate.open_now and gate.until is None:
        _finish_expired(engine, campaign, now=now)
        return PassPlan(run=False, outcome="expired")
    if campaign.state == CampaignState.DRAFT:
        if planner is None:
            raise RuntimeError(f"campaign {campaign.name!r} is a draft and no planner was given")
        planner(campaign_id)
        campaign = load_campaign(engine, campaign_id)
    if not gate.open_now:
        _change_state(engine, campaign_id, CampaignState.WAITING, now=now, resume_after=gate.until)
        log.info("send window closed", extra={"campaign": campaign.name, "opens_at": gate.until})
        return PassPlan(run=False, outcome="window closed")
    if reviewer is not None:  # a staged rollout: a stage under review waits, is released, or pauses
        review = reviewer.before_pass(engine, campaign_id, now=now)
        if review.step is not Step.SEND:
            return PassPlan(run=False, outcome=review.outcome)
        if review.outcome:
            log.info(review.outcome, extra={"campaign": campaign.name})
        if review.replan and planner is not None:  # an A/B test decided: the rest, with the winner
            planner(campaign_id)
    recheck_at = apply_recipient_windows(engine, campaign, now=now)
    return PassPlan(run=True, deadline=_earliest(until, gate.until, recheck_at, campaign.deadline))


def after_pass(engine: Engine, campaign_id: int, *, now: datetime) -> None:
    """A pass stopped because its campaign window closed: wait until the window opens again."""
    campaign = load_campaign(engine, campaign_id)
    window = SendWindow.of(campaign.window_start, campaign.window_end)
    if campaign.state != CampaignState.WAITING or window is None or campaign.recipient_local_time:
        return
    tz = zone(campaign.timezone or "UTC")
    opening = window.next_open(now, tz)
    if opening > now and (campaign.resume_after is None or campaign.resume_after < opening):
        _change_state(
            engine, campaign_id, CampaignState.WAITING, now=now, resume_after=opening, only_from=_WAITING
        )


def _earliest(*instants: datetime | None) -> datetime | None:
    present = [at for at in instants if at is not None]
    return min(present) if present else None

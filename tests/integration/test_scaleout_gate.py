"""run_due with a pass gate: a campaign whose sender another worker holds is skipped, not sent."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.settings_sections import SenderSettings
from scheduler.runs.due import SENDER_BUSY, PassOutcome, run_due
from scheduler.sending.leases import SenderLeases
from tests.scheduling_seed import seed_campaign

SHOP = SenderSettings(name="shop", phone_number_id="100000000000001")


class CompletingRunner:
    """A dispatcher stand-in that records each pass and completes the campaign (no sending here)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.passes: list[int] = []

    async def __call__(
        self, campaign_id: int, *, stop_event: asyncio.Event, deadline: datetime | None
    ) -> PassOutcome:
        self.passes.append(campaign_id)
        with self.engine.begin() as conn:
            conn.execute(sa.update(CAMPAIGN).where(CAMPAIGN.c.id == campaign_id).values(state="completed"))
        return PassOutcome("completed", sender="shop")


async def test_a_campaign_is_skipped_while_another_worker_holds_its_sender_and_run_once_it_lets_go(
    engine: Engine,
) -> None:
    cid = seed_campaign(
        engine,
        name="c",
        phones=["+393471000001"],
        sender_name="shop",
        scheduled_at=utcnow() - timedelta(minutes=1),
    )
    other = SenderLeases(engine, owner="other", lease_s=30, senders=[SHOP])
    mine = SenderLeases(engine, owner="me", lease_s=30, senders=[SHOP])
    runner = CompletingRunner(engine)
    stop = asyncio.Event()
    async with other.hold("shop", stop) as held:
        assert held is not None
        summary = await run_due(engine, runner=runner, stop_event=stop, gate=mine)
    assert [(p.campaign_id, p.outcome) for p in summary.passes] == [(cid, SENDER_BUSY)]
    assert runner.passes == [] and summary.exit_code() == 75
    summary = await run_due(engine, runner=runner, stop_event=stop, gate=mine)
    assert [(p.campaign_id, p.outcome) for p in summary.passes] == [(cid, "completed")]
    assert runner.passes == [cid] and mine.takeovers == 1 and not mine.held

"""Clock trouble: a campaign whose runs span midnight and the spring DST change (injected clock).

Europe/Rome, night of 28→29 March 2026: at 02:00 CET the clocks jump to 03:00 CEST. The campaign's
send window is 22:00-06:00 Rome time and its tier allows 250 recipients per moving 24 hours. The
window follows the local clock (it closes at 06:00 CEST = 04:00 UTC, not 05:00 UTC), while the 24 h
budget follows real elapsed time: 22:30 CEST on the 29th is 24 local hours after 22:00 CET on the 28th
but only 23.5 real hours, so nothing more may go then.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.settings import Settings
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from scheduler.providers.factory import make_provider
from scheduler.runs.dispatch_runner import DispatcherRunner
from scheduler.runs.due import DueSummary, run_due
from tests.reliability.record import record
from tests.scheduling_support import MESSAGE, make_campaign, phones, sandbox_settings, states


async def one_run(engine: Engine, settings: Settings, at: datetime) -> DueSummary:
    runner = DispatcherRunner(
        engine=engine,
        settings=settings,
        provider_for=lambda sender: make_provider(settings, sender),
        now=lambda: at,
    )
    try:
        return await run_due(engine, runner=runner, stop_event=asyncio.Event(), clock=lambda: at)
    finally:
        await runner.close()


def utc(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def claimed_at(engine: Engine, campaign_id: int) -> list[datetime]:
    with engine.connect() as conn:
        query = sa.select(MESSAGE.c.sending_at).where(
            MESSAGE.c.campaign_id == campaign_id, MESSAGE.c.sending_at.is_not(None)
        )
        return sorted(conn.scalars(query))


async def test_runs_across_midnight_and_the_dst_change_keep_the_local_window_and_the_real_24_hour_budget(
    engine: Engine,
) -> None:
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        settings = sandbox_settings(
            sandbox.base_url, WACAMP_RATE_PER_S="500", WACAMP_MESSAGING_TIER="TIER_250"
        )
        cid = make_campaign(
            engine,
            settings,
            name="dst",
            recipients=phones(600),
            scheduled_at=utc(2026, 3, 28, 20, 0),
            timezone="Europe/Rome",
            window_start="22:00",
            window_end="06:00",
        )
        sent = []
        moments = [
            ("21:30 CET, window closed", utc(2026, 3, 28, 20, 30)),
            ("22:00:01 CET, window open: the tier's 250", utc(2026, 3, 28, 21, 0, 1)),
            ("00:30 CET, after midnight: budget spent", utc(2026, 3, 28, 23, 30)),
            ("03:30 CEST, after the jump: budget spent", utc(2026, 3, 29, 1, 30)),
            ("06:30 CEST, window closed again", utc(2026, 3, 29, 4, 30)),
            ("22:30 CEST, 24 local hours but 23.5 real ones", utc(2026, 3, 29, 20, 30)),
            ("23:00:02 CEST, 24 real hours later", utc(2026, 3, 29, 21, 0, 2)),
        ]
        for _label, at in moments:
            before = states(engine, cid).get("accepted", 0)
            await one_run(engine, settings, at)
            sent.append(states(engine, cid).get("accepted", 0) - before)
            record("clock_moments")
        assert sent == [0, 250, 0, 0, 0, 0, 250], list(zip([m[0] for m in moments], sent, strict=True))
        claims = claimed_at(engine, cid)
        for i, at in enumerate(claims):  # every moving 24 h window ending at a claim holds at most 250
            assert sum(1 for other in claims[: i + 1] if other > at - timedelta(hours=24)) <= 250
        for at in claims:  # every claim inside 22:00-06:00 Rome time
            local = at.astimezone(ZoneInfo("Europe/Rome"))
            assert local.hour >= 22 or local.hour < 6, local
        stats = sandbox.stats()
        assert stats.duplicates == 0 and set(stats.accepted_per_recipient.values()) == {1}
    record("clock_scenarios")

"""run-due with the real dispatcher against the sandbox: schedules, the tier budget over days, --until."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.settings import Settings
from sandbox.config import SandboxConfig
from sandbox.server import RunningSandbox, running_sandbox
from scheduler.providers.factory import make_provider
from scheduler.runs.dispatch_runner import DispatcherRunner
from scheduler.runs.due import DueSummary, run_due
from tests.scheduling_support import (
    CAMPAIGN,
    MESSAGE,
    campaign_state,
    make_campaign,
    phones,
    sandbox_settings,
    states,
)

HOUR = timedelta(hours=1)


def runner_for(engine: Engine, settings: Settings, **kw: object) -> DispatcherRunner:
    return DispatcherRunner(
        engine=engine,
        settings=settings,
        provider_for=lambda sender: make_provider(settings, sender),
        **kw,  # type: ignore[arg-type]
    )


async def one_run(engine: Engine, settings: Settings, **kw: object) -> DueSummary:
    clock = kw.pop("clock", utcnow)
    runner = runner_for(engine, settings, now=clock)
    try:
        return await run_due(engine, runner=runner, stop_event=asyncio.Event(), clock=clock, **kw)  # type: ignore[arg-type]
    finally:
        await runner.close()


def sandbox_config(**kw: object) -> SandboxConfig:
    return SandboxConfig(mps=0, pair_spacing_s=0, **kw)  # type: ignore[arg-type]


def assert_each_once(sandbox: RunningSandbox, expected: list[str]) -> None:
    stats = sandbox.stats()
    seen = {phone.lstrip("+"): n for phone, n in stats.accepted_per_recipient.items()}
    assert stats.duplicates == 0
    assert sorted(seen) == sorted(p.lstrip("+") for p in expected)
    assert set(seen.values()) == {1}


async def test_a_campaign_scheduled_in_the_past_is_sent_and_one_in_the_future_is_not(engine: Engine) -> None:
    async with running_sandbox(sandbox_config()) as sandbox:
        settings = sandbox_settings(sandbox.base_url)
        now = utcnow()
        past = make_campaign(engine, settings, name="past", recipients=phones(20), scheduled_at=now - HOUR)
        future = make_campaign(
            engine, settings, name="future", recipients=phones(20, start=100), scheduled_at=now + HOUR
        )
        summary = await one_run(engine, settings)
        assert (summary.exit_code(), [p.name for p in summary.passes]) == (0, ["past"])
        assert states(engine, past) == {"accepted": 20}
        assert states(engine, future) == {"planned": 20}
        assert campaign_state(engine, future) == "planned"
        assert_each_once(sandbox, phones(20))


async def test_a_scheduled_draft_is_planned_when_it_comes_due_and_sent(engine: Engine) -> None:
    from campaigns.planning.planner import plan_campaign

    async with running_sandbox(sandbox_config()) as sandbox:
        settings = sandbox_settings(sandbox.base_url)
        draft = make_campaign(
            engine, settings, name="draft", recipients=phones(10), scheduled_at=utcnow() - HOUR, plan=False
        )
        assert states(engine, draft) == {}
        runner = runner_for(engine, settings)
        try:
            summary = await run_due(
                engine,
                runner=runner,
                stop_event=asyncio.Event(),
                planner=lambda cid: plan_campaign(engine, settings=settings, campaign=cid),
            )
        finally:
            await runner.close()
        assert summary.exit_code() == 0
        assert states(engine, draft) == {"accepted": 10}


async def test_600_recipients_on_tier_250_finish_over_three_daily_runs_never_over_250_per_moving_day(
    engine: Engine,
) -> None:
    async with running_sandbox(sandbox_config()) as sandbox:
        settings = sandbox_settings(
            sandbox.base_url, WACAMP_RATE_PER_S="500", WACAMP_MESSAGING_TIER="TIER_250"
        )
        start = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
        virtual = [start]
        recipients = phones(600)
        cid = make_campaign(engine, settings, name="big", recipients=recipients, scheduled_at=start - HOUR)
        accepted_per_run, codes = [], []
        for _day in range(5):
            summary = await one_run(engine, settings, clock=lambda: virtual[0])
            accepted_per_run.append(summary.totals()["accepted"])
            codes.append(summary.exit_code())
            if campaign_state(engine, cid) == "completed":
                break
            virtual[0] += timedelta(hours=24, seconds=1)
        assert accepted_per_run == [250, 250, 100]
        assert codes == [75, 75, 0]
        assert states(engine, cid) == {"accepted": 600}
        assert_each_once(sandbox, recipients)
        with engine.connect() as conn:
            claimed = sorted(
                conn.scalars(sa.select(MESSAGE.c.sending_at).where(MESSAGE.c.campaign_id == cid))
            )
        for i, at in enumerate(claimed):  # every moving 24 h window ending at a claim holds ≤ 250
            assert sum(1 for other in claimed[: i + 1] if other > at - timedelta(hours=24)) <= 250


async def test_a_run_stopped_by_its_deadline_is_completed_by_the_next_without_duplicate_or_loss(
    engine: Engine,
) -> None:
    async with running_sandbox(sandbox_config()) as sandbox:
        settings = sandbox_settings(sandbox.base_url, WACAMP_RATE_PER_S="100")
        recipients = phones(300)
        cid = make_campaign(
            engine, settings, name="night", recipients=recipients, scheduled_at=utcnow() - HOUR
        )
        first = await one_run(engine, settings, until=utcnow() + timedelta(seconds=1))
        assert first.exit_code() == 75
        assert first.passes[0].outcome == "deadline"
        partial = states(engine, cid)
        assert 0 < partial.get("accepted", 0) < 300
        assert set(partial) <= {"accepted", "planned"}
        assert campaign_state(engine, cid) == "waiting"
        second = await one_run(engine, settings)
        assert second.exit_code() == 0
        assert states(engine, cid) == {"accepted": 300}
        assert first.totals()["accepted"] + second.totals()["accepted"] == 300
        assert_each_once(sandbox, recipients)


async def test_recipients_are_sent_only_inside_their_own_window_and_the_rest_when_theirs_opens(
    engine: Engine,
) -> None:
    rome = ["+393471000001", "+393471000002"]
    new_york = ["+12012345671", "+12012345672"]
    async with running_sandbox(sandbox_config()) as sandbox:
        settings = sandbox_settings(sandbox.base_url)
        virtual = [datetime(2026, 6, 1, 10, 0, tzinfo=UTC)]  # 12:00 in Rome, 06:00 in New York
        cid = make_campaign(
            engine,
            settings,
            name="local",
            recipients=rome + new_york,
            scheduled_at=virtual[0] - HOUR,
            window_start="09:00",
            window_end="20:00",
            recipient_local_time=True,
        )
        first = await one_run(engine, settings, clock=lambda: virtual[0])
        assert first.exit_code() == 75
        assert_each_once(sandbox, rome)
        with engine.connect() as conn:
            held = conn.execute(
                sa.select(MESSAGE.c.phone, MESSAGE.c.state, MESSAGE.c.next_attempt_at).where(
                    MESSAGE.c.campaign_id == cid, MESSAGE.c.state == "planned"
                )
            ).all()
        assert sorted(phone for phone, _, _ in held) == new_york
        assert {at for _, _, at in held} == {datetime(2026, 6, 1, 13, 0, tzinfo=UTC)}  # 09:00 EDT
        virtual[0] = datetime(2026, 6, 1, 12, 59, tzinfo=UTC)
        assert (await one_run(engine, settings, clock=lambda: virtual[0])).passes == []
        virtual[0] = datetime(2026, 6, 1, 13, 0, 1, tzinfo=UTC)
        last = await one_run(engine, settings, clock=lambda: virtual[0])
        assert last.exit_code() == 0
        assert states(engine, cid) == {"accepted": 4}
        assert_each_once(sandbox, rome + new_york)


async def test_a_campaign_left_running_by_a_killed_run_is_resumed_and_its_in_flight_rows_become_unknown(
    engine: Engine,
) -> None:
    async with running_sandbox(sandbox_config()) as sandbox:
        settings = sandbox_settings(sandbox.base_url)
        recipients = phones(30)
        cid = make_campaign(
            engine, settings, name="killed", recipients=recipients, scheduled_at=utcnow() - HOUR
        )
        past = utcnow() - HOUR
        with engine.begin() as conn:
            conn.execute(sa.update(CAMPAIGN).where(CAMPAIGN.c.id == cid).values(state="running"))
            first_two = (
                sa.select(MESSAGE.c.id).where(MESSAGE.c.campaign_id == cid).order_by(MESSAGE.c.id).limit(2)
            )
            conn.execute(
                sa.update(MESSAGE)
                .where(MESSAGE.c.id.in_(first_two.scalar_subquery()))
                .values(state="sending", lease_owner="deadhost:1:x", lease_expires_at=past, sending_at=past)
            )
        summary = await one_run(engine, settings)
        assert [p.name for p in summary.passes] == ["killed"]
        assert states(engine, cid) == {"accepted": 28, "unknown": 2}
        assert campaign_state(engine, cid) == "completed"
        assert_each_once(sandbox, recipients[2:])


async def test_rows_not_sent_by_the_campaign_deadline_end_skipped_expired_in_the_same_run(
    engine: Engine,
) -> None:
    async with running_sandbox(sandbox_config()) as sandbox:
        settings = sandbox_settings(sandbox.base_url, WACAMP_RATE_PER_S="50")
        recipients = phones(200)
        cid = make_campaign(
            engine,
            settings,
            name="flash",
            recipients=recipients,
            scheduled_at=utcnow() - HOUR,
            deadline=utcnow() + timedelta(seconds=1.5),
        )
        summary = await one_run(engine, settings)
        counts = states(engine, cid)
        assert summary.exit_code() == 0
        assert [p.outcome for p in summary.passes] == ["deadline", "expired"]
        assert set(counts) == {"accepted", "skipped"} and counts["accepted"] + counts["skipped"] == 200
        assert campaign_state(engine, cid) == "completed"
        with engine.connect() as conn:
            skipped = conn.execute(
                sa.select(MESSAGE.c.skip_reason, MESSAGE.c.dedup_hash).where(
                    MESSAGE.c.campaign_id == cid, MESSAGE.c.state == "skipped"
                )
            ).all()
        assert {tuple(row) for row in skipped} == {("expired", None)}
        assert sum(sandbox.stats().accepted_per_recipient.values()) == counts["accepted"]

"""Several senders: each its own limiter, side by side; one tier budget per business portfolio."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import UTCDateTime, utcnow
from campaigns.core.models import TierUsage
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from scheduler.providers.factory import make_provider
from scheduler.runs.dispatch_runner import DispatcherRunner
from scheduler.runs.due import lanes_for, run_due
from tests.scheduling_support import MESSAGE, make_campaign, phones, sandbox_env, states

SENDERS = """
[[senders]]
name = "slow"
phone_number_id = "100000000000001"
rate_per_s = {slow}
portfolio = "acme"

[[senders]]
name = "fast"
phone_number_id = "100000000000002"
rate_per_s = {fast}
portfolio = "acme"

[[senders]]
name = "other"
phone_number_id = "100000000000003"
rate_per_s = {fast}
portfolio = "beta"
"""


def settings_with_senders(tmp_path: Path, base_url: str, *, slow: int, fast: int, tier: str) -> Settings:
    config = tmp_path / "wacamp.toml"
    config.write_text(SENDERS.format(slow=slow, fast=fast), encoding="utf-8")
    env = sandbox_env(base_url, WACAMP_MESSAGING_TIER=tier)
    del env["WACAMP_RATE_PER_S"]
    settings, _ = load_settings(config_file=config, environ=env)
    return settings


async def run_once(engine: Engine, settings: Settings) -> DispatcherRunner:
    runner = DispatcherRunner(
        engine=engine, settings=settings, provider_for=lambda s: make_provider(settings, s)
    )
    try:
        await run_due(engine, runner=runner, stop_event=asyncio.Event(), lane_of=lanes_for(engine, settings))
    finally:
        await runner.close()
    return runner


def claim_span(engine: Engine, campaign_id: int) -> tuple[datetime, datetime]:
    """When the first and the last row of a campaign were accepted."""
    column = MESSAGE.c.accepted_at
    with engine.connect() as conn:
        first, last = conn.execute(
            sa.select(
                sa.type_coerce(sa.func.min(column), UTCDateTime()),
                sa.type_coerce(sa.func.max(column), UTCDateTime()),
            ).where(MESSAGE.c.campaign_id == campaign_id)
        ).one()
    return first, last


async def test_each_sender_sends_at_its_own_rate_and_senders_send_side_by_side(
    engine: Engine, tmp_path: Path
) -> None:
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        settings = settings_with_senders(tmp_path, sandbox.base_url, slow=10, fast=40, tier="TIER_UNLIMITED")
        slow = make_campaign(
            engine, settings, name="slow-c", recipients=phones(30), scheduled_at=utcnow(), sender_name="slow"
        )
        fast = make_campaign(
            engine,
            settings,
            name="fast-c",
            recipients=phones(80, start=1000),
            scheduled_at=utcnow(),
            sender_name="fast",
        )
        runner = await run_once(engine, settings)
    assert states(engine, slow) == {"accepted": 30}
    assert states(engine, fast) == {"accepted": 80}
    assert runner.paces["slow"] is not runner.paces["fast"]
    assert (runner.paces["slow"].target_rate_per_s, runner.paces["fast"].target_rate_per_s) == (10, 40)
    busiest = {report.campaign: report.busiest_second for report in runner.reports}
    assert busiest["slow-c"] <= 10
    assert 10 < busiest["fast-c"] <= 40
    slow_span, fast_span = claim_span(engine, slow), claim_span(engine, fast)
    assert slow_span[0] < fast_span[1] and fast_span[0] < slow_span[1], "the two senders did not overlap"


async def test_the_tier_budget_is_shared_by_the_senders_of_one_portfolio_only(
    engine: Engine, tmp_path: Path
) -> None:
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        settings = settings_with_senders(tmp_path, sandbox.base_url, slow=200, fast=200, tier="TIER_50")
        campaigns = {
            sender: make_campaign(
                engine,
                settings,
                name=f"{sender}-c",
                recipients=phones(40, start=1000 * i),
                scheduled_at=utcnow(),
                sender_name=sender,
            )
            for i, sender in enumerate(("slow", "fast", "other"))
        }
        await run_once(engine, settings)
        stats = sandbox.stats()
    accepted = {sender: states(engine, cid).get("accepted", 0) for sender, cid in campaigns.items()}
    assert accepted["slow"] + accepted["fast"] == 50
    assert accepted["other"] == 40
    with engine.connect() as conn:
        usage = dict(
            conn.execute(
                sa.select(TierUsage.__table__.c.portfolio, sa.func.count()).group_by(
                    TierUsage.__table__.c.portfolio
                )  # type: ignore[attr-defined]
            ).all()
        )
    assert usage == {"acme": 50, "beta": 40}
    assert stats.duplicates == 0 and sum(stats.accepted_per_recipient.values()) == 90

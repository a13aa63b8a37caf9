"""Frequency caps across campaigns (issue #15): 2/7d, an injected wall clock, SQLite and PostgreSQL.

Day 0: three campaigns of one portfolio to overlapping audiences, each sent by its own dispatcher at
the same time (as three workers would: own engine, own sender, claims racing for the same contacts).
Day 3: a fourth campaign through `run_due`. Day 7 plus an hour: `run_due` again sends what waited.
Every contact gets at most two sends in any 7 days, the sandbox never sees a duplicate, and every
row ends accepted (the capped ones later, none lost).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.caps import CAPPED, preview, rule_for
from campaigns.core.db import make_engine
from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from scheduler.providers.factory import make_provider
from scheduler.runs.dispatch_runner import DispatcherRunner
from scheduler.runs.due import lanes_for, run_due
from scheduler.sending.dispatch import Dispatcher
from scheduler.sending.run_report import RunReport, StopReason
from tests.scheduling_support import campaign_state, make_campaign, phones, sandbox_env, states

SENDER = """
[[senders]]
name = "s{i}"
phone_number_id = "10000000000000{i}"
rate_per_s = 300
portfolio = "acme"
"""
SENDERS = "\n".join(SENDER.format(i=i) for i in (1, 2, 3))
DAY0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: Audiences: 40 contacts in all three lists, 20 only in each.
CORE = phones(40)


class WallClock:
    """The wall clock the engine reads (`now`), moved by the test across days."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def __call__(self) -> datetime:
        return self.at


def settings_for(tmp_path: Path, base_url: str, **extra: str) -> Settings:
    config = tmp_path / "wacamp.toml"
    config.write_text(SENDERS, encoding="utf-8")
    env = sandbox_env(base_url, **{"WACAMP_LIMITS__MARKETING_CAP": "2/7d", **extra})
    del env["WACAMP_RATE_PER_S"]
    settings, _ = load_settings(config_file=config, environ=env)
    return settings


def audience(i: int) -> list[str]:
    return CORE + phones(20, start=1000 * (i + 1))


def campaign(engine: Engine, settings: Settings, i: int, *, sender: str, **columns: object) -> int:
    """A campaign with its own content (so the dedup never decides: only the cap does)."""
    return make_campaign(
        engine,
        settings,
        name=f"c{i}",
        recipients=audience(i),
        scheduled_at=DAY0,
        sender_name=sender,
        params={"body.1": "{first_name}", "body.2": f"{10 * i}%"},
        **columns,
    )


async def dispatch(url: str, settings: Settings, campaign_id: int, clock: WallClock) -> RunReport:
    """One dispatcher with its own engine and sender: a worker of its own."""
    engine = make_engine(url)
    with engine.connect() as conn:
        ref = control.reload(conn, campaign_id)
    provider = make_provider(settings, settings.sender(ref.sender_name))
    try:
        return await Dispatcher(
            engine=engine, settings=settings, campaign=ref, provider=provider, now=clock
        ).run()
    finally:
        await provider.close()
        engine.dispose()


async def due(engine: Engine, settings: Settings, clock: WallClock) -> None:
    runner = DispatcherRunner(
        engine=engine, settings=settings, provider_for=lambda s: make_provider(settings, s), now=clock
    )
    try:
        await run_due(
            engine,
            runner=runner,
            stop_event=asyncio.Event(),
            lane_of=lanes_for(engine, settings),
            clock=clock,
        )
    finally:
        await runner.close()


def sends_by_contact(engine: Engine) -> dict[str, list[datetime]]:
    """When each contact's rows were claimed for sending (the cap counts from then), accepted rows only."""
    column = sa.type_coerce(MESSAGE.c.claimed_at, UTCDateTime())
    query = sa.select(MESSAGE.c.phone, column).where(MESSAGE.c.state == "accepted")
    found: dict[str, list[datetime]] = defaultdict(list)
    with engine.connect() as conn:
        for phone, at in conn.execute(query):
            found[phone].append(at)
    return found


def most_in_any_window(times: list[datetime], window: timedelta) -> int:
    ordered = sorted(times)
    return max(sum(1 for t in ordered if start <= t < start + window) for start in ordered)


async def test_two_per_seven_days_holds_across_racing_workers_and_run_due_over_days(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    clock = WallClock(DAY0)
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        settings = settings_for(tmp_path, sandbox.base_url)
        ids = [campaign(engine, settings, i, sender=f"s{i}") for i in (1, 2, 3)]
        reports = await asyncio.gather(*(dispatch(db_url, settings, cid, clock) for cid in ids))
        day0 = {cid: states(engine, cid) for cid in ids}
        # 40 core contacts x 3 campaigns: 80 sends fit the cap, 40 wait; the 60 others go out.
        assert sum(s.get("accepted", 0) for s in day0.values()) == 60 + 80
        assert sum(s.get("planned", 0) for s in day0.values()) == 40
        assert {r.reason for r in reports} <= {StopReason.COMPLETED, StopReason.WAITING}

        clock.at = DAY0 + timedelta(days=3)
        c4 = campaign(engine, settings, 4, sender="s1")
        await due(engine, settings, clock)
        assert states(engine, c4) == {"accepted": 20, "planned": 40}  # the core waits for day 7
        assert campaign_state(engine, c4) == "waiting"

        clock.at = DAY0 + timedelta(days=7, hours=1)
        await due(engine, settings, clock)
        stats = sandbox.stats()
    for cid in [*ids, c4]:
        assert states(engine, cid) == {"accepted": 60}, cid
    assert stats.duplicates == 0 and sum(stats.accepted_per_recipient.values()) == 240
    sends = sends_by_contact(engine)
    assert max(most_in_any_window(times, timedelta(days=7)) for times in sends.values()) == 2
    assert all(len(sends[phone]) == 4 for phone in CORE)


async def test_skip_policy_skips_the_capped_as_capped_and_a_cap_of_none_sends_everyone(
    engine: Engine, tmp_path: Path
) -> None:
    clock = WallClock(DAY0)
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        settings = settings_for(tmp_path, sandbox.base_url, WACAMP_LIMITS__CAP_POLICY="skip")
        first = campaign(engine, settings, 1, sender="s1", frequency_cap="1/30d")
        await due(engine, settings, clock)
        clock.at = DAY0 + timedelta(days=10)
        second = campaign(engine, settings, 2, sender="s2", frequency_cap="1/30d")
        third = campaign(engine, settings, 3, sender="s3", frequency_cap="none")
        with engine.connect() as conn:
            ref = control.reload(conn, second)
            rule = rule_for(ref, settings)
            assert rule is not None
            shown = preview(conn, rule, campaign_id=second, now=clock())
        assert shown.at_cap == 40 and "skipped" in shown.describe()
        await due(engine, settings, clock)
    assert states(engine, first) == {"accepted": 60}
    assert states(engine, second) == {"accepted": 20, "skipped": 40}
    assert states(engine, third) == {"accepted": 60}
    with engine.connect() as conn:
        reasons = set(
            conn.scalars(sa.select(MESSAGE.c.skip_reason).where(MESSAGE.c.campaign_id == second).distinct())
        )
    assert reasons == {None, CAPPED}


async def test_utility_templates_are_not_counted_against_the_marketing_cap(
    engine: Engine, tmp_path: Path
) -> None:
    clock = WallClock(DAY0)
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        settings = settings_for(tmp_path, sandbox.base_url, WACAMP_LIMITS__MARKETING_CAP="1/7d")
        utility = campaign(engine, settings, 1, sender="s1", category="UTILITY")
        await due(engine, settings, clock)
        marketing = campaign(engine, settings, 2, sender="s2")
        await due(engine, settings, clock)
        del sandbox
    assert states(engine, utility) == {"accepted": 60}
    assert states(engine, marketing) == {"accepted": 60}

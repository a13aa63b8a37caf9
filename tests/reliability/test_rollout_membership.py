"""Rollout stage membership holds: planning again never moves anyone, and a run-due killed with SIGKILL in
the middle of a stage sends nobody of a later stage, nobody twice, and loses nobody."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.planning.planner import plan_campaign
from campaigns.rollout.stages import new_rollout
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from tests.campaign_seed import Person, seed_list
from tests.reliability.support import run, start
from tests.scheduling_support import campaign_state, make_campaign, phones, sandbox_env, sandbox_settings


def stages_by_contact(engine: Engine, campaign_id: int) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(MESSAGE.c.contact_id, MESSAGE.c.stage).where(MESSAGE.c.campaign_id == campaign_id)
        )
        return {int(contact): int(stage) for contact, stage in rows}


def states_by_stage(engine: Engine, campaign_id: int) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(MESSAGE.c.stage, MESSAGE.c.state, sa.func.count())
            .where(MESSAGE.c.campaign_id == campaign_id)
            .group_by(MESSAGE.c.stage, MESSAGE.c.state)
        )
        for stage, state, count in rows:
            out.setdefault(int(stage), Counter())[str(state)] += int(count)
    return out


def test_planning_again_keeps_every_member_in_its_stage_and_draws_the_new_ones(sqlite_engine: Engine) -> None:
    settings = sandbox_settings("http://unused")
    rollout = new_rollout("10%,50%,100%", audience=300, wait_s=60, guardrails={})
    columns = {"rollout": rollout.as_json(), "rollout_stage": 0}
    cid = make_campaign(sqlite_engine, settings, name="grow", recipients=phones(300), **columns)
    before = stages_by_contact(sqlite_engine, cid)
    assert set(before.values()) == {0, 1, 2}
    plan_campaign(sqlite_engine, settings=settings, campaign=cid)  # again: nothing moves, nothing added
    assert stages_by_contact(sqlite_engine, cid) == before
    seed_list(
        sqlite_engine, "grow", [Person(phone, {"first_name": "Ada"}) for phone in phones(100, start=300)]
    )
    plan_campaign(sqlite_engine, settings=settings, campaign=cid)
    after = stages_by_contact(sqlite_engine, cid)
    assert len(after) == 400
    assert {contact: after[contact] for contact in before} == before
    assert all(after[contact] == rollout.stage_of(contact) for contact in after)


async def test_run_due_killed_mid_stage_sends_no_later_stage_nobody_twice_and_loses_nobody(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    config = SandboxConfig(mps=0, pair_spacing_s=0, not_on_whatsapp_share=0.0, marketing_limit_share=0.0)
    async with running_sandbox(config) as sandbox:
        env = {
            **sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S="100"),
            "WACAMP_DATABASE_URL": sqlite_url,
            "WACAMP_DISPATCH__LEASE_S": "1",
        }
        rollout = new_rollout("60%,100%", audience=600, wait_s=3600, guardrails={})
        cid = make_campaign(
            sqlite_engine,
            sandbox_settings(sandbox.base_url),
            name="killed",
            recipients=phones(600),
            scheduled_at=utcnow() - timedelta(hours=1),
            rollout=rollout.as_json(),
            rollout_stage=0,
        )
        members = stages_by_contact(sqlite_engine, cid)
        process = await start("run-due", env=env, cwd=tmp_path)
        while sandbox.stats().accepted < 60:  # well inside stage 1 (about 360 rows at 100/s)
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        await process.communicate()
        partial = states_by_stage(sqlite_engine, cid)
        assert 0 < sum(partial[0].values()) - partial[0]["planned"] < sum(partial[0].values())
        for _ in range(10):  # restarted until stage 1 is over and the campaign waits for its review
            await asyncio.sleep(1.1)
            code, _, err = await run("run-due", env=env, cwd=tmp_path)
            assert code in (0, 75), err
            if (
                campaign_state(sqlite_engine, cid) == "waiting"
                and not states_by_stage(sqlite_engine, cid)[0]["planned"]
            ):
                break
        assert stages_by_contact(sqlite_engine, cid) == members
        by_stage = states_by_stage(sqlite_engine, cid)
        assert set(by_stage[0]) <= {"accepted", "unknown"}
        assert by_stage[1] == Counter({"planned": sum(1 for s in members.values() if s == 1)})
        stats = sandbox.stats()
        assert stats.duplicates == 0 and set(stats.accepted_per_recipient.values()) == {1}
        assert by_stage[0]["accepted"] <= stats.accepted <= sum(by_stage[0].values())

"""An A/B test cut short by a person (`campaigns resume --override-guardrail`) is decided on what it has
(no data: the default), and the next run-due plans and sends the rest with it, once each."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.planning.planner import plan_campaign
from campaigns.rollout.review import Reviewer, override
from campaigns.rollout.stages import new_rollout
from campaigns.rollout.variants import ABTest, Variant
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from scheduler.providers.factory import make_provider
from scheduler.runs.dispatch_runner import DispatcherRunner
from scheduler.runs.due import DueSummary, run_due
from tests.scheduling_support import campaign_state, make_campaign, phones, sandbox_settings


def by_stage_and_variant(engine: Engine, campaign_id: int) -> Counter[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(MESSAGE.c.stage, MESSAGE.c.variant, sa.func.count())
            .where(MESSAGE.c.campaign_id == campaign_id)
            .group_by(MESSAGE.c.stage, MESSAGE.c.variant)
        )
        return Counter({(int(stage), str(variant)): int(n) for stage, variant, n in rows})


async def test_an_overridden_test_is_decided_for_the_default_and_the_rest_gets_it(engine: Engine) -> None:
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        settings = sandbox_settings(sandbox.base_url)
        rollout = new_rollout("40%,100%", audience=200, wait_s=3600, guardrails={}, seed="cut")
        ab = ABTest(
            variants=(Variant("a", "spring_sale", "it"), Variant("b", "spring_sale", "en")),
            weights=(0.5, 0.5),
            metric="read",
            alpha=0.05,
            default="a",
            seed="cut",
            test_share=0.4,
        )
        columns = {"rollout": rollout.as_json(), "rollout_stage": 0, "ab": ab.as_json()}
        past = utcnow() - timedelta(hours=1)
        cid = make_campaign(
            engine, settings, name="cut", recipients=phones(200), scheduled_at=past, **columns
        )

        async def one_run() -> DueSummary:
            runner = DispatcherRunner(
                engine=engine, settings=settings, provider_for=lambda s: make_provider(settings, s)
            )
            try:
                return await run_due(
                    engine,
                    runner=runner,
                    stop_event=asyncio.Event(),
                    planner=lambda c: plan_campaign(engine, settings=settings, campaign=c),
                    reviewer=Reviewer(settings),
                )
            finally:
                await runner.close()

        await one_run()
        test = by_stage_and_variant(engine, cid)
        assert set(test) == {(0, "a"), (0, "b")}  # the rest is not planned before the decision
        assert campaign_state(engine, cid) == "waiting"
        control.pause(engine, "cut", reason="looks odd")
        override(engine, "cut")
        decided = control.find_campaign(engine, cid).ab or {}
        assert (decided["decision"]["winner"], decided["decision"]["significant"]) == ("a", False)
        await one_run()
        final = by_stage_and_variant(engine, cid)
        assert campaign_state(engine, cid) == "completed"
        assert {key for key in final if key[0] == 1} == {(1, "a")}
        assert sum(final.values()) == 200
        stats = sandbox.stats()
        assert stats.duplicates == 0 and len(stats.accepted_per_recipient) == 200

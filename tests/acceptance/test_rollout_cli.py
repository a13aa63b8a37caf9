"""Staged rollouts rehearsed through the installed CLI: `campaigns create --rollout`, then `run-due` as
cron would call it, against the sandbox (its webhooks applied by a real receiver)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from sandbox.propensity import Propensity
from tests.rollout_support import Rehearsal, create_args, rehearsal, seed_audience

WAIT = "1s"


@pytest.fixture
def migrated(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


async def _until_settled(r: Rehearsal, name: str, *, runs: int = 8) -> str:
    """run-due, a pause for the review, run-due … until the campaign is completed or paused."""
    for _ in range(runs):
        await r.run_due()
        state = str(r.campaign(name)["state"])
        if state in ("completed", "paused"):
            return state
        await asyncio.sleep(1.1)
    return str(r.campaign(name)["state"])


async def test_a_healthy_campaign_goes_2_10_100_percent_by_itself(migrated: Engine, tmp_path: Path) -> None:
    recipients = seed_audience(migrated, "healthy", 400)
    async with rehearsal(migrated, tmp_path) as r:
        args = create_args("healthy", "--rollout", "2%,10%,100%", "--rollout-wait", WAIT)
        code, _, err = await r.wacamp(*args)
        assert code == 0, err
        first_code, _ = await r.run_due()
        assert first_code == 75  # stage 1 sent, the rest waits for its review
        assert set(r.sent_by_stage("healthy")) == {0}
        code, out, _ = await r.wacamp("campaigns", "show", "healthy", "--json")
        shown = json.loads(out)
        assert shown["state"] == "waiting"
        assert shown["rollout"]["current_stage"] == 1
        assert shown["rollout"]["waiting_for"].startswith("stage 1 of 3 (2%) under review")
        assert await _until_settled(r, "healthy") == "completed"
        members = r.members_by_stage("healthy")
        assert r.sent_by_stage("healthy") == members
        assert sum(members.values()) == len(recipients)
        assert 2 <= members[0] <= 20 and 15 <= members[1] <= 60  # about 2 % and 8 % of 400
        accepted = [summary["accepted"] for _, summary in r.runs if summary["accepted"]]
        assert accepted == [members[0], members[1], members[2]]  # one stage per run, in order
        stats = r.sandbox.stats()
        assert stats.duplicates == 0
        assert set(stats.accepted_per_recipient.values()) == {1}
        assert len(stats.accepted_per_recipient) == len(recipients)


async def test_a_template_answered_with_stop_pauses_after_stage_1_having_sent_only_stage_1(
    migrated: Engine, tmp_path: Path
) -> None:
    seed_audience(migrated, "stopped", 400)
    behaviour = {"spring_sale": Propensity(optout_share=0.3)}
    async with rehearsal(migrated, tmp_path, behaviour=behaviour) as r:
        args = create_args("stopped", "--rollout", "5%,100%", "--rollout-wait", WAIT)
        code, _, err = await r.wacamp(*args)
        assert code == 0, err
        await r.run_due()
        await asyncio.sleep(1.1)
        code, summary = await r.run_due("--fail-on-guardrail")
        assert code == 1
        assert summary["paused_by_guardrail"] and "opt-out rate" in summary["paused_by_guardrail"][0]
        campaign = r.campaign("stopped")
        assert campaign["state"] == "paused"
        assert campaign["pause_reason"].startswith("guardrail: rollout stage 1 of 2 (5%): opt-out rate")
        assert set(r.sent_by_stage("stopped")) == {0}
        assert r.sent_by_stage("stopped")[0] == r.members_by_stage("stopped")[0]
        code, out, _ = await r.wacamp("campaigns", "show", "stopped")
        assert "opt-out rate" in out and "--override-guardrail" in out
        await _the_report_tells_the_stages(r, "stopped")
        again, _ = await r.run_due("--fail-on-guardrail")
        assert again == 0 and set(r.sent_by_stage("stopped")) == {0}  # a paused campaign stays paused
        code, _, err = await r.wacamp("campaigns", "resume", "stopped", "--override-guardrail")
        assert code == 0, err
        await r.run_due()  # stage 2 goes out to everyone who did not say STOP
        assert r.campaign("stopped")["state"] == "completed"
        assert r.sent_by_stage("stopped") == r.members_by_stage("stopped")
        assert r.sandbox.stats().duplicates == 0


async def _the_report_tells_the_stages(r: Rehearsal, name: str) -> None:
    """JSON, table, CSV and HTML give the stage that was judged red, with its figures."""
    code, out, err = await r.wacamp("report", name, "--format", "json")
    assert code == 0, err
    first, second = json.loads(out)["rollout"]["per_stage"]
    assert first["guardrails"]["verdict"] == "red" and first["opt_outs"] > 0
    crossed = [c for c in first["guardrails"]["checks"] if not c["ok"]]
    assert [c["name"] for c in crossed] == ["max_optout_rate"] and crossed[0]["threshold"] == 0.02
    assert (second["released"], second["sends"], second["guardrails"]) == (False, 0, None)
    _, table, _ = await r.wacamp("report", name)
    assert "rollout: stage 1 of 2 (5%)" in table and "red: opt-out rate" in table
    _, page, _ = await r.wacamp("report", name, "--format", "html")
    assert "<h2>Rollout</h2>" in page and "stage 2 of 2 (100%)" in page
    _, csv_text, _ = await r.wacamp("report", name, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert {row["rollout_stage"] for row in rows} == {"1", "2"}
    assert {row["variant"] for row in rows} == {""}

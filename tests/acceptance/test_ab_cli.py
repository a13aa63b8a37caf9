"""A/B tests rehearsed through the installed CLI against the sandbox: the variants go to a test share,
`run-due` decides after the wait, and the rest gets the winner (or the default, when no difference is
significant)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from sandbox.propensity import Propensity
from tests.rollout_support import Rehearsal, create_args, rehearsal, seed_audience

AB = (
    "--variant",
    "a:spring_sale:it",
    "--variant",
    "b:spring_sale:en",
    "--ab-test",
    "50%",
    "--rollout-wait",
    "1s",
)


@pytest.fixture
def migrated(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def variants_by_stage(r: Rehearsal, name: str) -> dict[tuple[int, str], Counter[str]]:
    query = (
        sa.select(MESSAGE.c.stage, MESSAGE.c.variant, MESSAGE.c.state, sa.func.count())
        .join(CAMPAIGN, CAMPAIGN.c.id == MESSAGE.c.campaign_id)
        .where(CAMPAIGN.c.name == name)
        .group_by(MESSAGE.c.stage, MESSAGE.c.variant, MESSAGE.c.state)
    )
    out: dict[tuple[int, str], Counter[str]] = {}
    with r.engine.connect() as conn:
        for stage, variant, state, n in conn.execute(query):
            out.setdefault((int(stage), str(variant)), Counter())[str(state)] += int(n)
    return out


async def _decided(r: Rehearsal, name: str) -> dict[str, object]:
    """run-due (the test share), the wait, run-due (the decision and the rest); the stored decision."""
    code, _ = await r.run_due()
    assert code == 75
    assert {stage for stage, _ in variants_by_stage(r, name)} == {0}  # the rest is not planned yet
    await asyncio.sleep(1.5)
    code, _ = await r.run_due()
    assert code == 0
    assert r.campaign(name)["state"] == "completed"
    decision = r.campaign(name)["ab"]["decision"]
    assert isinstance(decision, dict)
    return decision


async def test_variant_b_read_twice_as_often_wins_and_is_sent_to_the_rest(
    migrated: Engine, tmp_path: Path
) -> None:
    recipients = seed_audience(migrated, "ab", 800)
    behaviour = {"spring_sale/it": Propensity(read_share=0.3), "spring_sale/en": Propensity(read_share=0.6)}
    async with rehearsal(migrated, tmp_path, behaviour=behaviour) as r:
        args = create_args("ab", *AB)
        args[args.index("--template") : args.index("--template") + 4] = []
        code, _, err = await r.wacamp(*args)
        assert code == 0, err
        decision = await _decided(r, "ab")
        assert (decision["winner"], decision["significant"]) == ("b", True)
        assert decision["p_value"] < 0.001 and 0 < decision["ci"][0] < decision["ci"][1]
        by = variants_by_stage(r, "ab")
        assert set(by) == {(0, "a"), (0, "b"), (1, "b")}  # the rest got b only
        assert sum(sum(c.values()) for c in by.values()) == len(recipients)
        assert r.sandbox.stats().duplicates == 0
        code, out, _ = await r.wacamp("report", "ab", "--format", "json")
        report = json.loads(out)["ab"]
        assert report["decision"]["winner"] == "b"
        assert [v["variant"] for v in report["per_variant"]] == ["a", "b"]
        _, page, _ = await r.wacamp("report", "ab", "--format", "html")
        assert "<h2>A/B test</h2>" in page and "variant b wins" in page


async def test_equal_variants_are_not_significant_and_the_default_is_sent(
    migrated: Engine, tmp_path: Path
) -> None:
    seed_audience(migrated, "same", 800)
    behaviour = {"spring_sale/it": Propensity(read_share=0.4), "spring_sale/en": Propensity(read_share=0.4)}
    async with rehearsal(migrated, tmp_path, behaviour=behaviour) as r:
        args = create_args("same", *AB, "--ab-default", "a")
        args[args.index("--template") : args.index("--template") + 4] = []
        code, _, err = await r.wacamp(*args)
        assert code == 0, err
        decision = await _decided(r, "same")
        assert (decision["winner"], decision["significant"]) == ("a", False)
        assert decision["p_value"] >= 0.05 and decision["ci"][0] < 0 < decision["ci"][1]
        assert "not significant" in str(decision["summary"])
        assert {key for key in variants_by_stage(r, "same") if key[0] == 1} == {(1, "a")}

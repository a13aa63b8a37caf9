"""The installed `wacamp`, in subprocesses, sending through the Marketing Messages API of a sandbox.

A MARKETING campaign created with `--via marketing` goes to ``/marketing_messages`` at the sender's
80 msg/s, every body valid against Meta's `MarketingMessageRequestPayload`, the report's counts by path
equal to the sandbox's; with the terms not accepted it stops and says what to do (STRICT) or goes through
the Cloud API (CLOUD_API_FALLBACK), and the report tells which; a UTILITY template is refused at create.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from sandbox.config import SandboxConfig
from sandbox.samples import sample_templates
from sandbox.server import running_sandbox
from tests.acceptance.test_run_due_cli import wacamp
from tests.campaign_seed import Person, seed_list, seed_templates
from tests.marketing_support import validate_marketing_body
from tests.scheduling_support import phones, sandbox_env


@pytest.fixture
def migrated(sqlite_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    seed_templates(engine, *sample_templates())
    yield sqlite_url, engine
    engine.dispose()


def env_for(base_url: str, url: str, **extra: str) -> dict[str, str]:
    return {**sandbox_env(base_url, WACAMP_RATE_PER_S="80", **extra), "WACAMP_DATABASE_URL": url}


CREATE = ("--template", "spring_sale", "--language", "it", "--param", "1={first_name}", "--param", "2=20%")


async def create_and_plan(
    engine: Engine, env: dict[str, str], cwd: Path, *, name: str, recipients: int, start: int = 0
) -> None:
    seed_list(engine, name, [Person(p, {"first_name": "Marco"}) for p in phones(recipients, start=start)])
    code, _, err = await wacamp(
        "campaigns", "create", name, "--list", name, *CREATE, "--via", "marketing", env=env, cwd=cwd
    )
    assert code == 0, err
    code, _, err = await wacamp("campaigns", "plan", name, env=env, cwd=cwd)
    assert code == 0, err


async def report(name: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    code, out, err = await wacamp("report", name, "--format", "json", env=env, cwd=cwd)
    assert code == 0, err
    facts: dict[str, Any] = json.loads(out)
    return facts


async def test_a_marketing_campaign_is_sent_through_the_marketing_api_at_80_per_second(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    async with running_sandbox(SandboxConfig(mps=80, pair_spacing_s=0)) as sandbox:
        env = env_for(sandbox.base_url, url)
        await create_and_plan(engine, env, tmp_path, name="spring", recipients=400)
        code, out, err = await wacamp("campaigns", "run", "spring", env=env, cwd=tmp_path)
        assert code == 0, err + out
        stats = sandbox.stats()
        bodies = [json.loads(raw) for raw in sandbox.sandbox.marketing.bodies]
        facts = await report("spring", env, tmp_path)
    assert len(bodies) == 400
    for body in bodies:
        validate_marketing_body(body)
    assert {body["product_policy"] for body in bodies} == {"CLOUD_API_FALLBACK"}
    assert stats.accepted_by_path == {"marketing": 400} and stats.accepted == 400
    assert stats.duplicates == 0 and stats.errors_by_code.get(130429, 0) == 0
    assert stats.max_accepted_trailing_1s <= 80
    assert facts["paths"] == {"marketing": 400} and facts["counts"]["accepted"] == 400
    assert facts["campaign"]["via"] == "marketing"
    assert sorted(stats.accepted_per_recipient) == sorted(p.lstrip("+") for p in phones(400))


async def test_terms_not_accepted_stop_the_campaign_with_strict_and_fall_back_otherwise(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    async with running_sandbox(SandboxConfig(mps=80, marketing_terms_accepted=False)) as sandbox:
        strict = env_for(sandbox.base_url, url, WACAMP_MARKETING__PRODUCT_POLICY="STRICT")
        await create_and_plan(engine, strict, tmp_path, name="strict", recipients=60)
        code, out, err = await wacamp("campaigns", "run", "strict", env=strict, cwd=tmp_path)
        assert code == 1, out + err
        assert "131055" in out + err and "WhatsApp Manager" in out + err
        strict_facts = await report("strict", strict, tmp_path)

        fallback = env_for(sandbox.base_url, url)
        await create_and_plan(engine, fallback, tmp_path, name="fallback", recipients=60, start=1000)
        code, out, err = await wacamp("campaigns", "run", "fallback", env=fallback, cwd=tmp_path)
        assert code == 0, out + err
        fallback_facts = await report("fallback", fallback, tmp_path)
        stats = sandbox.stats()
    assert strict_facts["campaign"]["state"] == "paused"
    assert "accepts the Marketing Messages API terms" in strict_facts["campaign"]["pause_reason"]
    assert strict_facts["campaign"]["product_policy"] == "STRICT"
    assert (strict_facts["counts"]["accepted"], strict_facts["counts"]["pending"]) == (0, 60)
    assert fallback_facts["paths"] == {"cloud": 60}
    assert fallback_facts["campaign"]["product_policy"] == "CLOUD_API_FALLBACK"
    assert stats.accepted_by_path == {"cloud": 60} and stats.duplicates == 0


async def test_a_utility_template_is_refused_the_marketing_api_at_create_with_one_line(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    seed_list(engine, "orders", [Person(p, {"first_name": "Marco"}) for p in phones(3)])
    env = env_for("http://127.0.0.1:9", url)
    args = ("campaigns", "create", "o", "--list", "orders", "--template", "order_shipped", "--language", "it")
    code, _, err = await wacamp(
        *args, "--param", "1={first_name}", "--via", "marketing", env=env, cwd=tmp_path
    )
    assert code == 1
    assert "--via marketing: the Marketing Messages API takes MARKETING templates only" in err
    assert "UTILITY" in err

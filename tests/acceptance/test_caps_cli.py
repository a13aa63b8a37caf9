"""Frequency caps through the installed CLI (issue #15), on SQLite and PostgreSQL, against a sandbox.

Four campaigns in a row with `--cap 2/7d` to overlapping lists: the first two reach everyone, the
third sends only to those who got fewer than two (the others wait for the window: `plan`, `show` and
the report say so), the fourth (`--cap-policy skip`) skips them as `capped`. The sandbox sees each
shared contact exactly twice. Then three `wacamp worker` processes on PostgreSQL race three campaigns
for the same contacts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.settings_loading import load_settings
from sandbox.config import SandboxConfig
from sandbox.samples import sample_templates
from sandbox.server import running_sandbox
from tests.acceptance.test_run_due_cli import wacamp
from tests.acceptance.test_worker_cli import start
from tests.campaign_seed import Person, seed_list, seed_templates
from tests.integration.test_frequency_caps import SENDERS
from tests.scaleout_support import schedule_now
from tests.scheduling_support import campaign_state, make_campaign, phones, sandbox_env, states

CORE = phones(30)


@pytest.fixture
def migrated(db_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(db_url)
    upgrade(engine)
    seed_templates(engine, *sample_templates())
    for i in (1, 2, 3):
        audience = CORE + phones(10, start=1000 * i)
        seed_list(engine, f"l{i}", [Person(phone, {"first_name": "Marco"}) for phone in audience])
    seed_list(engine, "l4", [Person(phone, {"first_name": "Marco"}) for phone in CORE])
    yield db_url, engine
    engine.dispose()


def create_args(i: int, *extra: str) -> list[str]:
    """`campaigns create` of campaign c{i} to list l{i}, with content of its own and a 2/7d cap."""
    return [
        "campaigns", "create", f"c{i}", "--list", f"l{i}", "--template", "spring_sale", "--language", "it",
        "--param", "1={first_name}", "--param", f"2={10 * i}%", "--button-payload", "0=STOP",
        "--at", "2020-01-01T09:00Z", "--cap", "2/7d", *extra,
    ]  # fmt: skip


async def test_four_campaigns_with_a_2_per_7_days_cap_reach_each_shared_contact_twice(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        env = {**sandbox_env(sandbox.base_url), "WACAMP_DATABASE_URL": url}

        async def ok(*args: str) -> str:
            code, out, err = await wacamp(*args, env=env, cwd=tmp_path)
            assert code == 0, (args, err)
            return out

        for i in (1, 2):
            await ok(*create_args(i))
        await ok("run-due")
        await ok(*create_args(3))
        plan = json.loads(await ok("campaigns", "plan", "c3", "--json"))
        assert plan["frequency_cap"]["cap"] == "2/7d" and plan["frequency_cap"]["at_cap_now"] == 30
        assert "frequency cap 2/7d" in await ok("campaigns", "plan", "c3")
        code, out, err = await wacamp("run-due", "--json", env=env, cwd=tmp_path)
        assert code == 75, err  # work left for a later run: c3 waits for the window
        assert json.loads(out)["runs"] == [
            {"campaign": "c3", "outcome": "waiting", "accepted": 10, "error": None}
        ]
        shown = json.loads(await ok("campaigns", "show", "c3", "--json"))
        assert shown["waiting_for_cap"] == 30 and "2/7d" in shown["frequency_cap"]
        await ok(*create_args(4, "--cap-policy", "skip"))
        code, _, err = await wacamp("run-due", env=env, cwd=tmp_path)
        assert code == 75, err  # c3 still waits
        report = json.loads(await ok("report", "c4", "--json"))
        table = await ok("report", "c3")
        stats = sandbox.stats()
    assert report["skipped"] == {"capped": 30}
    assert report["frequency_cap"] == {
        "cap": "2/7d",
        "policy": "skip",
        "rule": report["frequency_cap"]["rule"],
        "waiting": 0,
        "skipped": 30,
    }
    assert "30 waiting for it now" in table
    assert stats.duplicates == 0
    for phone in CORE:
        assert stats.accepted_per_recipient[phone.lstrip("+")] == 2
    assert sum(stats.accepted_per_recipient.values()) == 2 * 30 + 3 * 10
    assert campaign_state(engine, 3) == "waiting"
    assert states(engine, 3) == {"accepted": 10, "planned": 30}
    assert states(engine, 4) == {"skipped": 30}


@pytest.mark.postgres
async def test_three_workers_racing_for_shared_contacts_on_postgresql_never_exceed_the_cap(
    postgres_url: str, tmp_path: Path
) -> None:
    """Three `wacamp worker` processes, one sender each, three campaigns at once over the same 30
    contacts: each of them gets exactly two (whichever campaigns won), the third waits."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    config = tmp_path / "wacamp.toml"
    config.write_text(SENDERS, encoding="utf-8")
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        env = {**sandbox_env(sandbox.base_url), "WACAMP_DATABASE_URL": postgres_url}
        env |= {"WACAMP_CONFIG": str(config), "WACAMP_LIMITS__MARKETING_CAP": "2/7d"}
        del env["WACAMP_RATE_PER_S"]
        settings, _ = load_settings(config_file=config, environ=env)
        ids = [
            make_campaign(
                engine,
                settings,
                name=f"c{i}",
                recipients=CORE + phones(10, start=1000 * i),
                sender_name=f"s{i}",
                params={"body.1": "{first_name}", "body.2": f"{10 * i}%"},
            )
            for i in (1, 2, 3)
        ]
        workers = [
            await start("worker", "--poll-s", "0.2", "--metrics-port", "0", env=env, cwd=tmp_path)
            for _ in range(3)
        ]
        try:
            schedule_now(engine, ids)
            deadline = time.monotonic() + 90
            while not all(campaign_state(engine, cid) in ("completed", "waiting") for cid in ids):
                assert time.monotonic() < deadline, [campaign_state(engine, cid) for cid in ids]
                await asyncio.sleep(0.2)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                await asyncio.wait_for(worker.communicate(), timeout=60)
        stats = sandbox.stats()
    by_state = [states(engine, cid) for cid in ids]
    engine.dispose()
    assert stats.duplicates == 0
    assert {stats.accepted_per_recipient[p.lstrip("+")] for p in CORE} == {2}
    assert sum(stats.accepted_per_recipient.values()) == 2 * 30 + 3 * 10
    assert sum(s.get("planned", 0) for s in by_state) == 30  # each shared contact's third waits
    assert sum(s.get("accepted", 0) for s in by_state) == 90

"""The installed `wacamp run-due` and `wacamp campaigns schedule`, in subprocesses, against a sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.dbtypes import utcnow
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from tests.conftest import wacamp_executable
from tests.scheduling_support import (
    campaign_state,
    make_campaign,
    phones,
    sandbox_env,
    sandbox_settings,
    states,
)


@pytest.fixture
def migrated(db_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield db_url, engine
    engine.dispose()


async def wacamp(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    process = await asyncio.create_subprocess_exec(
        wacamp_executable(),
        *args,
        env={**clean, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=100)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_two_run_due_started_together_send_each_recipient_once_and_the_second_says_why(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        env = {**sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S="100"), "WACAMP_DATABASE_URL": url}
        recipients = phones(300)
        cid = make_campaign(
            engine,
            sandbox_settings(sandbox.base_url),
            name="night",
            recipients=recipients,
            scheduled_at=utcnow(),
        )
        results = await asyncio.gather(
            wacamp("run-due", "--json", env=env, cwd=tmp_path),
            wacamp("run-due", "--json", env=env, cwd=tmp_path),
        )
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 75], results
        locked = next(result for result in results if result[0] == 75)
        assert "already sending" in locked[2]
        assert json.loads(locked[1])["outcome"] == "locked"
        assert states(engine, cid) == {"accepted": 300}
        stats = sandbox.stats()
        assert stats.duplicates == 0
        assert sorted(stats.accepted_per_recipient) == sorted(p.lstrip("+") for p in recipients)
        assert set(stats.accepted_per_recipient.values()) == {1}


async def test_schedule_then_run_due_sends_only_what_is_due_and_logs_one_json_summary(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        env = {**sandbox_env(sandbox.base_url), "WACAMP_DATABASE_URL": url}
        settings = sandbox_settings(sandbox.base_url)
        now_id = make_campaign(engine, settings, name="now", recipients=phones(5))
        later_id = make_campaign(engine, settings, name="later", recipients=phones(5, start=50))
        code, out, err = await wacamp(
            "campaigns",
            "schedule",
            "now",
            "--at",
            "2020-01-01 09:00",
            "--tz",
            "Europe/Rome",
            "--json",
            env=env,
            cwd=tmp_path,
        )
        assert code == 0, err
        assert json.loads(out)["scheduled_at"]["utc"] == "2020-01-01T08:00:00+00:00"
        assert "has passed" in err
        code, _, err = await wacamp(
            "campaigns", "schedule", "later", "--at", "2999-01-01 09:00", env=env, cwd=tmp_path
        )
        assert code == 0, err
        log_file = tmp_path / "run-due.log"
        code, _, err = await wacamp(
            "run-due", "--log-format", "json", "--log-file", str(log_file), env=env, cwd=tmp_path
        )
        assert code == 0, err
        assert states(engine, now_id) == {"accepted": 5}
        assert states(engine, later_id) == {"planned": 5}
        assert campaign_state(engine, later_id) == "planned"
        lines = [json.loads(line) for line in log_file.read_text().splitlines()]
        summaries = [line for line in lines if line["message"].startswith("run-due finished")]
        assert len(summaries) == 1
        assert (summaries[0]["outcome"], summaries[0]["accepted"], summaries[0]["exit_code"]) == (
            "done",
            5,
            0,
        )


async def test_run_due_refuses_both_max_duration_and_until_as_a_usage_error(
    tmp_path: Path, sqlite_url: str
) -> None:
    code, _, err = await wacamp(
        "run-due",
        "--max-duration",
        "1h",
        "--until",
        "06:00",
        env={"WACAMP_DATABASE_URL": sqlite_url},
        cwd=tmp_path,
    )
    assert code == 2
    assert "not both" in err


async def test_scheduling_a_campaign_with_a_malformed_window_names_it(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    code, _, err = await wacamp(
        "campaigns",
        "schedule",
        "ghost",
        "--at",
        "2026-12-01 09:00",
        "--window",
        "9-20",
        env={"WACAMP_DATABASE_URL": sqlite_url},
        cwd=tmp_path,
    )
    assert code == 1
    assert "no campaign" in err


async def test_create_takes_the_schedule_options_and_reads_at_in_the_given_zone(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    from sandbox.samples import sample_templates
    from tests.campaign_seed import Person, seed_list, seed_templates

    seed_templates(engine, *sample_templates())
    seed_list(engine, "it", [Person("+393470000001", {"first_name": "Marco"})])
    code, _, err = await wacamp(
        "campaigns",
        "create",
        "night",
        "--list",
        "it",
        "--template",
        "spring_sale",
        "--language",
        "it",
        "--param",
        "1={first_name}",
        "--param",
        "2=20%",
        "--button-payload",
        "0=STOP",
        "--at",
        "2026-03-28 22:00",
        "--tz",
        "Europe/Rome",
        "--window",
        "22:00-06:00",
        "--deadline",
        "2026-03-29 06:00",
        env={"WACAMP_DATABASE_URL": url},
        cwd=tmp_path,
    )
    assert code == 0, err
    from campaigns.control import find_campaign
    from wacamp.cli.schedule_cmd import describe

    with engine.connect() as conn:
        data = describe(engine, find_campaign(conn, "night").id)
    assert data["scheduled_at"]["utc"] == "2026-03-28T21:00:00+00:00"
    assert (data["timezone"], data["window"]) == ("Europe/Rome", "22:00-06:00")
    assert data["deadline"]["utc"] == "2026-03-29T04:00:00+00:00"  # 06:00 CEST, after the DST change


async def test_create_refuses_a_bad_window_before_creating_anything(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    env = {"WACAMP_DATABASE_URL": sqlite_url}
    code, _, err = await wacamp(
        "campaigns",
        "create",
        "x",
        "--list",
        "nope",
        "--template",
        "t",
        "--language",
        "it",
        "--at",
        "2026-03-28 22:00",
        "--window",
        "22-06",
        env=env,
        cwd=tmp_path,
    )
    assert code == 1
    assert "send window '22-06'" in err
    code, out, _ = await wacamp("campaigns", "list", "--json", env=env, cwd=tmp_path)
    assert json.loads(out) == []


async def test_a_run_cut_short_by_max_duration_or_sigterm_is_completed_by_the_next_without_duplicate(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        env = {**sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S="50"), "WACAMP_DATABASE_URL": sqlite_url}
        recipients = phones(250)
        cid = make_campaign(
            sqlite_engine,
            sandbox_settings(sandbox.base_url),
            name="n",
            recipients=recipients,
            scheduled_at=utcnow(),
        )
        code, out, err = await wacamp("run-due", "--max-duration", "1s", "--json", env=env, cwd=tmp_path)
        assert code == 75, err
        first = json.loads(out)
        assert first["runs"][0]["outcome"] == "deadline"
        assert 0 < first["accepted"] < 250

        clean = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
        process = await asyncio.create_subprocess_exec(
            wacamp_executable(),
            "run-due",
            "--json",
            env={**clean, **env},
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        while states(sqlite_engine, cid).get("accepted", 0) < first["accepted"] + 20:
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out_bytes, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 75
        second = json.loads(out_bytes)
        assert second["stopped_by"] == "signal"
        assert campaign_state(sqlite_engine, cid) == "waiting"

        code, out, err = await wacamp("run-due", "--json", env=env, cwd=tmp_path)
        assert code == 0, err
        third = json.loads(out)
        assert first["accepted"] + second["accepted"] + third["accepted"] == 250
        assert states(sqlite_engine, cid) == {"accepted": 250}
        stats = sandbox.stats()
        assert stats.duplicates == 0
        assert sorted(stats.accepted_per_recipient) == sorted(p.lstrip("+") for p in recipients)
        assert set(stats.accepted_per_recipient.values()) == {1}

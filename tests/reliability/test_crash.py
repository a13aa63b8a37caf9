"""kill -9 of the sending commands at seeded random moments, each followed by a restart.

After the last restart: no recipient got the same content twice at the sandbox (its
`/_sandbox/stats`), every recipient the sandbox accepted has a row that says so (accepted, or
`unknown` for a request cut off by the kill), no row says accepted without the sandbox having
accepted it, and no row is left `sending`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from tests.reliability.crashing import CrashLog, crash_repeatedly, run_due_until_completed
from tests.reliability.record import record
from tests.reliability.support import (
    Audit,
    ServedSandbox,
    audit,
    free_port,
    listening,
    run,
    served_sandbox,
    start,
)
from tests.scheduling_support import campaign_state, make_campaign, phones, sandbox_env, sandbox_settings

QUICK_KILLS = 3
SLOW_KILLS = 15


def env_for(sandbox: ServedSandbox, sqlite_url: str) -> dict[str, str]:
    return {
        **sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S="100"),
        "WACAMP_DATABASE_URL": sqlite_url,
        # a killed run holds its campaign (and its claimed rows) until its lease expires: keep that short
        "WACAMP_DISPATCH__LEASE_S": "2",
    }


def recipients_for(kills: int) -> list[str]:
    """Enough for every kill to land mid-send (a kill leaves its claimed rows to the next run)."""
    return phones(100 + 300 * kills)


async def check(engine: Engine, campaign_id: int, sandbox: ServedSandbox, log: CrashLog, total: int) -> Audit:
    stats = await sandbox.stats()
    result = audit(engine, [campaign_id], stats)
    record("crash_points", log.kills)
    record("crash_points_mid_send", log.mid_send)
    record("crash_points_during_start", log.during_start)
    record("restarts", log.restarts)
    record("recipients_checked", total)
    record("duplicates", result.duplicates)
    record("unrecorded", len(result.unrecorded) + len(result.phantom) + len(result.unsettled))
    record("unknown_after_crash", result.by_state["unknown"])
    record("unknown_after_crash_reached_platform", result.unknown_accepted)
    assert log.kills >= 1, log
    assert result.clean, (result, log.moments)
    assert sum(result.by_state.values()) == total
    assert set(result.by_state) <= {"accepted", "unknown"}, result.by_state
    accepted, unknown = result.by_state["accepted"], result.by_state["unknown"]
    assert accepted <= stats["accepted"] == len(stats["accepted_per_recipient"]) <= accepted + unknown
    return result


@asynccontextmanager
async def receiving_webhooks(*, env: dict[str, str], cwd: Path) -> AsyncIterator[str]:
    """`wacamp webhooks serve --sandbox --no-process` for the block; its callback URL."""
    port = free_port()
    process = await start(
        "webhooks", "serve", "--sandbox", "--port", str(port), "--no-process", env=env, cwd=cwd
    )
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            assert process.returncode is None and time.monotonic() < deadline, "the receiver did not start"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/webhook"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=60)


async def settle_unknown(sandbox: ServedSandbox, *, env: dict[str, str], cwd: Path) -> int:
    """What an operator does after crashes: let status webhooks settle, then resend what is left."""
    deadline = time.monotonic() + 90
    while (await sandbox.stats())["webhooks"]["pending"] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    code, _, err = await run("webhooks", "process", env=env, cwd=cwd)
    assert code == 0, err
    await asyncio.sleep(1.1)
    code, out, err = await run(
        "campaigns", "resolve", "crash", "--resend-unknown", "--older-than", "1s", "--json", env=env, cwd=cwd
    )
    assert code == 0, err
    code, _, err = await run("campaigns", "run", "crash", env=env, cwd=cwd)
    assert code == 0, err
    return int(json.loads(out)["resent"])


async def crash_run_due(engine: Engine, sqlite_url: str, tmp_path: Path, *, kills: int, seed: int) -> Audit:
    """Kill run-due again and again; then settle the unknown rows through webhooks and resend the rest.

    Status webhooks (the row id travels in biz_opaque_callback_data) settle every unknown row the
    platform did accept; `campaigns resolve --resend-unknown` sends the others: in the end every
    recipient got the message exactly once.
    """
    receiver_env = {"WACAMP_DATABASE_URL": sqlite_url}
    async with receiving_webhooks(env=receiver_env, cwd=tmp_path) as webhook_url:
        shares = ("--not-on-whatsapp-share", "0", "--marketing-limit-share", "0")
        args = ("--mps", "0", "--pair-spacing-s", "0", "--webhook-url", webhook_url, *shares)
        async with served_sandbox(*args, cwd=tmp_path) as sandbox:
            env = env_for(sandbox, sqlite_url)
            recipients = recipients_for(kills)
            cid = make_campaign(
                engine,
                sandbox_settings(sandbox.base_url),
                name="crash",
                recipients=recipients,
                scheduled_at=utcnow(),
            )
            log = await crash_repeatedly(
                ["run-due"], env=env, cwd=tmp_path, engine=engine, campaign_id=cid, kills=kills, seed=seed
            )
            await run_due_until_completed(env=env, cwd=tmp_path, engine=engine, campaign_id=cid)
            await check(engine, cid, sandbox, log, len(recipients))
            resent = await settle_unknown(sandbox, env=env, cwd=tmp_path)
            stats = await sandbox.stats()
    settled = audit(engine, [cid], stats)
    record("unknown_resent_after_webhooks", resent)
    record("recipients_never_reached_after_settling", len(recipients) - len(stats["accepted_per_recipient"]))
    assert settled.clean, settled
    assert settled.by_state["unknown"] == 0, settled.by_state
    assert sorted(stats["accepted_per_recipient"]) == sorted(p.lstrip("+") for p in recipients)
    assert set(stats["accepted_per_recipient"].values()) == {1}
    return settled


async def test_run_due_killed_at_random_moments_then_restarted_sends_nobody_twice_and_loses_nobody(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    settled = await crash_run_due(sqlite_engine, sqlite_url, tmp_path, kills=QUICK_KILLS, seed=1)
    assert settled.clean and settled.duplicates == 0, settled
    assert settled.by_state["unknown"] == 0, settled.by_state


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_run_due_killed_fifteen_times_then_restarted_sends_nobody_twice_and_loses_nobody(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    settled = await crash_run_due(sqlite_engine, sqlite_url, tmp_path, kills=SLOW_KILLS, seed=2)
    assert settled.clean and settled.duplicates == 0, settled
    assert settled.by_state["unknown"] == 0, settled.by_state


async def wait_serving(log_file: Path, worker: asyncio.subprocess.Process) -> None:
    """Until the worker logged where it serves /metrics (its signal handlers are in place by then)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert worker.returncode is None, "the worker died"
        if log_file.exists() and "metrics_url" in log_file.read_text():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never said where it serves")


async def finish_with_worker(engine: Engine, campaign_id: int, *, env: dict[str, str], cwd: Path) -> None:
    """A worker left running until the campaign completes, then stopped with SIGTERM (exit 0)."""
    log_file = cwd / "final-worker.log"
    worker = await start(
        "worker",
        "--poll-s",
        "0.2",
        "--metrics-port",
        "0",
        "--log-format",
        "json",
        "--log-file",
        str(log_file),
        env=env,
        cwd=cwd,
    )
    await wait_serving(log_file, worker)
    deadline = time.monotonic() + 90
    while campaign_state(engine, campaign_id) != "completed" and time.monotonic() < deadline:
        assert worker.returncode is None, "the worker died"
        await asyncio.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(worker.communicate(), timeout=60)
    assert worker.returncode == 0, err.decode()[-2000:]
    assert campaign_state(engine, campaign_id) == "completed"


async def crash_worker(engine: Engine, sqlite_url: str, tmp_path: Path, *, kills: int, seed: int) -> Audit:
    async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
        env = env_for(sandbox, sqlite_url)
        recipients = recipients_for(kills)
        cid = make_campaign(
            engine,
            sandbox_settings(sandbox.base_url),
            name="crash",
            recipients=recipients,
            scheduled_at=utcnow(),
        )
        args = ["worker", "--poll-s", "0.2", "--metrics-port", "0"]
        log = await crash_repeatedly(
            args, env=env, cwd=tmp_path, engine=engine, campaign_id=cid, kills=kills, seed=seed
        )
        await finish_with_worker(engine, cid, env=env, cwd=tmp_path)
        return await check(engine, cid, sandbox, log, len(recipients))


async def test_the_worker_killed_at_random_moments_then_restarted_sends_nobody_twice_and_loses_nobody(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    result = await crash_worker(sqlite_engine, sqlite_url, tmp_path, kills=2, seed=3)
    assert result.clean and result.duplicates == 0, result


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_the_worker_killed_fifteen_times_then_restarted_sends_nobody_twice_and_loses_nobody(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    result = await crash_worker(sqlite_engine, sqlite_url, tmp_path, kills=SLOW_KILLS, seed=4)
    assert result.clean and result.duplicates == 0, result


async def campaigns_run_exists(tmp_path: Path) -> bool:
    code, _, _ = await run("campaigns", "run", "--help", env={}, cwd=tmp_path)
    return code == 0


async def crash_campaigns_run(
    engine: Engine, sqlite_url: str, tmp_path: Path, *, kills: int, seed: int
) -> Audit:
    if not await campaigns_run_exists(tmp_path):
        pytest.skip("`wacamp campaigns run` is not in this build")
    async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
        env = env_for(sandbox, sqlite_url)
        recipients = recipients_for(kills)
        cid = make_campaign(engine, sandbox_settings(sandbox.base_url), name="crash", recipients=recipients)
        log = await crash_repeatedly(
            ["campaigns", "run", "crash"],
            env=env,
            cwd=tmp_path,
            engine=engine,
            campaign_id=cid,
            kills=kills,
            seed=seed,
        )
        for _ in range(40):
            code, _, err = await run("campaigns", "run", "crash", env=env, cwd=tmp_path)
            assert code in (0, 75), err
            if campaign_state(engine, cid) == "completed":
                break
            await asyncio.sleep(0.5)
        return await check(engine, cid, sandbox, log, len(recipients))


async def test_campaigns_run_killed_at_random_moments_then_run_again_sends_nobody_twice_and_loses_nobody(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    result = await crash_campaigns_run(sqlite_engine, sqlite_url, tmp_path, kills=2, seed=5)
    assert result.clean and result.duplicates == 0, result


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_campaigns_run_killed_fifteen_times_then_run_again_sends_nobody_twice_and_loses_nobody(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    result = await crash_campaigns_run(sqlite_engine, sqlite_url, tmp_path, kills=SLOW_KILLS, seed=6)
    assert result.clean and result.duplicates == 0, result

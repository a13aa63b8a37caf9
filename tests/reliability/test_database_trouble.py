"""Database trouble in the middle of a campaign: SQLite locked by another process, PostgreSQL restarted.

The run waits it out (`scheduler.sending.outage`) and completes in the same run, exit 0, with every
answer of the platform recorded (no accepted row `unknown`); killed during the trouble, the next
command replays the outcome journal. The ledger stays intact (`PRAGMA integrity_check`, the dedup
invariant), nobody is sent twice and nobody is left without a recorded state.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.dbtypes import utcnow
from tests.reliability.crashing import touched
from tests.reliability.record import record
from tests.reliability.support import Audit, audit, kill9, run, served_sandbox, start
from tests.scheduling_support import (
    MESSAGE,
    campaign_state,
    make_campaign,
    phones,
    sandbox_env,
    sandbox_settings,
)

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding SQLite's write lock (BEGIN IMMEDIATE) for `seconds`."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    return locker


def assert_ledger_intact(engine: Engine, campaign_id: int) -> None:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        rows = list(conn.execute(sa.select(MESSAGE).where(MESSAGE.c.campaign_id == campaign_id)))
    for row in rows:
        assert (row.dedup_hash is None) == (row.state in ("failed", "skipped")), row


async def wait_touched(
    engine: Engine, campaign_id: int, count: int, process: asyncio.subprocess.Process
) -> None:
    deadline = time.monotonic() + 60
    while touched(engine, campaign_id) < count and process.returncode is None:
        assert time.monotonic() < deadline, "the run never started sending"
        await asyncio.sleep(0.01)


async def run_due_to_completion(
    engine: Engine, campaign_id: int, *, env: dict[str, str], cwd: Path
) -> list[int]:
    codes = []
    for _ in range(30):
        process = await start("run-due", env=env, cwd=cwd)
        _, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode is not None
        codes.append(process.returncode)
        assert "Traceback" not in err.decode(), err.decode()
        if campaign_state(engine, campaign_id) == "completed":
            return codes
        await asyncio.sleep(0.5)
    raise AssertionError(f"not completed: {campaign_state(engine, campaign_id)}, exit codes {codes}")


def record_audit(result: Audit, recipients: int) -> None:
    record("database_faults")
    record("recipients_checked", recipients)
    record("duplicates", result.duplicates)
    record("unrecorded", len(result.unrecorded) + len(result.phantom) + len(result.unsettled))
    # accepted by the platform, but the answer never reached the ledger: the run could only say unknown
    record("unknown_after_database_fault", result.unknown_accepted)


def journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.outcomes-*.jsonl"))


def sqlite_run_env(base_url: str, sqlite_url: str, *, rate: int, busy_timeout_s: float) -> dict[str, str]:
    return {
        **sandbox_env(base_url, WACAMP_RATE_PER_S=str(rate)),
        "WACAMP_DATABASE_URL": sqlite_url,
        "WACAMP_DATABASE__BUSY_TIMEOUT_S": str(busy_timeout_s),
        "WACAMP_DISPATCH__LEASE_S": "2",
    }


COMMANDS = {
    "run-due": ["run-due"],
    "campaigns-run": ["campaigns", "run", "l"],
}


@pytest.mark.parametrize(
    ("hold_s", "busy_timeout_s", "command"),
    [
        (8.0, 1.0, "run-due"),
        pytest.param(8.0, 1.0, "campaigns-run", marks=pytest.mark.slow),
        pytest.param(45.0, 30.0, "run-due", marks=pytest.mark.slow),
    ],
    ids=["8s-run-due", "8s-campaigns-run", "45s-run-due"],
)
@pytest.mark.timeout(240)
async def test_a_write_lock_held_by_another_process_mid_run_is_waited_out_in_the_same_run(
    hold_s: float,
    busy_timeout_s: float,
    command: str,
    sqlite_engine: Engine,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """Locked past the busy timeout (8 s over 1 s; 45 s over 30 s): the run waits, completes, exit 0."""
    async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
        env = sqlite_run_env(sandbox.base_url, sqlite_url, rate=80, busy_timeout_s=busy_timeout_s)
        recipients = phones(80 * 4 + 80)
        cid = make_campaign(
            sqlite_engine,
            sandbox_settings(sandbox.base_url),
            name="l",
            recipients=recipients,
            scheduled_at=utcnow(),
        )
        process = await start(*COMMANDS[command], env=env, cwd=tmp_path)
        await wait_touched(sqlite_engine, cid, 120, process)
        locker = hold_write_lock(Path(sqlite_url.removeprefix("sqlite:///")), hold_s)
        _, err = await asyncio.wait_for(process.communicate(), timeout=200)
        locker.communicate(timeout=60)
        assert process.returncode == 0, err.decode()[-3000:]
        assert "the database answers again" in err.decode()
        assert campaign_state(sqlite_engine, cid) == "completed"
        assert_ledger_intact(sqlite_engine, cid)
        result = audit(sqlite_engine, [cid], await sandbox.stats())
    record_audit(result, len(recipients))
    assert result.clean, result
    assert result.unknown_accepted == 0, result
    assert sum(result.by_state.values()) == len(recipients)
    assert not journal_files(tmp_path), "the journal is deleted once its results are written"


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_worker_waits_out_a_write_lock_held_by_another_process_and_completes_the_campaign(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    """The worker uses the same dispatcher and writer: 8 s of lock over a 1 s busy timeout, no loss."""
    async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
        env = sqlite_run_env(sandbox.base_url, sqlite_url, rate=80, busy_timeout_s=1.0)
        recipients = phones(400)
        cid = make_campaign(
            sqlite_engine,
            sandbox_settings(sandbox.base_url),
            name="l",
            recipients=recipients,
            scheduled_at=utcnow(),
        )
        worker = await start("worker", "--poll-s", "0.2", "--metrics-port", "0", env=env, cwd=tmp_path)
        await wait_touched(sqlite_engine, cid, 120, worker)
        locker = hold_write_lock(Path(sqlite_url.removeprefix("sqlite:///")), 8.0)
        deadline = time.monotonic() + 120
        while campaign_state(sqlite_engine, cid) != "completed":
            assert worker.returncode is None and time.monotonic() < deadline, "the worker did not finish"
            await asyncio.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(worker.communicate(), timeout=60)
        locker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()[-3000:]
        result = audit(sqlite_engine, [cid], await sandbox.stats())
    record_audit(result, len(recipients))
    assert result.clean, result
    assert result.unknown_accepted == 0, result
    assert sum(result.by_state.values()) == len(recipients)


@pytest.mark.timeout(240)
async def test_killed_during_an_outage_the_journal_is_replayed_and_nothing_accepted_ends_unknown(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    """kill -9 while the database is locked: the results the run held are in the journal; the next
    command replays them before it sends, so every request the platform accepted ends `accepted`."""
    async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
        env = sqlite_run_env(sandbox.base_url, sqlite_url, rate=80, busy_timeout_s=1.0)
        recipients = phones(400)
        cid = make_campaign(
            sqlite_engine,
            sandbox_settings(sandbox.base_url),
            name="l",
            recipients=recipients,
            scheduled_at=utcnow(),
        )
        process = await start("run-due", env=env, cwd=tmp_path)
        await wait_touched(sqlite_engine, cid, 100, process)
        locker = hold_write_lock(Path(sqlite_url.removeprefix("sqlite:///")), 60)
        deadline = time.monotonic() + 30
        while not journal_files(tmp_path):
            assert time.monotonic() < deadline, "the run never journaled what it held"
            await asyncio.sleep(0.05)
        await asyncio.sleep(4)  # the claimed rows go out, their answers come back and are journaled
        assert await kill9(process)
        journaled = sum(len(path.read_text().splitlines()) for path in journal_files(tmp_path))
        locker.kill()
        locker.communicate(timeout=60)
        await run_due_to_completion(sqlite_engine, cid, env=env, cwd=tmp_path)
        assert_ledger_intact(sqlite_engine, cid)
        result = audit(sqlite_engine, [cid], await sandbox.stats())
    record("crash_points")
    record("crash_points_mid_send")
    record_audit(result, len(recipients))
    assert journaled > 0
    assert not journal_files(tmp_path), "the next command replayed the journal and deleted it"
    assert result.clean, result
    assert result.unknown_accepted == 0, result
    assert sum(result.by_state.values()) == len(recipients)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_an_outage_longer_than_outage_wait_s_stops_the_run_resumably_and_any_next_command_replays(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    """Locked for longer than `[database] outage_wait_s`: exit 75 with the journal kept; the next
    command (here `campaigns list`) replays it, and run-due completes the campaign."""
    async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
        env = {
            **sqlite_run_env(sandbox.base_url, sqlite_url, rate=80, busy_timeout_s=0.5),
            "WACAMP_DATABASE__OUTAGE_WAIT_S": "3",
        }
        recipients = phones(300)
        cid = make_campaign(
            sqlite_engine,
            sandbox_settings(sandbox.base_url),
            name="l",
            recipients=recipients,
            scheduled_at=utcnow(),
        )
        process = await start("run-due", env=env, cwd=tmp_path)
        await wait_touched(sqlite_engine, cid, 100, process)
        locker = hold_write_lock(Path(sqlite_url.removeprefix("sqlite:///")), 60)
        _, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 75, err.decode()[-3000:]
        assert "the database did not answer" in err.decode()
        kept = journal_files(tmp_path)
        assert kept and all(path.read_text() for path in kept)
        locker.kill()
        locker.communicate(timeout=60)
        code, _, listed_err = await run("campaigns", "list", "--json", env=env, cwd=tmp_path)
        assert code == 0, listed_err
        assert "replayed" in listed_err and not journal_files(tmp_path)
        await run_due_to_completion(sqlite_engine, cid, env=env, cwd=tmp_path)
        assert_ledger_intact(sqlite_engine, cid)
        result = audit(sqlite_engine, [cid], await sandbox.stats())
    record_audit(result, len(recipients))
    assert result.clean, result
    assert result.unknown_accepted == 0, result


PG_VERSION = (
    next(iter(sorted(p.name for p in Path("/etc/postgresql").glob("*"))), "")
    if Path("/etc/postgresql").exists()
    else ""
)


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False).returncode == 0


def pg_cluster(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main", action],
        check=False,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def restartable_postgres(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database on a cluster this test may restart; the cluster is up again after."""
    if not PG_VERSION or subprocess.run(["which", "pg_ctlcluster"], capture_output=True).returncode:
        pytest.skip("pg_ctlcluster is not available: cannot restart PostgreSQL here")
    try:
        yield postgres_url
    finally:
        for _ in range(60):
            if pg_ready():
                break
            pg_cluster("start")
            time.sleep(1)
        assert pg_ready(), "PostgreSQL did not come back"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(400)
async def test_postgresql_restarted_mid_campaign_is_waited_out_and_the_run_completes(
    restartable_postgres: str, tmp_path: Path
) -> None:
    engine = make_engine(restartable_postgres)
    upgrade(engine)
    try:
        async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
            env = {
                **sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S="80"),
                "WACAMP_DATABASE_URL": restartable_postgres,
                "WACAMP_DISPATCH__LEASE_S": "2",
                "WACAMP_DATABASE__JOURNAL_DIR": str(tmp_path / "state"),
            }
            recipients = phones(800)
            cid = make_campaign(
                engine,
                sandbox_settings(sandbox.base_url),
                name="pg",
                recipients=recipients,
                scheduled_at=utcnow(),
            )
            process = await start("run-due", env=env, cwd=tmp_path)
            await wait_touched(engine, cid, 100, process)
            engine.dispose()
            pg_cluster("restart")
            _, err = await asyncio.wait_for(process.communicate(), timeout=300)
            for _ in range(60):
                if pg_ready():
                    break
                await asyncio.sleep(1)
            engine.dispose()
            assert process.returncode == 0, err.decode()[-3000:]
            assert campaign_state(engine, cid) == "completed"
            assert_ledger_intact(engine, cid)
            result = audit(engine, [cid], await sandbox.stats())
        record_audit(result, len(recipients))
        assert result.clean, result
        assert result.unknown_accepted == 0, result
        assert sum(result.by_state.values()) == len(recipients)
    finally:
        engine.dispose()

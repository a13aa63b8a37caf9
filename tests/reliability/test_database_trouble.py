"""Database trouble in the middle of a campaign: SQLite locked by another process, PostgreSQL restarted.

The run either waits (SQLite busy timeout) or stops resumably; either way the ledger is intact
(`PRAGMA integrity_check`, the dedup invariant) and the next run completes the campaign with nobody
sent twice and nobody without a recorded state.
"""

from __future__ import annotations

import asyncio
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
from tests.reliability.support import audit, served_sandbox, start
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


@pytest.mark.parametrize(
    ("hold_s", "busy_timeout_s", "waits"),
    [(2.0, 20.0, True), (6.0, 1.0, False)],
    ids=["shorter-than-busy-timeout", "longer-than-busy-timeout"],
)
async def test_a_write_lock_held_by_another_process_mid_run_is_waited_for_or_stops_the_run_resumably(
    hold_s: float, busy_timeout_s: float, waits: bool, sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
        env = {
            **sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S="100"),
            "WACAMP_DATABASE_URL": sqlite_url,
            "WACAMP_DATABASE__BUSY_TIMEOUT_S": str(busy_timeout_s),
            "WACAMP_DISPATCH__LEASE_S": "2",
        }
        recipients = phones(500)
        cid = make_campaign(
            sqlite_engine,
            sandbox_settings(sandbox.base_url),
            name="l",
            recipients=recipients,
            scheduled_at=utcnow(),
        )
        process = await start("run-due", env=env, cwd=tmp_path)
        await wait_touched(sqlite_engine, cid, 50, process)
        locker = hold_write_lock(Path(sqlite_url.removeprefix("sqlite:///")), hold_s)
        _, err = await asyncio.wait_for(process.communicate(), timeout=120)
        locker.communicate(timeout=60)
        first_code = process.returncode
        assert_ledger_intact(sqlite_engine, cid)
        if waits:
            assert first_code == 0, err.decode()
            assert campaign_state(sqlite_engine, cid) == "completed"
        else:
            assert first_code in (0, 1, 75), err.decode()
            await run_due_to_completion(sqlite_engine, cid, env=env, cwd=tmp_path)
        assert_ledger_intact(sqlite_engine, cid)
        result = audit(sqlite_engine, [cid], await sandbox.stats())
    record("database_faults")
    record("recipients_checked", len(recipients))
    record("duplicates", result.duplicates)
    record("unrecorded", len(result.unrecorded) + len(result.phantom) + len(result.unsettled))
    # accepted by the platform, but the answer was never written: the next run could only say unknown
    record("unknown_after_database_fault", result.unknown_accepted)
    assert result.clean, result
    assert sum(result.by_state.values()) == len(recipients)


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
async def test_postgresql_restarted_mid_campaign_stops_the_run_resumably_and_the_next_completes_it(
    restartable_postgres: str, tmp_path: Path
) -> None:
    engine = make_engine(restartable_postgres)
    upgrade(engine)
    try:
        async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=tmp_path) as sandbox:
            env = {
                **sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S="100"),
                "WACAMP_DATABASE_URL": restartable_postgres,
                "WACAMP_DISPATCH__LEASE_S": "2",
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
            _, err = await asyncio.wait_for(process.communicate(), timeout=180)
            # the interrupted run may log the writer's death with its traceback; it must just stop
            assert process.returncode in (0, 1, 75), err.decode()
            for _ in range(60):
                if pg_ready():
                    break
                await asyncio.sleep(1)
            engine.dispose()
            assert_ledger_intact(engine, cid)
            await run_due_to_completion(engine, cid, env=env, cwd=tmp_path)
            result = audit(engine, [cid], await sandbox.stats())
        record("database_faults")
        record("recipients_checked", len(recipients))
        record("duplicates", result.duplicates)
        record("unrecorded", len(result.unrecorded) + len(result.phantom) + len(result.unsettled))
        record("unknown_after_database_fault", result.unknown_accepted)
        assert result.clean, result
        assert sum(result.by_state.values()) == len(recipients)
    finally:
        engine.dispose()

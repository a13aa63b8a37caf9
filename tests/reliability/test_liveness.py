"""Liveness from the database, never from a pid (issue #13, item 4).

A `campaigns run` killed with SIGKILL and never reaped by its parent is a zombie: its pid still
answers `kill(pid, 0)`. Its campaign must be free again as soon as the run's lease expires on the
database's clock, not when (or if) somebody reaps the zombie, on SQLite and PostgreSQL: a new run
started meanwhile waits for that expiry (a lease renewed meanwhile would refuse it) and then sends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.db import make_engine, upgrade, write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import LockedError
from campaigns.core.models import CAMPAIGN_RUN_TABLE as CAMPAIGN_RUN
from scheduler.sending.leases import db_now
from scheduler.sending.run_records import close_crashed_runs
from tests.conftest import wacamp_executable
from tests.reliability.support import clean_env
from tests.scheduling_support import (
    campaign_state,
    make_campaign,
    phones,
    sandbox_env,
    sandbox_settings,
    states,
)

LEASE_S = 6.0


@pytest.fixture
def migrated(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sandbox_url(tmp_path: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [wacamp_executable(), "sandbox", "serve", "--port", "0", "--mps", "0", "--pair-spacing-s", "0"],
        cwd=tmp_path,
        env=clean_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    yield process.stdout.readline().strip().removeprefix("sandbox listening on ")
    process.terminate()
    process.communicate(timeout=20)


def is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] == "Z"


def run_lease_left_s(engine: Engine, campaign_id: int) -> float:
    """Seconds until the open run's lease expires, on the database's clock."""
    with engine.connect() as conn:
        until = conn.scalar(
            sa.select(sa.func.max(CAMPAIGN_RUN.c.lease_expires_at)).where(
                CAMPAIGN_RUN.c.campaign_id == campaign_id, CAMPAIGN_RUN.c.finished_at.is_(None)
            )
        )
        assert until is not None, "the killed run left no open run with a lease"
        return (until - db_now(conn)).total_seconds()


def wacamp(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [wacamp_executable(), *args], env=clean_env(env), cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(180)
def test_a_zombie_holder_does_not_block_a_new_run_beyond_its_lease(
    migrated: Engine, db_url: str, sandbox_url: str, tmp_path: Path
) -> None:
    env = {
        **sandbox_env(sandbox_url, WACAMP_RATE_PER_S="50"),
        "WACAMP_DATABASE_URL": db_url,
        "WACAMP_DISPATCH__LEASE_S": str(LEASE_S),
    }
    cid = make_campaign(migrated, sandbox_settings(sandbox_url), name="zombie", recipients=phones(200))
    holder = subprocess.Popen(
        [wacamp_executable(), "campaigns", "run", "zombie"],
        env=clean_env(env),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while states(migrated, cid).get("accepted", 0) < 20:
            assert holder.poll() is None and time.monotonic() < deadline, "the holder never sent"
            time.sleep(0.05)
        os.kill(holder.pid, signal.SIGKILL)  # and never reaped while the next runs start
        time.sleep(0.3)
        assert is_zombie(holder.pid)

        with pytest.raises(LockedError, match="lease runs until"), write_transaction(migrated) as conn:
            # while the lease lives the holder could be alive: a new run is refused (exit 75)
            close_crashed_runs(conn, campaign=control.reload(conn, cid), now=utcnow())
        assert run_lease_left_s(migrated, cid) > 0
        done = wacamp("campaigns", "run", "zombie", env=env, cwd=tmp_path)  # waits for the lease, then sends
        assert done.returncode == 0, done.stderr
        assert is_zombie(holder.pid), "the holder must still be an unreaped zombie"
        assert campaign_state(migrated, cid) == "completed"
        assert set(states(migrated, cid)) <= {"accepted", "unknown"}
    finally:
        holder.kill()
        holder.wait()

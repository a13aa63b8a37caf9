"""Kill -9 a sending command at seeded random moments, restart it, and count what was tried."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.reliability.support import kill9, run, start
from tests.scheduling_support import MESSAGE, campaign_state


def touched(engine: Engine, campaign_id: int) -> int:
    """Rows of the campaign that left `planned` (claimed, accepted, failed…)."""
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(
            MESSAGE.c.campaign_id == campaign_id, MESSAGE.c.state != "planned"
        )
        return int(conn.scalar(query) or 0)


def in_flight(engine: Engine, campaign_id: int) -> int:
    """Rows claimed (`sending`) and not settled: what a kill leaves behind."""
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(
            MESSAGE.c.campaign_id == campaign_id, MESSAGE.c.state == "sending"
        )
        return int(conn.scalar(query) or 0)


@dataclass
class CrashLog:
    """What the kills hit."""

    kills: int = 0
    #: Kills that left claimed rows behind (the process was between claim and result).
    mid_send: int = 0
    #: Kills while the process was still starting (nothing claimed yet by it).
    during_start: int = 0
    restarts: int = 0
    moments: list[str] = field(default_factory=list)


async def _wait_moment(
    process: asyncio.subprocess.Process, *, engine: Engine, campaign_id: int, rng: random.Random
) -> str:
    """Wait for a seeded moment: early (start-up) or after a random number of rows moved."""
    if rng.random() < 0.25:
        delay_s = rng.uniform(0.0, 1.5)
        await _sleep_while_running(process, delay_s)
        return f"t+{delay_s:.2f}s"
    target = touched(engine, campaign_id) + rng.randint(1, 80)
    deadline = time.monotonic() + 30
    while process.returncode is None and time.monotonic() < deadline:
        if touched(engine, campaign_id) >= target:
            break
        await asyncio.sleep(0.01)
    extra_s = rng.uniform(0.0, 0.05)
    await _sleep_while_running(process, extra_s)
    return f"rows>={target}+{extra_s * 1000:.0f}ms"


async def _sleep_while_running(process: asyncio.subprocess.Process, delay_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(process.wait()), timeout=delay_s)


async def crash_repeatedly(
    args: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    engine: Engine,
    campaign_id: int,
    kills: int,
    seed: int,
) -> CrashLog:
    """Start `wacamp args`, kill -9 it at a seeded moment, `kills` times (fewer if the work runs out)."""
    rng = random.Random(seed)
    log = CrashLog()
    for _ in range(kills):
        if campaign_state(engine, campaign_id) == "completed":
            break
        before = touched(engine, campaign_id)
        process = await start(*args, env=env, cwd=cwd)
        moment = await _wait_moment(process, engine=engine, campaign_id=campaign_id, rng=rng)
        if not await kill9(process):
            log.restarts += 1
            continue
        log.kills += 1
        log.restarts += 1
        log.moments.append(moment)
        if in_flight(engine, campaign_id):
            log.mid_send += 1
        elif touched(engine, campaign_id) == before:
            log.during_start += 1
    return log


async def run_due_until_completed(
    *, env: dict[str, str], cwd: Path, engine: Engine, campaign_id: int, attempts: int = 40
) -> int:
    """`wacamp run-due` again and again (stale leases expire meanwhile) until the campaign completes."""
    for attempt in range(1, attempts + 1):
        code, _, err = await run("run-due", "--json", env=env, cwd=cwd)
        assert code in (0, 75), err
        if campaign_state(engine, campaign_id) == "completed":
            return attempt
        await asyncio.sleep(0.5)
    raise AssertionError(f"campaign {campaign_id} did not complete: {campaign_state(engine, campaign_id)}")

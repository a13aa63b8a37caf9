"""kill -9 of `wacamp webhooks serve` at seeded random moments while signed POSTs arrive.

A client plays the platform: it POSTs one signed status per message from several connections,
records which POSTs were answered 200, and POSTs again whatever got no answer (as the platform
redelivers). The receiver is killed and restarted under that load. Afterwards every body answered
200 is in `webhook_inbox`, every inbox row is processed, and every message whose status was answered
200 is `delivered` in the ledger: nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.models import WEBHOOK_INBOX_TABLE as INBOX
from scheduler.webhooks.signature import HEADER, sign
from tests.ledger_factory import Seeded, seed_campaign, status_body
from tests.reliability.record import record
from tests.reliability.support import free_port, kill9, listening, run, start
from tests.scheduling_support import MESSAGE

SECRET = "sandbox-secret"


@dataclass
class Platform:
    """The client side: bodies to deliver, and which were answered 200."""

    url: str
    total: int
    pending: asyncio.Queue[tuple[int, bytes]] = field(default_factory=asyncio.Queue)
    acknowledged: dict[int, bytes] = field(default_factory=dict)
    attempts: int = 0
    unanswered: int = 0

    async def deliver(self, session: aiohttp.ClientSession) -> None:
        while True:
            message_id, body = await self.pending.get()
            self.attempts += 1
            try:
                headers = {HEADER: sign(SECRET, body), "Content-Type": "application/json"}
                async with session.post(self.url, data=body, headers=headers) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if status == 200:
                self.acknowledged[message_id] = body
            else:
                self.unanswered += 1
                await asyncio.sleep(0.05)
                self.pending.put_nowait((message_id, body))
            self.pending.task_done()


async def serve(port: int, *, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    process = await start("webhooks", "serve", "--sandbox", "--port", str(port), env=env, cwd=cwd)
    deadline = time.monotonic() + 30
    while not listening(port):
        assert process.returncode is None and time.monotonic() < deadline, "the receiver did not start"
        await asyncio.sleep(0.02)
    return process


def bodies(seeded: Seeded) -> list[tuple[int, bytes]]:
    return [
        (message_id, json.dumps(status_body(wamid=wamid, status="delivered", recipient=phone[1:])).encode())
        for message_id, phone, wamid in seeded.messages
    ]


async def kill_and_restart(
    platform: Platform, *, port: int, env: dict[str, str], cwd: Path, kills: int, seed: int
) -> int:
    rng = random.Random(seed)
    process = await serve(port, env=env, cwd=cwd)
    done = 0
    step = max(platform.total // (kills + 1), 2)
    for _ in range(kills):
        # a seeded moment under load: after a random number of further acknowledgements
        target = len(platform.acknowledged) + rng.randint(1, step)
        while len(platform.acknowledged) < min(target, platform.total):
            await asyncio.sleep(0.002)
        if len(platform.acknowledged) == platform.total:
            break
        done += int(await kill9(process))
        process = await serve(port, env=env, cwd=cwd)
    await asyncio.wait_for(platform.pending.join(), timeout=120)
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()[-2000:]
    return done


async def crash_receiver(engine: Engine, sqlite_url: str, tmp_path: Path, *, count: int, kills: int) -> None:
    seeded = seed_campaign(engine, count=count)
    env = {"WACAMP_DATABASE_URL": sqlite_url}
    port = free_port()
    platform = Platform(url=f"http://127.0.0.1:{port}/webhook", total=count)
    for item in bodies(seeded):
        platform.pending.put_nowait(item)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        clients = [asyncio.create_task(platform.deliver(session)) for _ in range(8)]
        try:
            killed = await kill_and_restart(
                platform, port=port, env=env, cwd=tmp_path, kills=kills, seed=count
            )
        finally:
            for client in clients:
                client.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
    code, _, err = await run("webhooks", "process", "--json", env=env, cwd=tmp_path)
    assert code == 0, err
    with engine.connect() as conn:
        stored = {row.body for row in conn.execute(sa.select(INBOX.c.body))}
        unprocessed = conn.scalar(sa.select(sa.func.count()).where(INBOX.c.processed_at.is_(None)))
        delivered = set(
            conn.scalars(
                sa.select(MESSAGE.c.id).where(
                    MESSAGE.c.campaign_id == seeded.campaign_id, MESSAGE.c.state == "delivered"
                )
            )
        )
    lost = [mid for mid, body in platform.acknowledged.items() if body.decode() not in stored]
    not_applied = sorted(set(platform.acknowledged) - delivered)
    record("crash_points", killed)
    record("webhook_posts", platform.attempts)
    record("webhook_posts_acknowledged", len(platform.acknowledged))
    record("webhook_posts_unanswered", platform.unanswered)
    record("webhook_lost_after_200", len(lost) + len(not_applied))
    assert killed >= 1
    assert len(platform.acknowledged) == count
    assert lost == [] and not_applied == []
    assert unprocessed == 0


async def test_the_receiver_killed_under_load_loses_no_webhook_it_answered_200(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    await crash_receiver(sqlite_engine, sqlite_url, tmp_path, count=400, kills=4)


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_the_receiver_killed_twenty_times_under_load_loses_no_webhook_it_answered_200(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    await crash_receiver(sqlite_engine, sqlite_url, tmp_path, count=3000, kills=20)

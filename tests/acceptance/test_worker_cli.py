"""The installed `wacamp worker`: sends due campaigns, answers /healthz, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
from sqlalchemy.engine import Engine

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


async def start(*args: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    return await asyncio.create_subprocess_exec(
        wacamp_executable(),
        *args,
        env={**clean, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def health_url(log_file: Path, *, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_file.exists():
            for line in log_file.read_text().splitlines():
                record = json.loads(line)
                if "metrics_url" in record:
                    return str(record["metrics_url"]).removesuffix("/metrics")
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never said where it serves")


async def test_the_worker_sends_what_is_due_and_stops_cleanly_on_sigterm_and_a_second_one_refuses(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        env = {**sandbox_env(sandbox.base_url), "WACAMP_DATABASE_URL": sqlite_url}
        cid = make_campaign(
            sqlite_engine,
            sandbox_settings(sandbox.base_url),
            name="w",
            recipients=phones(25),
            scheduled_at=utcnow(),
        )
        log_file = tmp_path / "worker.log"
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
            cwd=tmp_path,
        )
        try:
            url = await health_url(log_file)
            async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
                assert response.status == 200
            deadline = time.monotonic() + 30
            while campaign_state(sqlite_engine, cid) != "completed":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            second = await start("worker", "--metrics-port", "0", env=env, cwd=tmp_path)
            _, err = await asyncio.wait_for(second.communicate(), timeout=30)
            assert second.returncode == 75
            assert b"already sending" in err
            worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.communicate(), timeout=30)
            assert worker.returncode == 0
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    assert states(sqlite_engine, cid) == {"accepted": 25}
    messages = [json.loads(line)["message"] for line in log_file.read_text().splitlines()]
    assert "worker stopped" in messages

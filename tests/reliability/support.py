"""Processes, a sandbox served by the CLI, and the audit that compares the ledger with the sandbox."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox.config import SandboxConfig
from sandbox.server import RunningSandbox, running_sandbox
from tests.conftest import wacamp_executable
from tests.scheduling_support import MESSAGE

#: Ledger states that say the platform accepted the message.
ACCEPTED_STATES = frozenset({"accepted", "sent", "delivered", "read"})
#: States a row may rest in once nothing runs any more.
FINAL_STATES = ACCEPTED_STATES | {"unknown", "failed", "skipped"}


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any WACAMP_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def start(*args: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    """Start the installed `wacamp` with `args` (stdout and stderr piped)."""
    return await asyncio.create_subprocess_exec(
        wacamp_executable(),
        *args,
        env=clean_env(env),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run(*args: str, env: dict[str, str], cwd: Path, timeout_s: float = 100) -> tuple[int, str, str]:
    """Run `wacamp args` to its end: exit code, stdout, stderr."""
    process = await start(*args, env=env, cwd=cwd)
    out, err = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def kill9(process: asyncio.subprocess.Process) -> bool:
    """SIGKILL `process` if it still runs (True) and reap it; its pipes are drained."""
    killed = process.returncode is None
    if killed:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
    await process.communicate()
    return killed


@dataclass
class ServedSandbox:
    """`wacamp sandbox serve` in a subprocess: its URL and its `/_sandbox/stats`."""

    process: asyncio.subprocess.Process
    base_url: str

    async def stats(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.base_url}/_sandbox/stats") as response,
        ):
            assert response.status == 200
            data: dict[str, Any] = await response.json()
            return data


@dataclass
class InProcessSandbox:
    """A sandbox in the test's event loop (for fault settings the CLI does not expose)."""

    running: RunningSandbox

    @property
    def base_url(self) -> str:
        return self.running.base_url

    async def stats(self) -> dict[str, Any]:
        return self.running.stats().to_json()


@asynccontextmanager
async def in_process_sandbox(config: SandboxConfig) -> AsyncIterator[InProcessSandbox]:
    async with running_sandbox(config) as running:
        yield InProcessSandbox(running)


@asynccontextmanager
async def served_sandbox(*args: str, cwd: Path) -> AsyncIterator[ServedSandbox]:
    """`wacamp sandbox serve --port 0 args...` until the block ends (SIGTERM, then reaped)."""
    process = await start("sandbox", "serve", "--port", "0", *args, env={}, cwd=cwd)
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
    if not line.startswith("sandbox listening on "):
        _, err = await process.communicate()
        raise AssertionError(f"the sandbox did not start: {line!r} {err.decode()[-2000:]}")
    try:
        yield ServedSandbox(process, line.removeprefix("sandbox listening on "))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with suppress(TimeoutError):
            await asyncio.wait_for(process.communicate(), timeout=15)
        await kill9(process)


def ledger_rows(engine: Engine, campaign_id: int) -> list[Any]:
    with engine.connect() as conn:
        query = sa.select(MESSAGE.c.phone, MESSAGE.c.state, MESSAGE.c.wamid, MESSAGE.c.error_code)
        return list(conn.execute(query.where(MESSAGE.c.campaign_id == campaign_id)))


@dataclass
class Audit:
    """The ledger of one or more campaigns against what the sandbox accepted."""

    duplicates: int = 0
    #: Recipients the sandbox accepted whose row does not say so (planned, sending, failed before send).
    unrecorded: list[str] = field(default_factory=list)
    #: Rows that say accepted while the sandbox never accepted that recipient.
    phantom: list[str] = field(default_factory=list)
    #: Rows still `sending` or `planned` when nothing should run any more.
    unsettled: list[str] = field(default_factory=list)
    by_state: Counter[str] = field(default_factory=Counter)
    #: Rows left `unknown` whose request the sandbox did accept (a reset connection, a kill).
    unknown_accepted: int = 0

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.unrecorded or self.phantom or self.unsettled)


def audit(engine: Engine, campaign_ids: list[int], stats: dict[str, Any], *, settled: bool = True) -> Audit:
    """Compare every ledger row of `campaign_ids` with the sandbox's acceptances (one campaign per phone)."""
    per_recipient: dict[str, int] = stats["accepted_per_recipient"]
    result = Audit(duplicates=int(stats["duplicates"]) + sum(1 for n in per_recipient.values() if n > 1))
    seen: set[str] = set()
    for campaign_id in campaign_ids:
        for row in ledger_rows(engine, campaign_id):
            phone = row.phone.lstrip("+")
            seen.add(phone)
            result.by_state[row.state] += 1
            accepted = per_recipient.get(phone, 0)
            result.unknown_accepted += int(row.state == "unknown" and accepted > 0)
            if row.state in ACCEPTED_STATES and accepted == 0:
                result.phantom.append(phone)
            if accepted and (
                row.state in ("planned", "sending", "skipped") or (row.state == "failed" and not row.wamid)
            ):
                result.unrecorded.append(phone)
            if settled and row.state not in FINAL_STATES:
                result.unsettled.append(f"{phone}:{row.state}")
    result.unrecorded.extend(sorted(set(per_recipient) - seen))
    return result

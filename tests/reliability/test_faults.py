"""Every sandbox fault scenario, through `wacamp run-due`, ends with exact accounting.

The sandbox runs as `wacamp sandbox serve --faults NAME` in its own process; the ledger is compared
with its `/_sandbox/stats`: what it accepted is exactly the rows that say accepted plus the `unknown`
rows whose answer was lost (a connection reset after acceptance), nobody twice, nothing unsettled.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from sandbox.config import FaultSettings, SandboxConfig
from tests.reliability.record import record
from tests.reliability.support import Audit, audit, in_process_sandbox, run, served_sandbox
from tests.scheduling_support import campaign_state, make_campaign, phones, sandbox_env, sandbox_settings

QUICK = FaultSettings(storm_every_s=1.5, storm_length_s=0.4, pause_after_sends=30)


class Sandbox(Protocol):
    base_url: str

    async def stats(self) -> dict[str, Any]: ...


def quick_sandbox(faults: str, *, seed: int, cwd: Path) -> AbstractAsyncContextManager[Sandbox]:
    """In-process, with storms every 1.5 s and a pause after 30 sends (the default tier)."""
    config = SandboxConfig(
        faults=tuple(faults.split(",")), fault_settings=QUICK, seed=seed, pair_spacing_s=0, mps=0
    )
    return in_process_sandbox(config)


def cli_sandbox(faults: str, *, seed: int, cwd: Path) -> AbstractAsyncContextManager[Sandbox]:
    """`wacamp sandbox serve --faults ...` with its default fault settings (the slow tier)."""
    return served_sandbox("--faults", faults, "--seed", str(seed), "--pair-spacing-s", "0", cwd=cwd)


async def send_under(
    sandbox_cm: AbstractAsyncContextManager[Sandbox],
    *,
    engine: Engine,
    url: str,
    tmp_path: Path,
    recipients: int,
    rate_per_s: int = 80,
) -> tuple[Audit, dict[str, Any], str]:
    async with sandbox_cm as sandbox:
        env = {
            **sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S=str(rate_per_s)),
            "WACAMP_DATABASE_URL": url,
            "WACAMP_LIMITS__BACKOFF_BASE_S": "0.2",
            "WACAMP_LIMITS__BACKOFF_MAX_S": "1",
            "WACAMP_DISPATCH__THROTTLE_RECOVERY_S": "3",
        }
        cid = make_campaign(
            engine,
            sandbox_settings(sandbox.base_url),
            name="f",
            recipients=phones(recipients),
            scheduled_at=utcnow(),
        )
        final = await until_settled(engine, cid, env=env, cwd=tmp_path)
        stats = await sandbox.stats()
    result = audit(engine, [cid], stats, settled=final == "completed")
    record("fault_scenarios")
    record("recipients_checked", recipients)
    record("duplicates", result.duplicates)
    record("unrecorded", len(result.unrecorded) + len(result.phantom) + len(result.unsettled))
    return result, stats, final


async def until_settled(engine: Engine, cid: int, *, env: dict[str, str], cwd: Path) -> str:
    """run-due until the campaign completes or pauses (a paused campaign waits for a person)."""
    for _ in range(20):
        code, _, err = await run("run-due", "--json", env=env, cwd=cwd)
        state = campaign_state(engine, cid)
        # a campaign stopped by the platform (template paused) is an error for run-due: exit 1
        assert code in (0, 75) or (code == 1 and state == "paused"), err
        if state in ("completed", "paused"):
            return state
        await asyncio.sleep(0.5)
    raise AssertionError(f"the campaign neither completed nor paused: {campaign_state(engine, cid)}")


def assert_exact(result: Audit, stats: dict[str, Any]) -> None:
    assert result.clean, result
    assert stats["accepted"] == result.by_state["accepted"] + result.unknown_accepted, (result, stats)
    assert result.by_state["unknown"] <= stats["resets_after_accept"], (result, stats)


def assert_fault_seen(fault: str, result: Audit, stats: dict[str, Any]) -> None:
    assert set(result.by_state) <= {"accepted", "unknown", "failed"}
    if "throttle-storm" in fault:
        assert stats["errors_by_code"].get("130429", 0) > 0, "the storm never hit the run"
    if "flaky" in fault:
        assert {"131000", "131016"} & set(stats["errors_by_code"]), stats["errors_by_code"]


FAULTS = ["throttle-storm", "flaky", "slow"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_campaign_under_a_fault_completes_and_the_ledger_matches_the_sandbox_exactly(
    fault: str, sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox = quick_sandbox(fault, seed=11, cwd=tmp_path)
    # a storm comes once per 1.5 s at a seeded offset: 400 recipients at 150/s outlast a whole period
    recipients = 400 if fault == "throttle-storm" else 200
    result, stats, final = await send_under(
        sandbox,
        engine=sqlite_engine,
        url=sqlite_url,
        tmp_path=tmp_path,
        recipients=recipients,
        rate_per_s=150,
    )
    assert final == "completed"
    assert_exact(result, stats)
    assert_fault_seen(fault, result, stats)


async def test_a_template_paused_mid_campaign_pauses_it_with_exact_accounting_and_no_further_send(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox = quick_sandbox("template-paused", seed=12, cwd=tmp_path)
    result, stats, final = await send_under(
        sandbox, engine=sqlite_engine, url=sqlite_url, tmp_path=tmp_path, recipients=100
    )
    assert final == "paused"
    assert_exact(result, stats)
    assert result.by_state["accepted"] == stats["accepted"] == 30  # the sandbox pauses after 30 sends
    assert set(result.by_state) <= {"accepted", "planned", "failed"}, result.by_state
    assert stats["errors_by_code"].get("132015", 0) >= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "seed"),
    [
        *((fault, 21) for fault in FAULTS),
        ("throttle-storm,flaky,slow", 21),
        ("throttle-storm,flaky,slow", 22),
    ],
)
async def test_the_served_sandbox_s_fault_scenarios_keep_the_accounting_exact_over_seeds(
    fault: str, seed: int, sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox = cli_sandbox(fault, seed=seed, cwd=tmp_path)
    # storms come once per 5 s at a seeded offset: 800 recipients at 80/s outlast a whole period
    recipients = 800 if "throttle-storm" in fault else 500
    result, stats, final = await send_under(
        sandbox, engine=sqlite_engine, url=sqlite_url, tmp_path=tmp_path, recipients=recipients
    )
    assert final == "completed"
    assert_exact(result, stats)
    assert_fault_seen(fault, result, stats)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21])
async def test_the_served_sandbox_pausing_the_template_leaves_exact_accounting(
    seed: int, sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox = cli_sandbox("template-paused", seed=seed, cwd=tmp_path)
    result, stats, final = await send_under(
        sandbox, engine=sqlite_engine, url=sqlite_url, tmp_path=tmp_path, recipients=200
    )
    assert final == "paused"
    assert_exact(result, stats)
    assert result.by_state["accepted"] == stats["accepted"] == 50

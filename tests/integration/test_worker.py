"""The worker against the sandbox: sends what comes due, serves /healthz and /metrics, stops on its event."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import aiohttp
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.models import ThrottleEvent, WebhookInbox
from campaigns.core.settings import Settings
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from scheduler.providers.factory import make_provider
from scheduler.runs.dispatch_runner import DispatcherRunner
from scheduler.runs.metrics import WorkerMetrics
from scheduler.runs.worker import Worker, build_app, serving
from tests.scheduling_support import campaign_state, make_campaign, phones, sandbox_settings, states


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def wait_for(predicate, *, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def worker_parts(engine: Engine, settings: Settings) -> tuple[Worker, WorkerMetrics, DispatcherRunner]:
    runner = DispatcherRunner(
        engine=engine, settings=settings, provider_for=lambda sender: make_provider(settings, sender)
    )
    metrics = WorkerMetrics(engine, settings, runner=runner)
    return Worker(engine, runner=runner, poll_s=0.1, metrics=metrics), metrics, runner


async def test_the_worker_sends_a_campaign_once_it_comes_due_and_reports_it_in_metrics(
    engine: Engine,
) -> None:
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0)) as sandbox:
        settings = sandbox_settings(sandbox.base_url, WACAMP_MESSAGING_TIER="TIER_250")
        cid = make_campaign(
            engine, settings, name="soon", recipients=phones(30), scheduled_at=utcnow() + timedelta(seconds=1)
        )
        with engine.begin() as conn:
            conn.execute(
                sa.insert(ThrottleEvent.__table__),
                [{"sender_name": "default", "code": 130429, "at": utcnow()}],
            )  # type: ignore[attr-defined]
            conn.execute(
                sa.insert(WebhookInbox.__table__),  # type: ignore[attr-defined]
                [{"body": "{}", "received_at": utcnow() - timedelta(seconds=90)}],
            )
        worker, metrics, runner = worker_parts(engine, settings)
        stop = asyncio.Event()
        async with serving(build_app(worker, metrics), host="127.0.0.1", port=0) as url:
            task = asyncio.create_task(worker.run(stop), name="worker")
            try:
                await wait_for(lambda: campaign_state(engine, cid) == "completed")
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{url}/healthz") as response:
                        assert response.status == 200
                        assert (await response.json())["database"] == "ok"
                    async with http.get(f"{url}/metrics") as response:
                        assert response.status == 200
                        found = samples(await response.text())
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=30)
                await runner.close()
    assert states(engine, cid) == {"accepted": 30}
    assert found[("wacamp_sends_total", (("outcome", "accepted"), ("sender", "default")))] == 30
    assert found[("wacamp_throttle_events_total", (("sender", "default"),))] == 1
    assert found[("wacamp_tier_budget_limit", (("portfolio", "default"),))] == 250
    assert found[("wacamp_tier_budget_remaining", (("portfolio", "default"),))] == 220
    assert found[("wacamp_webhook_lag_seconds", ())] >= 90
    assert found[("wacamp_sender_limit_per_s", (("sender", "default"),))] == 200
    assert ("wacamp_sender_rate_per_s", (("sender", "default"),)) in found


async def test_ledger_rows_of_active_campaigns_are_exported_by_state(engine: Engine) -> None:
    settings = sandbox_settings("http://127.0.0.1:9")
    cid = make_campaign(
        engine, settings, name="later", recipients=phones(7), scheduled_at=utcnow() + timedelta(days=1)
    )
    assert states(engine, cid) == {"planned": 7}
    found = samples(WorkerMetrics(engine, settings).render().decode())
    assert (
        found[("wacamp_messages", (("campaign", "later"), ("sender", "default"), ("state", "planned")))] == 7
    )


def test_two_workers_in_one_process_have_registries_of_their_own(engine: Engine) -> None:
    settings = sandbox_settings("http://127.0.0.1:9")
    first, second = WorkerMetrics(engine, settings), WorkerMetrics(engine, settings)
    assert first.registry is not second.registry
    assert b"wacamp_webhook_lag_seconds" in first.render()
    assert b"wacamp_webhook_lag_seconds" in second.render()


async def test_the_worker_stops_promptly_when_its_stop_event_is_set_while_idle(engine: Engine) -> None:
    settings = sandbox_settings("http://127.0.0.1:9")
    worker, _, runner = worker_parts(engine, settings)
    worker.poll_s = 3600
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await wait_for(lambda: worker.rounds == 1)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert not worker.running
    await runner.close()

"""The dispatcher against a scripted provider: error classes, at-most-once, control and stopping."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.db import write_transaction
from campaigns.core.exceptions import (
    CampaignFatalError,
    MarketingLimitError,
    OptedOutError,
    OutcomeUnknownError,
    PairRateLimitedError,
    RecipientError,
    SenderFatalError,
    ThrottledError,
    TransientError,
)
from campaigns.core.models import CampaignRun, CampaignState, Contact, ThrottleEvent
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from scheduler.providers.base import PhoneLimits, SendResult
from scheduler.sending.dispatch import Dispatcher
from scheduler.sending.run_report import StopReason
from tests.dispatch_support import ScriptedProvider, phone_of, rows, seed_campaign, states


def make_settings(**env: str) -> Settings:
    base = {
        "WACAMP_RATE_PER_S": "500",
        "WACAMP_MESSAGING_TIER": "TIER_UNLIMITED",
        "WACAMP_DISPATCH__WRITE_BATCH_MS": "5",
        "WACAMP_DISPATCH__CONTROL_POLL_S": "0.05",
        "WACAMP_LIMITS__BACKOFF_BASE_S": "0.01",
        "WACAMP_LIMITS__BACKOFF_MAX_S": "0.05",
    }
    settings, _ = load_settings(environ={**base, **env})
    return settings


def dispatcher(engine: Engine, campaign_id: int, provider: ScriptedProvider, **kw: Any) -> Dispatcher:
    settings = kw.pop("settings", None) or make_settings()
    with engine.connect() as conn:
        ref = control.reload(conn, campaign_id)
    return Dispatcher(engine=engine, settings=settings, campaign=ref, provider=provider, **kw)


def campaign_row(engine: Engine, campaign_id: int) -> Mapping[str, Any]:
    with engine.connect() as conn:
        return conn.execute(sa.select(control.CAMPAIGN).where(control.c.id == campaign_id)).one()._mapping


async def test_every_planned_row_is_sent_once_and_accepted(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=300)
    provider = ScriptedProvider()
    report = await dispatcher(engine, cid, provider).run()
    assert report.reason is StopReason.COMPLETED and report.exit_code == 0
    assert states(engine, cid) == {"accepted": 300}
    assert len(provider.bodies) == len(set(provider.bodies)) == 300
    stored = rows(engine, cid)
    assert {r.body for r in stored} == set(provider.bodies)
    assert all(r.wamid and r.accepted_at and r.lease_owner is None for r in stored)
    assert campaign_row(engine, cid)["state"] == CampaignState.COMPLETED
    with engine.connect() as conn:
        run = conn.execute(sa.select(CampaignRun.__table__)).one()  # type: ignore[attr-defined]
    assert run.accepted == 300 and run.finished_at is not None and run.busiest_second > 0


def _by_phone(answers: dict[int, Any]):  # type: ignore[no-untyped-def]
    table = {phone_of(i): answer for i, answer in answers.items()}

    def answer(phone: str, attempt: int) -> Any:
        found = table.get(phone)
        if callable(found):
            return found(attempt)
        return found if found is not None else SendResult(wamid=f"w.{phone}.{attempt}")

    return answer


async def test_errors_are_handled_by_their_class(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=8)
    provider = ScriptedProvider(
        answer=_by_phone(
            {
                0: lambda n: ThrottledError(code=130429, title="rate") if n < 2 else SendResult("w0"),
                1: lambda n: TransientError(code=131000, title="oops") if n < 1 else SendResult("w1"),
                2: TransientError(code=131016, title="unavailable"),
                3: RecipientError(code=131026, title="undeliverable"),
                4: OptedOutError(code=131050, title="stopped marketing"),
                5: MarketingLimitError(code=131049, title="marketing limit"),
                6: OutcomeUnknownError(title="connection reset"),
                7: lambda n: PairRateLimitedError(code=131056, title="pair") if n < 1 else SendResult("w7"),
            }
        )
    )
    settings = make_settings(WACAMP_LIMITS__MAX_ATTEMPTS="3", WACAMP_PAIR_SPACING_S="0")
    report = await dispatcher(engine, cid, provider, settings=settings).run()
    assert report.reason is StopReason.COMPLETED
    got = {r.phone: r for r in rows(engine, cid)}
    assert got[phone_of(0)].state == "accepted" and provider.attempts[phone_of(0)] == 3
    assert got[phone_of(1)].state == "accepted"
    assert got[phone_of(2)].state == "failed" and got[phone_of(2)].error_code == 131016
    assert provider.attempts[phone_of(2)] == 3
    assert got[phone_of(3)].state == "failed" and got[phone_of(3)].error_code == 131026
    assert got[phone_of(4)].state == "failed" and got[phone_of(5)].state == "failed"
    assert got[phone_of(6)].state == "unknown" and provider.attempts[phone_of(6)] == 1
    assert got[phone_of(7)].state == "accepted" and provider.attempts[phone_of(7)] == 2
    assert all((r.dedup_hash is None) == (r.state == "failed") for r in got.values())
    contact_t = Contact.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        contacts = {r.phone: r for r in conn.execute(sa.select(contact_t))}
        throttles = conn.scalar(sa.select(sa.func.count()).select_from(ThrottleEvent.__table__))  # type: ignore[attr-defined]
    assert contacts[phone_of(4)].suppressed_at is not None
    assert contacts[phone_of(4)].suppression_reason == "131050 stopped marketing"  # as webhooks spell it
    assert contacts[phone_of(5)].marketing_deferred_until is not None
    assert contacts[phone_of(3)].suppressed_at is None
    assert throttles == 2 and report.throttled == 2


async def test_a_campaign_fatal_error_pauses_the_campaign_with_the_reason(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=50)
    provider = ScriptedProvider(
        answer=lambda phone, n: (
            CampaignFatalError(code=132015, title="template paused")
            if phone == phone_of(10)
            else SendResult(f"w.{phone}")
        ),
    )
    settings = make_settings(WACAMP_RATE_PER_S="50")
    report = await dispatcher(engine, cid, provider, settings=settings).run()
    assert report.reason is StopReason.CAMPAIGN_FATAL and report.exit_code == 1
    campaign = campaign_row(engine, cid)
    assert campaign["state"] == CampaignState.PAUSED and "132015" in campaign["pause_reason"]
    counts = states(engine, cid)
    assert "sending" not in counts and counts.get("failed", 0) == 0
    assert counts["planned"] >= 1 and counts["accepted"] == len(provider.bodies) - 1


async def test_a_sender_fatal_error_stops_the_run_and_leaves_nothing_in_flight(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=20)
    provider = ScriptedProvider(answer=lambda phone, n: SenderFatalError(code=190, title="token expired"))
    report = await dispatcher(engine, cid, provider).run()
    assert report.reason is StopReason.SENDER_FATAL and "190" in report.message
    assert set(states(engine, cid)) == {"planned"}


async def test_a_pause_from_another_connection_stops_the_run_within_a_second(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=400)
    provider = ScriptedProvider()
    run = asyncio.create_task(
        dispatcher(engine, cid, provider, settings=make_settings(WACAMP_RATE_PER_S="100")).run()
    )
    await asyncio.sleep(0.5)
    await asyncio.to_thread(control.pause, engine, str(cid))
    paused_at = asyncio.get_running_loop().time()
    report = await run
    assert asyncio.get_running_loop().time() - paused_at < 1.0
    assert report.reason is StopReason.PAUSED and report.exit_code == 75
    counts = states(engine, cid)
    assert "sending" not in counts and counts["accepted"] == len(provider.bodies)
    assert campaign_row(engine, cid)["state"] == CampaignState.PAUSED
    control.resume(engine, str(cid))
    second = await dispatcher(engine, cid, provider).run()
    assert second.reason is StopReason.COMPLETED
    assert (
        states(engine, cid) == {"accepted": 400} and len(set(provider.bodies)) == len(provider.bodies) == 400
    )


async def test_a_stop_signal_lets_in_flight_requests_finish_and_releases_the_rest(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=400)
    provider = ScriptedProvider(latency_s=0.05)
    stop = asyncio.Event()
    run = asyncio.create_task(
        dispatcher(engine, cid, provider, stop=stop, settings=make_settings(WACAMP_RATE_PER_S="200")).run()
    )
    await asyncio.sleep(0.5)
    stop.set()
    report = await run
    assert report.reason is StopReason.SIGNAL and report.exit_code == 75
    counts = states(engine, cid)
    assert "sending" not in counts and "unknown" not in counts
    assert counts["accepted"] == len(provider.bodies) and counts["planned"] == 400 - len(provider.bodies)
    assert campaign_row(engine, cid)["state"] == CampaignState.WAITING


async def test_requests_still_in_flight_after_the_grace_period_become_unknown(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=20)
    provider = ScriptedProvider(latency_s=30)
    stop = asyncio.Event()
    settings = make_settings(WACAMP_DISPATCH__SHUTDOWN_GRACE_S="0.2", WACAMP_DISPATCH__MAX_IN_FLIGHT="4")
    run = asyncio.create_task(dispatcher(engine, cid, provider, stop=stop, settings=settings).run())
    await asyncio.sleep(0.3)
    stop.set()
    report = await run
    counts = states(engine, cid)
    assert counts == {"unknown": 4, "planned": 16} and report.unknown == 4


async def test_a_crashed_runs_sending_rows_become_unknown_and_its_claimed_rows_are_sent(
    engine: Engine,
) -> None:
    cid = seed_campaign(engine, recipients=10)
    from campaigns.core.dbtypes import utcnow
    from scheduler.sending import ledger

    with write_transaction(engine) as conn:
        sent = ledger.claim(conn, campaign_id=cid, owner="gone-host:1:x", limit=3, now=utcnow(), lease_s=-1)
        ledger.mark_sending(conn, owner="gone-host:1:x", message_ids=[r.id for r in sent], now=utcnow())
        ledger.claim(conn, campaign_id=cid, owner="gone-host:1:x", limit=4, now=utcnow(), lease_s=-1)
    provider = ScriptedProvider()
    report = await dispatcher(engine, cid, provider).run()
    assert report.recovered_unknown == 3 and report.reason is StopReason.COMPLETED
    assert states(engine, cid) == {"unknown": 3, "accepted": 7} and len(provider.bodies) == 7
    assert all(r.attempts == 1 for r in rows(engine, cid) if r.state == "accepted")


async def test_the_tier_budget_stops_the_run_resumably_with_when_capacity_frees(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=30)
    provider = ScriptedProvider(limits=PhoneLimits(messaging_tier="12"))
    settings = make_settings(WACAMP_MESSAGING_TIER="auto")
    report = await dispatcher(engine, cid, provider, settings=settings).run()
    assert report.reason is StopReason.BUDGET and report.exit_code == 75
    assert states(engine, cid) == {"accepted": 12, "planned": 18}
    campaign = campaign_row(engine, cid)
    assert campaign["state"] == CampaignState.WAITING and campaign["resume_after"] is not None


@pytest.mark.parametrize("state", [CampaignState.PAUSED, CampaignState.CANCELLED])
async def test_a_paused_or_cancelled_campaign_is_refused(engine: Engine, state: CampaignState) -> None:
    from campaigns.core.exceptions import UserError

    cid = seed_campaign(engine, recipients=1, state=state)
    with pytest.raises(UserError):
        await dispatcher(engine, cid, ScriptedProvider()).run()


async def test_rows_released_unsent_give_their_tier_count_back(engine: Engine) -> None:
    from campaigns.core.dbtypes import utcnow
    from scheduler.sending.budget import TierBudget

    cid = seed_campaign(engine, recipients=200)
    provider = ScriptedProvider(latency_s=0.02, limits=PhoneLimits(messaging_tier="150"))
    stop = asyncio.Event()
    settings = make_settings(WACAMP_MESSAGING_TIER="auto", WACAMP_RATE_PER_S="40")
    run = asyncio.create_task(dispatcher(engine, cid, provider, stop=stop, settings=settings).run())
    await asyncio.sleep(1.0)
    stop.set()
    report = await run
    assert report.reason is StopReason.SIGNAL
    sent = states(engine, cid)["accepted"]
    assert 0 < sent < 80  # one claim holds ~80 rows at 40/s: most of them went back unsent
    with engine.connect() as conn:
        used = TierBudget(portfolio="default", limit=150, window_s=86400).used(conn, utcnow())
    assert used == sent


async def test_a_run_is_refused_beside_a_renewed_lease_and_waits_out_an_expiring_one(engine: Engine) -> None:
    """Liveness from the database only: the pid in an owner id is never looked at."""
    import os
    from datetime import timedelta

    from campaigns.core.dbtypes import utcnow
    from campaigns.core.exceptions import LockedError

    cid = seed_campaign(engine, recipients=5)
    run_t = CampaignRun.__table__  # type: ignore[attr-defined]

    def open_run(worker: str, lease_s: float) -> int:
        with write_transaction(engine) as conn:
            values = {"campaign_id": cid, "worker": worker, "started_at": utcnow()}
            until = utcnow() + timedelta(seconds=lease_s)
            statement = sa.insert(run_t).values(**values, lease_expires_at=until).returning(run_t.c.id)
            return int(conn.execute(statement).scalar_one())

    async def heartbeat(run_id: int) -> None:
        while True:
            await asyncio.sleep(0.2)
            with write_transaction(engine) as conn:
                later = utcnow() + timedelta(seconds=5)
                conn.execute(sa.update(run_t).where(run_t.c.id == run_id).values(lease_expires_at=later))

    alive = open_run(f"this-host:{os.getpid()}:a", 5)  # renewed, with a pid that is gone or not: no matter
    beating = asyncio.create_task(heartbeat(alive))
    with pytest.raises(LockedError, match="lease runs until"):
        await dispatcher(engine, cid, ScriptedProvider()).run()
    beating.cancel()
    with write_transaction(engine) as conn:
        conn.execute(sa.update(run_t).where(run_t.c.id == alive).values(finished_at=utcnow()))
    open_run("killed-host:1:b", 1.0)  # its holder died: nobody renews it
    report = await dispatcher(engine, cid, ScriptedProvider()).run()
    assert report.reason is StopReason.COMPLETED
    with engine.connect() as conn:
        outcomes = [str(o) for o in conn.scalars(sa.select(run_t.c.outcome).order_by(run_t.c.id))]
        still_open = conn.scalar(sa.select(sa.func.count()).where(run_t.c.finished_at.is_(None)))
    assert outcomes[1].startswith("crashed: its lease expired") and outcomes[2].startswith("completed")
    assert still_open == 0


async def test_a_forced_stop_writes_in_flight_rows_as_unknown_and_gives_the_rest_back(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=50)
    provider = ScriptedProvider(latency_s=30)
    settings = make_settings(WACAMP_DISPATCH__MAX_IN_FLIGHT="5")
    run_dispatcher = dispatcher(engine, cid, provider, settings=settings)
    run = asyncio.create_task(run_dispatcher.run())
    await asyncio.sleep(0.5)
    run.cancel()  # what a second Ctrl-C does
    with pytest.raises(asyncio.CancelledError):
        await run
    assert run_dispatcher.last_report is not None
    assert run_dispatcher.last_report.unknown == 5
    assert states(engine, cid) == {"unknown": 5, "planned": 45}
    assert campaign_row(engine, cid)["state"] == CampaignState.WAITING

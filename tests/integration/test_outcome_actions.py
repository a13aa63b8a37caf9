"""The dispatcher's error handling: one policy call, then each action kind done to the row for real."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.exceptions import (
    CampaignFatalError,
    MaintenanceError,
    MarketingLimitError,
    OptedOutError,
    OutcomeUnknownError,
    PairRateLimitedError,
    PlatformError,
    RecipientError,
    SenderFatalError,
    ThrottledError,
    TransientError,
)
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import THROTTLE_EVENT_TABLE as THROTTLE
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from scheduler.sending import ledger
from scheduler.sending.ledger import ClaimedRow
from scheduler.sending.outcome_actions import OutcomeActions
from scheduler.sending.pace import make_pace
from scheduler.sending.pairs import PairSpacer
from scheduler.sending.run_report import RunStats, StopReason
from scheduler.sending.writer import ResultWriter
from tests.dispatch_support import seed_campaign

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@dataclass
class Run:
    """One campaign's claimed rows and the real parts an `OutcomeActions` works with."""

    engine: Engine
    settings: Settings
    actions: OutcomeActions
    writer: ResultWriter
    pairs: PairSpacer
    stats: RunStats
    claimed: list[ClaimedRow]
    halts: list[tuple[StopReason, str]] = field(default_factory=list)

    async def answer(self, index: int, error: PlatformError) -> dict[str, object]:
        """Hand the error for claimed row `index` to the dispatcher's handling; return the row as written."""
        row = self.claimed[index]
        self.actions.on_error(row, error)
        await self.writer.flush()
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(MESSAGE).where(MESSAGE.c.id == row.id)).one()
        return dict(found._mapping)

    def contact(self, index: int) -> dict[str, object]:
        with self.engine.connect() as conn:
            query = sa.select(CONTACT).where(CONTACT.c.id == self.claimed[index].contact_id)
            return dict(conn.execute(query).one()._mapping)


@pytest.fixture
async def run(engine: Engine) -> AsyncIterator[Run]:
    settings, _ = load_settings(environ={"WACAMP_LIMITS__MARKETING_DEFER_H": "6"})
    campaign_id = seed_campaign(engine, recipients=12)
    with write_transaction(engine) as conn:
        claimed = ledger.claim(conn, campaign_id=campaign_id, owner="t", limit=12, now=NOW, lease_s=60)
        ledger.mark_sending(conn, owner="t", message_ids=[r.id for r in claimed], now=NOW)
    sender = settings.sender("default")
    writer = ResultWriter(engine, batch_rows=100, batch_ms=10)
    writer_task = writer.start()
    pairs = PairSpacer(
        spacing_s=settings.limits.pair_spacing_s, retry_base_s=settings.limits.pair_retry_base_s
    )
    stats = RunStats()
    halts: list[tuple[StopReason, str]] = []
    actions = OutcomeActions(
        campaign_id=campaign_id,
        sender=sender,
        limits=settings.limits,
        writer=writer,
        stats=stats,
        pace=make_pace(settings, sender),
        pairs=pairs,
        permits={},
        claimed_at={},
        halt=lambda reason, message: halts.append((reason, message)),
        now=lambda: NOW,
    )
    yield Run(engine, settings, actions, writer, pairs, stats, sorted(claimed, key=lambda r: r.id), halts)
    await writer.close()
    assert writer_task.done()


def _at(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def test_throttling_slows_the_sender_and_requeues_after_retry_after(run: Run) -> None:
    row = await run.answer(0, ThrottledError(code=130429, title="rate", retry_after_s=7))
    assert (row["state"], _at(row["next_attempt_at"])) == ("planned", NOW + timedelta(seconds=7))
    assert run.actions.pace.rate_per_s < run.actions.pace.target_rate_per_s
    with run.engine.connect() as conn:
        assert conn.execute(sa.select(THROTTLE.c.code, THROTTLE.c.retry_after_s)).all() == [(130429, 7.0)]
    assert run.stats.throttled == 1 and run.stats.failed == 0


async def test_maintenance_pauses_the_sender_and_requeues_without_counting_the_attempt(run: Run) -> None:
    before = run.actions.pace.controller.limiter.next_start_s()
    row = await run.answer(1, MaintenanceError(code=131057, title="upgrade"))
    assert (row["state"], row["attempts"]) == ("planned", 0)
    assert _at(row["next_attempt_at"]) == NOW + timedelta(seconds=run.settings.limits.maintenance_retry_s)
    assert (
        run.actions.pace.controller.limiter.next_start_s() >= before + run.settings.limits.maintenance_retry_s
    )


async def test_the_pair_rate_holds_the_recipient_then_fails_after_max_attempts(run: Run) -> None:
    row = await run.answer(2, PairRateLimitedError(code=131056, title="pair"))
    assert (row["state"], _at(row["next_attempt_at"])) == ("planned", NOW + timedelta(seconds=1))
    assert run.pairs.wait_s(run.claimed[2].phone, 0.0) > 0
    for _ in range(run.settings.limits.max_attempts - 1):  # earlier 131056 answers of that recipient
        run.pairs.strike(run.claimed[10].phone)
    row = await run.answer(10, PairRateLimitedError(code=131056, title="pair"))
    assert (row["state"], row["error_code"]) == ("failed", 131056)


async def test_transient_errors_count_the_attempt_and_fail_when_attempts_are_spent(run: Run) -> None:
    row = await run.answer(3, TransientError(code=131000, title="oops"))
    assert (row["state"], row["attempts"], row["error_code"]) == ("planned", 1, 131000)
    run.claimed[4] = dataclasses.replace(run.claimed[4], attempts=run.settings.limits.max_attempts)
    row = await run.answer(4, TransientError(code=131016, title="unavailable"))
    assert (row["state"], row["error_code"]) == ("failed", 131016)


async def test_the_marketing_limit_fails_the_row_and_defers_the_contact_for_the_configured_hours(
    run: Run,
) -> None:
    row = await run.answer(5, MarketingLimitError(code=131049, title="limit"))
    assert (row["state"], row["error_code"]) == ("failed", 131049)
    assert _at(run.contact(5)["marketing_deferred_until"]) == NOW + timedelta(hours=6)


async def test_opted_out_fails_the_row_and_suppresses_the_contact(run: Run) -> None:
    row = await run.answer(6, OptedOutError(code=131050, title="stopped"))
    assert row["state"] == "failed"
    assert run.contact(6)["suppression_reason"] == "131050 stopped"  # as the webhook path says it


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (RecipientError(code=131026, title="undeliverable"), "failed"),
        (OutcomeUnknownError(title="reset"), "unknown"),
    ],
)
async def test_recipient_errors_fail_and_lost_answers_are_unknown(
    run: Run, error: PlatformError, state: str
) -> None:
    assert (await run.answer(7, error))["state"] == state
    assert run.halts == []


async def test_fatal_answers_give_the_row_back_and_halt_the_run(run: Run) -> None:
    row = await run.answer(8, CampaignFatalError(code=132015, title="template paused"))
    assert row["state"] == "planned"
    row = await run.answer(9, SenderFatalError(code=190, title="token expired"))
    assert row["state"] == "planned"
    assert run.halts == [
        (StopReason.CAMPAIGN_FATAL, "(132015) template paused"),
        (StopReason.SENDER_FATAL, "sender 'default': (190) token expired"),
    ]

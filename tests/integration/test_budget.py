"""The messaging-tier budget over TierUsage, with an injected clock, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.models import Contact
from campaigns.core.settings_loading import load_settings
from scheduler.providers.base import PhoneLimits
from scheduler.sending import ledger, ledger_outcomes
from scheduler.sending.budget import TierBudget, claim_within_budget, resolve_tier
from scheduler.sending.ledger_outcomes import Outcome, OutcomeKind
from tests.dispatch_support import ScriptedProvider, phone_of, rows, seed_campaign

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY_S = 24 * 3600.0


def _claim(engine: Engine, budget: TierBudget, campaign_id: int, *, limit: int, now: datetime) -> list[int]:
    with write_transaction(engine) as conn:
        claimed = claim_within_budget(
            conn, budget=budget, campaign_id=campaign_id, owner="w", limit=limit, now=now, lease_s=60
        )
        ledger.mark_sending(conn, owner="w", message_ids=[r.id for r in claimed], now=now)
        ledger_outcomes.apply_outcomes(
            conn, [Outcome(OutcomeKind.ACCEPTED, r.id, now, wamid=f"w{r.id}") for r in claimed]
        )
    return [r.id for r in claimed]


def test_claims_stop_at_the_tier_and_capacity_frees_when_the_oldest_count_leaves_the_window(
    engine: Engine,
) -> None:
    cid = seed_campaign(engine, recipients=12)
    budget = TierBudget(portfolio="p", limit=5, window_s=DAY_S)
    assert len(_claim(engine, budget, cid, limit=3, now=T0)) == 3
    assert len(_claim(engine, budget, cid, limit=3, now=T0 + timedelta(hours=1))) == 2
    assert _claim(engine, budget, cid, limit=3, now=T0 + timedelta(hours=2)) == []
    with engine.connect() as conn:
        assert budget.remaining(conn, T0 + timedelta(hours=2)) == 0
        assert budget.capacity_frees_at(conn, T0 + timedelta(hours=2)) == T0 + timedelta(hours=24)
    # The first three counts leave the window 24 h later: exactly three more may go.
    assert len(_claim(engine, budget, cid, limit=10, now=T0 + timedelta(hours=24, seconds=1))) == 3


def test_recipients_already_counted_in_the_window_cost_nothing(engine: Engine) -> None:
    first = seed_campaign(engine, recipients=4, name="first", order_id="A")
    second = seed_campaign(engine, recipients=4, name="second", order_id="B")  # same four people
    budget = TierBudget(portfolio="p", limit=4, window_s=DAY_S)
    assert len(_claim(engine, budget, first, limit=10, now=T0)) == 4
    assert len(_claim(engine, budget, second, limit=10, now=T0 + timedelta(hours=1))) == 4
    with engine.connect() as conn:
        assert budget.used(conn, T0 + timedelta(hours=1)) == 4


def test_an_open_customer_service_window_does_not_count(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=3)
    contact_t = Contact.__table__  # type: ignore[attr-defined]
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(contact_t)
            .where(contact_t.c.phone.in_([phone_of(0), phone_of(1)]))
            .values(service_window_until=T0 + timedelta(hours=3))
        )
    budget = TierBudget(portfolio="p", limit=1, window_s=DAY_S)
    assert len(_claim(engine, budget, cid, limit=10, now=T0)) == 3
    with engine.connect() as conn:
        assert budget.used(conn, T0) == 1


def test_near_the_end_of_the_budget_free_recipients_still_go(engine: Engine) -> None:
    warm = seed_campaign(engine, recipients=3, name="warm", order_id="A")
    budget = TierBudget(portfolio="p", limit=4, window_s=DAY_S)
    _claim(engine, budget, warm, limit=10, now=T0)  # counts phones 0..2
    later = seed_campaign(engine, recipients=6, name="later", order_id="B")  # phones 0..5
    claimed = _claim(engine, budget, later, limit=10, now=T0 + timedelta(hours=1))
    phones = {r.phone for r in rows(engine, later) if r.id in claimed}
    assert phones == {phone_of(i) for i in range(4)}


def test_separate_portfolios_have_separate_budgets(engine: Engine) -> None:
    a = seed_campaign(engine, recipients=2, name="a", order_id="A")
    b = seed_campaign(engine, recipients=2, name="b", order_id="B", first_contact=10)
    assert len(_claim(engine, TierBudget(portfolio="x", limit=2, window_s=DAY_S), a, limit=5, now=T0)) == 2
    assert len(_claim(engine, TierBudget(portfolio="y", limit=2, window_s=DAY_S), b, limit=5, now=T0)) == 2


def test_an_unlimited_tier_claims_without_counting(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=5)
    budget = TierBudget(portfolio="p", limit=None, window_s=DAY_S)
    assert len(_claim(engine, budget, cid, limit=10, now=T0)) == 5
    with engine.connect() as conn:
        assert budget.used(conn, T0) == 0


@pytest.mark.parametrize(
    ("configured", "limits", "expected", "source"),
    [
        ("TIER_1K", PhoneLimits(messaging_tier="TIER_2K"), ("TIER_1K", 1000), "config"),
        ("auto", PhoneLimits(messaging_tier="TIER_10K"), ("TIER_10K", 10000), "platform"),
        ("auto", PhoneLimits(messaging_tier="TIER_UNLIMITED"), ("TIER_UNLIMITED", None), "platform"),
        ("auto", PhoneLimits(messaging_tier=None), ("TIER_250", 250), "fallback"),
        ("auto", ConnectionError("down"), ("TIER_250", 250), "fallback"),
    ],
)
async def test_the_tier_comes_from_the_config_or_the_platform_or_falls_back_to_tier_250(
    configured: str, limits: PhoneLimits | Exception, expected: tuple[str, int | None], source: str
) -> None:
    settings, _ = load_settings(environ={"WACAMP_MESSAGING_TIER": configured})
    choice = await resolve_tier(
        settings=settings, sender=settings.sender(None), provider=ScriptedProvider(limits=limits)
    )
    assert (choice.name, choice.limit) == expected
    assert choice.source.startswith(source)


def test_a_dead_holders_claimed_rows_give_their_tier_counts_back_when_they_return_to_the_queue(
    engine: Engine,
) -> None:
    cid = seed_campaign(engine, recipients=6)
    budget = TierBudget(portfolio="p", limit=5, window_s=DAY_S)
    assert len(_claim(engine, budget, cid, limit=2, now=T0)) == 2  # sent: counted for good
    with write_transaction(engine) as conn:
        held = claim_within_budget(
            conn, budget=budget, campaign_id=cid, owner="dead", limit=3, now=T0, lease_s=60
        )
        assert len(held) == 3 and budget.remaining(conn, T0) == 0
    later = T0 + timedelta(minutes=5)
    with write_transaction(engine) as conn:
        recovered = ledger.recover_expired(conn, now=later, campaign_id=cid)
        assert recovered == ledger.Recovered(returned=3)
        assert budget.remaining(conn, later) == 3
    assert sorted(r.state for r in rows(engine, cid)) == ["accepted"] * 2 + ["planned"] * 4

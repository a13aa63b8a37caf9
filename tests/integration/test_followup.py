"""`campaigns retry`: a follow-up over the recipients worth retrying, planned through the dedup rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.exceptions import UserError
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.followup import create_retry_campaign
from scheduler.webhooks.inbox import InboxItem, insert_bodies
from scheduler.webhooks.processor import process_pending
from tests.ledger_factory import Seeded, seed_campaign, status_body

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings() -> Settings:
    loaded, _ = load_settings(environ={})
    return loaded


def failed_parent(engine: Engine, settings: Settings) -> Seeded:
    """5 recipients: read, failed 131000, failed 131049, failed 131026, failed 131050."""
    seeded = seed_campaign(engine, count=5)
    m = seeded.messages
    outcomes = [
        ("read", None),
        ("failed", 131000),
        ("failed", 131049),
        ("failed", 131026),
        ("failed", 131050),
    ]
    bodies = [
        status_body(wamid=wamid, message_id=mid, status=status, error_code=code)
        for (mid, _, wamid), (status, code) in zip(m, outcomes, strict=True)
    ]
    insert_bodies(engine, [InboxItem(json.dumps(body)) for body in bodies])
    process_pending(engine, settings, clock=lambda: NOW)
    return seeded


def rows_of(engine: Engine, campaign_id: int) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(MESSAGE).where(MESSAGE.c.campaign_id == campaign_id).order_by(MESSAGE.c.id)
            )
        )


def test_a_retry_plans_the_transient_and_deferred_failures_only(engine: Engine, settings: Settings) -> None:
    seeded = failed_parent(engine, settings)
    outcome = create_retry_campaign(engine, settings=settings, parent="spring", now=NOW)
    assert (outcome.campaign, outcome.recipients, outcome.planned) == ("spring-retry-1", 2, 2)
    assert outcome.deferred == 1  # the 131049 recipient waits until its 24 h are over
    rows = rows_of(engine, outcome.campaign_id)
    assert [r.phone for r in rows] == [seeded.messages[1][1], seeded.messages[2][1]]
    assert all(r.state == "planned" and r.dedup_hash == r.content_hash for r in rows)
    assert rows[1].next_attempt_at is not None and rows[1].next_attempt_at > NOW
    with engine.connect() as conn:
        campaign = conn.execute(sa.select(CAMPAIGN).where(CAMPAIGN.c.id == outcome.campaign_id)).one()
    assert (campaign.parent_id, campaign.template_name, campaign.state) == (
        seeded.campaign_id,
        "promo",
        "planned",
    )


def test_chosen_codes_select_the_recipients_and_opted_out_ones_are_skipped(
    engine: Engine, settings: Settings
) -> None:
    failed_parent(engine, settings)
    outcome = create_retry_campaign(
        engine, settings=settings, parent="spring", codes=[131026, 131050], now=NOW
    )
    assert outcome.recipients == 2
    assert (outcome.planned, outcome.skipped) == (1, {"suppressed": 1})


def test_a_second_retry_skips_recipients_the_first_already_has(engine: Engine, settings: Settings) -> None:
    failed_parent(engine, settings)
    first = create_retry_campaign(engine, settings=settings, parent="spring", now=NOW)
    second = create_retry_campaign(engine, settings=settings, parent="spring", now=NOW)
    assert (first.campaign, second.campaign) == ("spring-retry-1", "spring-retry-2")
    assert (second.planned, second.skipped) == (0, {"duplicate_content": 2})


def test_a_campaign_without_retryable_failures_is_refused_and_leaves_nothing_behind(
    engine: Engine, settings: Settings
) -> None:
    seed_campaign(engine, count=2)
    with pytest.raises(UserError, match="nothing to retry"):
        create_retry_campaign(engine, settings=settings, parent="spring", now=NOW)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(CAMPAIGN)).scalar_one() == 1

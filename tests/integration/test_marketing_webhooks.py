"""Status webhooks of the Marketing Messages API path and of template pacing, applied by the processor.

Rows of that path carry no callback data: a status whose wamid matches no row is tied to the one
waiting row of that path to that recipient (`scheduler.webhooks.by_recipient`), never to a guess.
`held` sits between accepted and sent: it moves on to sent/delivered/read or to failed, never back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.followup import create_retry_campaign
from scheduler.webhooks.inbox import InboxItem, insert_bodies
from scheduler.webhooks.processor import process_pending
from tests.integration.test_followup import rows_of
from tests.ledger_factory import phone_number, row, seed_campaign, status_body

START = datetime(2026, 9, 21, 10, 0, tzinfo=UTC)
LATER = int((START + timedelta(seconds=30)).timestamp())


@pytest.fixture
def settings() -> Settings:
    loaded, _ = load_settings(environ={})
    return loaded


def drive(engine: Engine, settings: Settings, *payloads: dict[str, Any]) -> None:
    insert_bodies(engine, [InboxItem(json.dumps(p)) for p in payloads])
    process_pending(engine, settings)


def marketing_rows(engine: Engine, *, name: str, states: list[str], via: str = "marketing") -> list[int]:
    """Rows of the marketing path without a wamid (`sending` or `unknown`), to phone_number(0), (1) …"""
    phones = [phone_number(i) for i in range(len(states))]
    seeded = seed_campaign(engine, name=name, phones=phones, states=states, start=START)
    ids = [mid for mid, _, _ in seeded.messages]
    with engine.begin() as conn:
        conn.execute(sa.update(MESSAGE).where(MESSAGE.c.id.in_(ids)).values(via=via, wamid=None))
    return ids


def test_a_status_without_callback_data_settles_the_one_waiting_row_to_that_recipient(
    engine: Engine, settings: Settings
) -> None:
    unknown, sending = marketing_rows(engine, name="mm", states=["unknown", "sending"])
    drive(
        engine,
        settings,
        status_body(wamid="wamid.MM1", status="delivered", recipient="393470000000", timestamp=LATER),
        status_body(wamid="wamid.MM2", status="sent", recipient="393470000001", timestamp=LATER),
    )
    settled = row(engine, unknown)
    assert (settled.state, settled.wamid) == ("delivered", "wamid.MM1")
    assert (row(engine, sending).state, row(engine, sending).wamid) == ("sent", "wamid.MM2")
    drive(engine, settings, status_body(wamid="wamid.MM1", status="read", recipient="393470000000"))
    assert row(engine, unknown).state == "read"  # later statuses find it by its wamid


def test_a_status_that_could_be_either_of_two_rows_or_a_cloud_row_settles_nothing(
    engine: Engine, settings: Settings
) -> None:
    first = marketing_rows(engine, name="a", states=["unknown"])[0]
    second = marketing_rows(engine, name="b", states=["unknown"])[0]
    cloud = marketing_rows(engine, name="c", states=["unknown", "unknown"], via="cloud")[1]
    drive(
        engine,
        settings,
        status_body(wamid="wamid.X", status="delivered", recipient="393470000000", timestamp=LATER),
        status_body(wamid="wamid.Y", status="delivered", recipient="393470000001", timestamp=LATER),
    )
    for message_id in (first, second, cloud):
        assert (row(engine, message_id).state, row(engine, message_id).wamid) == ("unknown", None)


def test_a_status_older_than_the_send_does_not_settle_it(engine: Engine, settings: Settings) -> None:
    message_id = marketing_rows(engine, name="mm", states=["unknown"])[0]
    before = int((START - timedelta(minutes=10)).timestamp())
    drive(
        engine,
        settings,
        status_body(wamid="wamid.OLD", status="sent", recipient="393470000000", timestamp=before),
    )
    assert row(engine, message_id).state == "unknown"


def test_held_comes_after_accepted_and_before_sent_and_a_paused_template_fails_it(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_campaign(engine, name="paced", count=3, start=START)
    (released, _, w1), (paused, _, w2), (late, _, w3) = seeded.messages
    held = [
        status_body(wamid=w, status="held_for_quality_assessment", message_id=m)
        for m, w in ((released, w1), (paused, w2))
    ]
    drive(engine, settings, *held)
    assert (row(engine, released).state, row(engine, paused).state) == ("held", "held")
    drive(
        engine,
        settings,
        status_body(wamid=w1, status="sent", message_id=released),
        status_body(wamid=w2, status="failed", message_id=paused, error_code=132015),
        status_body(wamid=w3, status="delivered", message_id=late),
    )
    drive(engine, settings, status_body(wamid=w1, status="held_for_quality_assessment", message_id=released))
    drive(engine, settings, status_body(wamid=w3, status="held_for_quality_assessment", message_id=late))
    assert row(engine, released).state == "sent", "a late held never moves a row back"
    assert row(engine, late).state == "delivered"
    failed = row(engine, paused)
    assert (failed.state, failed.error_code, failed.dedup_hash) == ("failed", 132015, None)


def test_a_follow_up_of_a_marketing_campaign_keeps_its_path_and_product_policy(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_campaign(engine, name="mm", count=2, start=START)
    with engine.begin() as conn:
        conn.execute(
            sa.update(CAMPAIGN)
            .where(CAMPAIGN.c.id == seeded.campaign_id)
            .values(via="marketing", product_policy="STRICT")
        )
    (mid, _, wamid) = seeded.messages[0]
    drive(engine, settings, status_body(wamid=wamid, message_id=mid, status="failed", error_code=131000))
    outcome = create_retry_campaign(engine, settings=settings, parent="mm", now=START + timedelta(hours=1))
    with engine.connect() as conn:
        retry = conn.execute(sa.select(CAMPAIGN).where(CAMPAIGN.c.id == outcome.campaign_id)).one()
    assert (retry.via, retry.product_policy) == ("marketing", "STRICT")
    (planned,) = rows_of(engine, outcome.campaign_id)
    assert planned.via == "marketing" and json.loads(planned.body)["product_policy"] == "STRICT"

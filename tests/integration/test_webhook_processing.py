"""Webhook events applied to the ledger and control tables, posted through a real HTTP client.

Duplicates, reordering and crashes between store and process are the point of these tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.models import Campaign, InboundMessage, Sender, Template, WebhookInbox
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from scheduler.webhooks.processor import process_pending
from scheduler.webhooks.server import WebhookServer
from scheduler.webhooks.signature import HEADER, sign
from tests.ledger_factory import (
    add_sender,
    contact,
    envelope,
    inbound_body,
    row,
    seed_campaign,
    status_body,
)

SECRET = "sandbox-secret"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
T0 = 1_790_000_000  # status timestamps (unix seconds)


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class Harness:
    """Posts signed bodies to a running receiver and processes the inbox with a fixed clock."""

    def __init__(self, server: WebhookServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.now = NOW

    async def post(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        headers = {HEADER: sign(SECRET, body), "Content-Type": "application/json"}
        async with self.session.post(self.server.url, data=body, headers=headers) as response:
            assert response.status == 200

    def process(self) -> None:
        process_pending(self.server.engine, self.server.settings, clock=lambda: self.now)

    async def deliver(self, *payloads: dict[str, Any]) -> None:
        """Post each payload and process it before the next (separate batches)."""
        for payload in payloads:
            await self.post(payload)
            self.process()


@pytest.fixture
def settings() -> Settings:
    loaded, _ = load_settings(environ={})
    return loaded


@pytest.fixture
async def hook(engine: Engine, settings: Settings) -> AsyncIterator[Harness]:
    async with (
        WebhookServer(engine, settings, port=0, sandbox=True, process=False) as server,
        aiohttp.ClientSession() as session,
    ):
        yield Harness(server, session)


async def test_statuses_in_order_move_the_row_to_read_with_every_timestamp(
    hook: Harness, engine: Engine
) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, wamid = seeded.messages[0][0], seeded.wamid(0)
    await hook.deliver(
        status_body(wamid=wamid, message_id=mid, status="sent", timestamp=T0),
        status_body(wamid=wamid, message_id=mid, status="delivered", timestamp=T0 + 5),
        status_body(wamid=wamid, message_id=mid, status="read", timestamp=T0 + 60),
    )
    message = row(engine, mid)
    assert (message.state, message.sent_at, message.delivered_at, message.read_at) == (
        "read",
        at(T0),
        at(T0 + 5),
        at(T0 + 60),
    )
    assert (message.pricing_category, message.billable) == ("marketing", True)


async def test_read_without_delivered_implies_delivered_and_a_late_delivered_never_downgrades_it(
    hook: Harness, engine: Engine
) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, wamid = seeded.messages[0][0], seeded.wamid(0)
    await hook.deliver(status_body(wamid=wamid, message_id=mid, status="read", timestamp=T0 + 60))
    implied = row(engine, mid)
    assert (implied.state, implied.delivered_at, implied.sent_at) == ("read", at(T0 + 60), at(T0 + 60))

    await hook.deliver(
        status_body(wamid=wamid, message_id=mid, status="delivered", timestamp=T0 + 5),
        status_body(wamid=wamid, message_id=mid, status="sent", timestamp=T0),
    )
    late = row(engine, mid)
    assert late.state == "read"
    assert (late.sent_at, late.delivered_at, late.read_at) == (at(T0), at(T0 + 5), at(T0 + 60))


async def test_reordered_statuses_in_one_batch_end_in_the_same_state(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=2)
    (first, _, w1), (second, _, w2) = seeded.messages
    for payload in (
        status_body(wamid=w1, message_id=first, status="read", timestamp=T0 + 9),
        status_body(wamid=w1, message_id=first, status="sent", timestamp=T0),
        status_body(wamid=w2, message_id=second, status="delivered", timestamp=T0 + 3),
        status_body(wamid=w1, message_id=first, status="delivered", timestamp=T0 + 2),
        status_body(wamid=w2, message_id=second, status="sent", timestamp=T0 + 1),
    ):
        await hook.post(payload)
    hook.process()
    assert [row(engine, mid).state for mid, _, _ in seeded.messages] == ["read", "delivered"]
    assert row(engine, first).delivered_at == at(T0 + 2)


async def test_duplicate_deliveries_change_nothing(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, wamid = seeded.messages[0][0], seeded.wamid(0)
    delivered = status_body(wamid=wamid, message_id=mid, status="delivered", timestamp=T0)
    await hook.deliver(delivered)
    before = row(engine, mid)._asdict()
    hook.now = NOW + timedelta(hours=1)
    await hook.deliver(delivered, delivered, delivered)
    after = row(engine, mid)._asdict()
    before.pop("updated_at"), after.pop("updated_at")
    assert after == before


async def test_failed_records_code_and_title_and_frees_the_dedup_hash(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, wamid = seeded.messages[0][0], seeded.wamid(0)
    await hook.deliver(
        status_body(wamid=wamid, message_id=mid, status="failed", error_code=131026, timestamp=T0)
    )
    message = row(engine, mid)
    assert (message.state, message.error_code, message.error_title) == ("failed", 131026, "error 131026")
    assert message.dedup_hash is None
    assert message.failed_at == at(T0)


async def test_failed_131049_defers_the_contact_once_even_when_redelivered(
    hook: Harness, engine: Engine, settings: Settings
) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, phone, wamid = seeded.messages[0]
    failed = status_body(wamid=wamid, message_id=mid, status="failed", error_code=131049)
    await hook.deliver(failed)
    deferred_until = NOW + timedelta(hours=settings.limits.marketing_defer_h)
    assert contact(engine, phone).marketing_deferred_until == deferred_until
    hook.now = NOW + timedelta(hours=3)
    await hook.deliver(failed)  # the platform redelivers it three hours later
    assert contact(engine, phone).marketing_deferred_until == deferred_until


async def test_failed_131050_suppresses_the_contact(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, phone, wamid = seeded.messages[0]
    await hook.deliver(status_body(wamid=wamid, message_id=mid, status="failed", error_code=131050))
    person = contact(engine, phone)
    assert person.suppressed_at is not None
    assert person.suppression_reason.startswith("131050")


async def test_a_failed_after_read_does_not_undo_the_read(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, wamid = seeded.messages[0][0], seeded.wamid(0)
    await hook.deliver(
        status_body(wamid=wamid, message_id=mid, status="read"),
        status_body(wamid=wamid, message_id=mid, status="failed", error_code=131000),
    )
    assert row(engine, mid).state == "read"
    assert row(engine, mid).dedup_hash is not None


async def test_a_status_settles_an_unknown_row_found_by_callback_data_and_sets_its_wamid(
    hook: Harness, engine: Engine
) -> None:
    seeded = seed_campaign(engine, count=1, state="unknown")
    mid = seeded.messages[0][0]
    await hook.deliver(status_body(wamid="wamid.LATE", message_id=mid, status="delivered", timestamp=T0))
    message = row(engine, mid)
    assert (message.state, message.wamid, message.delivered_at) == ("delivered", "wamid.LATE", at(T0))


async def test_a_status_without_callback_data_finds_the_row_by_wamid(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=2)
    await hook.deliver(status_body(wamid=seeded.wamid(1), status="sent"))
    assert [row(engine, mid).state for mid, _, _ in seeded.messages] == ["accepted", "sent"]


async def test_a_status_whose_wamid_contradicts_the_row_is_not_applied(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    mid = seeded.messages[0][0]
    await hook.deliver(status_body(wamid="wamid.SOMEONE_ELSE", message_id=mid, status="read"))
    assert row(engine, mid).state == "accepted"


async def test_a_reply_is_attributed_to_the_campaign_message_and_opens_the_service_window(
    hook: Harness, engine: Engine, settings: Settings
) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, phone, wamid = seeded.messages[0]
    reply = inbound_body(phone=phone, wamid="wamid.IN1", text="Is it blue?", context=wamid, timestamp=T0)
    await hook.deliver(reply, reply)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(InboundMessage.__table__)))  # type: ignore[attr-defined]
    assert [(r.message_id, r.campaign_id, r.text, r.is_optout) for r in rows] == [
        (mid, seeded.campaign_id, "Is it blue?", False)
    ]
    window = timedelta(hours=settings.limits.customer_service_window_h)
    assert contact(engine, phone).service_window_until == at(T0) + window


async def test_an_older_message_never_shortens_the_service_window(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    phone = seeded.messages[0][1]
    await hook.deliver(
        inbound_body(phone=phone, wamid="wamid.NEW", text="hi", timestamp=T0 + 3600),
        inbound_body(phone=phone, wamid="wamid.OLD", text="hello", timestamp=T0),
    )
    assert contact(engine, phone).service_window_until == at(T0 + 3600) + timedelta(hours=24)


@pytest.mark.parametrize(
    ("text", "payload", "suppressed"),
    [
        ("  stop ", None, True),
        ("Disiscrivimi", None, True),
        ("STOP ALL", None, True),
        ("please stop sending", None, False),
        ("Stop promotions", "STOP", True),
        ("Yes please", "YES", False),
    ],
)
async def test_opt_out_keywords_and_payloads_suppress_the_contact(
    hook: Harness, engine: Engine, text: str, payload: str | None, suppressed: bool
) -> None:
    seeded = seed_campaign(engine, count=1)
    phone, wamid = seeded.messages[0][1], seeded.wamid(0)
    await hook.deliver(inbound_body(phone=phone, wamid="wamid.IN", text=text, payload=payload, context=wamid))
    assert (contact(engine, phone).suppressed_at is not None) is suppressed


def preference(phone: str, value: str, timestamp: int) -> dict[str, Any]:
    item = {
        "wa_id": phone.lstrip("+"),
        "category": "marketing_messages",
        "value": value,
        "timestamp": timestamp,
    }
    return envelope("user_preferences", {"messaging_product": "whatsapp", "user_preferences": [item]})


async def test_user_preferences_stop_suppresses_and_resume_restores(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    phone = seeded.messages[0][1]
    await hook.deliver(preference(phone, "stop", T0))
    assert contact(engine, phone).suppression_reason == "user_preferences: stop"
    await hook.deliver(preference(phone, "resume", T0 + 10))
    assert contact(engine, phone).suppressed_at is None


async def test_a_platform_resume_does_not_lift_an_opt_out_the_user_sent_to_the_business(
    hook: Harness, engine: Engine
) -> None:
    seeded = seed_campaign(engine, count=1)
    phone = seeded.messages[0][1]
    await hook.deliver(
        inbound_body(phone=phone, wamid="wamid.IN", text="STOP", timestamp=T0),
        preference(phone, "resume", T0 + 10),
    )
    assert contact(engine, phone).suppressed_at is not None


def template_update(
    event: str, *, name: str = "promo", language: str = "it", reason: str = "NONE"
) -> dict[str, Any]:
    value = {
        "event": event,
        "message_template_id": 1689556908129832,
        "message_template_name": name,
        "message_template_language": language,
        "reason": reason,
    }
    return envelope("message_template_status_update", value)


async def test_a_paused_template_pauses_the_campaigns_that_use_it(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    other = seed_campaign(engine, name="other", count=1, template="welcome", phones=["+393479999999"])
    await hook.deliver(template_update("PAUSED", reason="LOW_QUALITY"))
    with engine.connect() as conn:
        campaigns = {r.id: r for r in conn.execute(sa.select(Campaign.__table__))}  # type: ignore[attr-defined]
        template = conn.execute(
            sa.select(Template.__table__).where(Template.__table__.c.name == "promo")  # type: ignore[attr-defined]
        ).one()
    assert (template.status, template.status_reason) == ("PAUSED", "LOW_QUALITY")
    assert campaigns[seeded.campaign_id].state == "paused"
    assert campaigns[seeded.campaign_id].pause_reason == "template promo (it) is PAUSED: LOW_QUALITY"
    assert campaigns[other.campaign_id].state == "running"


async def test_an_approved_template_update_pauses_nothing(hook: Harness, engine: Engine) -> None:
    seeded = seed_campaign(engine, count=1)
    await hook.deliver(template_update("APPROVED"))
    with engine.connect() as conn:
        state = conn.execute(
            sa.select(Campaign.__table__.c.state).where(Campaign.__table__.c.id == seeded.campaign_id)  # type: ignore[attr-defined]  # type: ignore[attr-defined]
        ).scalar_one()
    assert state == "running"


@pytest.mark.parametrize(
    ("limit", "tier"), [("TIER_10K", "TIER_10K"), (2000, "TIER_2K"), ("100000", "TIER_100K"), (777, "777")]
)
async def test_capability_updates_set_the_sender_tier_from_a_string_or_an_integer(
    hook: Harness, engine: Engine, limit: object, tier: str
) -> None:
    add_sender(engine)
    value = {"max_daily_conversations_per_business": limit, "max_phone_numbers_per_business": 20}
    await hook.deliver(envelope("business_capability_update", value))
    with engine.connect() as conn:
        sender = conn.execute(sa.select(Sender.__table__)).one()  # type: ignore[attr-defined]
    assert sender.messaging_tier == tier


async def test_a_throughput_upgrade_sets_the_sender_throughput_level(hook: Harness, engine: Engine) -> None:
    add_sender(engine)
    value = {
        "display_phone_number": "15550000000",
        "event": "THROUGHPUT_UPGRADE",
        "current_limit": "TIER_100K",
    }
    await hook.deliver(envelope("phone_number_quality_update", value))
    with engine.connect() as conn:
        sender = conn.execute(sa.select(Sender.__table__)).one()  # type: ignore[attr-defined]
    assert (sender.messaging_tier, sender.throughput_level) == ("TIER_100K", "HIGH")


@pytest.mark.parametrize(
    ("value", "paused"),
    [
        (
            {
                "event": "ACCOUNT_RESTRICTION",
                "restriction_info": [{"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING"}],
            },
            True,
        ),
        ({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE"}}, True),
        ({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "REINSTATE"}}, False),
        ({"event": "PARTNER_ADDED"}, False),
    ],
)
async def test_account_restrictions_pause_running_campaigns(
    hook: Harness, engine: Engine, value: dict[str, Any], paused: bool
) -> None:
    seeded = seed_campaign(engine, count=1)
    await hook.deliver(envelope("account_update", value))
    with engine.connect() as conn:
        campaign = conn.execute(
            sa.select(Campaign.__table__).where(Campaign.__table__.c.id == seeded.campaign_id)  # type: ignore[attr-defined]  # type: ignore[attr-defined]
        ).one()
    assert (campaign.state == "paused") is paused
    if paused:
        assert campaign.pause_reason.startswith(f"account_update {value['event']}")


async def test_unknown_fields_are_accepted_processed_and_ignored(hook: Harness, engine: Engine) -> None:
    await hook.deliver(envelope("security", {"event": "PIN_CHANGED"}), {"object": "page", "entry": []})
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(WebhookInbox.__table__)))  # type: ignore[attr-defined]
    assert [(r.processed_at is not None, r.error) for r in rows] == [(True, None), (True, None)]


async def test_a_crash_between_store_and_process_loses_nothing_and_reprocessing_is_a_no_op(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_campaign(engine, count=2)
    (m1, p1, w1), (m2, _, w2) = seeded.messages
    payloads = [
        status_body(wamid=w1, message_id=m1, status="read", timestamp=T0),
        status_body(wamid=w2, message_id=m2, status="failed", error_code=131049),
        inbound_body(phone=p1, wamid="wamid.R", text="STOP", context=w1),
    ]
    # A receiver that stores but never processes, then "crashes" (stops).
    async with (
        WebhookServer(engine, settings, port=0, sandbox=True, process=False) as server,
        aiohttp.ClientSession() as session,
    ):
        harness = Harness(server, session)
        for payload in payloads:
            await harness.post(payload)
    assert [row(engine, m).state for m in (m1, m2)] == ["accepted", "accepted"]

    process_pending(engine, settings, clock=lambda: NOW)  # the next process picks everything up
    first = [row(engine, m)._asdict() for m in (m1, m2)], contact(engine, p1)._asdict()
    assert [r["state"] for r in first[0]] == ["read", "failed"]

    with engine.begin() as conn:  # as if the processed marks had been lost: process everything again
        conn.execute(sa.update(WebhookInbox.__table__).values(processed_at=None))  # type: ignore[attr-defined]
    process_pending(engine, settings, clock=lambda: NOW + timedelta(hours=2))
    second = [row(engine, m)._asdict() for m in (m1, m2)], contact(engine, p1)._asdict()
    for before, after in ((first[0][0], second[0][0]), (first[0][1], second[0][1]), (first[1], second[1])):
        before.pop("updated_at"), after.pop("updated_at")
        assert after == before


async def test_the_background_processor_applies_what_the_receiver_stores(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_campaign(engine, count=1)
    mid, wamid = seeded.messages[0][0], seeded.wamid(0)
    async with (
        WebhookServer(engine, settings, port=0, sandbox=True) as server,
        aiohttp.ClientSession() as session,
    ):
        await Harness(server, session).post(status_body(wamid=wamid, message_id=mid, status="delivered"))
        await server.wait_processed()
        assert row(engine, mid).state == "delivered"


@pytest.mark.postgres
async def test_a_row_the_database_refuses_is_marked_and_the_rest_of_its_batch_still_applies(
    postgres_url: str, settings: Settings
) -> None:
    from campaigns.core.db import make_engine, upgrade

    engine = make_engine(postgres_url)
    upgrade(engine)
    with engine.begin() as conn:  # a database that refuses one value the parser cannot foresee
        conn.exec_driver_sql("ALTER TABLE inbound_message ADD CONSTRAINT no_poison CHECK (text <> 'poison')")
    try:
        seeded = seed_campaign(engine, count=1)
        mid, phone, wamid = seeded.messages[0]
        async with (
            WebhookServer(engine, settings, port=0, sandbox=True, process=False) as server,
            aiohttp.ClientSession() as session,
        ):
            harness = Harness(server, session)
            await harness.post(inbound_body(phone=phone, wamid="wamid.P", text="poison"))
            await harness.post(status_body(wamid=wamid, message_id=mid, status="read"))
            harness.process()
        with engine.connect() as conn:
            inbox = list(conn.execute(sa.select(WebhookInbox.__table__).order_by(sa.text("id"))))  # type: ignore[attr-defined]
        assert [r.processed_at is not None for r in inbox] == [True, True]
        assert inbox[0].error.startswith("could not be applied") and inbox[1].error is None
        assert row(engine, mid).state == "read"
    finally:
        engine.dispose()

"""Template category drift, a paused template approved again, and pricing.type (issue #14, part B):
real webhook bodies through the inbox and the processor, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.control import find_campaign, pause
from campaigns.core.models import CAMPAIGN_TABLE, MESSAGE_TABLE, TEMPLATE_TABLE, WEBHOOK_INBOX_TABLE
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.definitions import CampaignDefinition, create_campaign
from campaigns.planning.planner import plan_campaign
from campaigns.planning.pricing import RateCard
from campaigns.planning.summary import plan_summary
from campaigns.report.facts import campaign_facts
from campaigns.templates.drift import category_drift
from sandbox.samples import sample_templates
from scheduler.runs.due import _drift_warnings
from scheduler.webhooks.processor import process_pending
from tests.campaign_seed import Person, seed_list, seed_templates
from tests.ledger_factory import envelope, row, seed_campaign, status_body

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _settings() -> Settings:
    return load_settings(environ={"WACAMP_MESSAGING_TIER": "TIER_2K"})[0]


def _deliver(engine: Engine, settings: Settings, *bodies: dict[str, Any], now: datetime = NOW) -> None:
    with engine.begin() as conn:
        for body in bodies:
            conn.execute(sa.insert(WEBHOOK_INBOX_TABLE).values(body=json.dumps(body), received_at=now))
    process_pending(engine, settings, clock=lambda: now)


def _category_update(name: str, **value: str) -> dict[str, Any]:
    head = {"message_template_id": 1000000000000005, "message_template_name": name}
    return envelope("template_category_update", {**head, "message_template_language": "it", **value})


def _status_update(name: str, event: str) -> dict[str, Any]:
    value = {
        "event": event,
        "message_template_name": name,
        "message_template_language": "it",
        "reason": "NONE",
    }
    return envelope("message_template_status_update", value)


def _order_campaign(engine: Engine, settings: Settings, name: str) -> int:
    """A campaign of the UTILITY sample template order_shipped (it) to three Italian numbers, planned."""
    seed_templates(engine, *sample_templates())
    seed_list(engine, name, [Person(f"+39347000000{i}", {"first_name": "Ada"}) for i in range(3)])
    definition = CampaignDefinition(
        name=name,
        list_name=name,
        template_name="order_shipped",
        language="it",
        params={"first_name": "{first_name}", "order_id": "A-1"},
    )
    campaign = create_campaign(engine, settings=settings, definition=definition)
    assert campaign.id is not None
    plan_campaign(engine, settings=settings, campaign=campaign.id)
    return campaign.id


def test_a_utility_template_turned_marketing_warns_everywhere_and_is_priced_as_marketing(
    engine: Engine,
) -> None:
    settings = _settings()
    campaign_id = _order_campaign(engine, settings, "orders")
    before = plan_summary(engine, settings=settings, campaign=find_campaign(engine, campaign_id))
    assert (before.category, category_drift(engine, find_campaign(engine, campaign_id))) == ("UTILITY", None)

    _deliver(engine, settings, _category_update("order_shipped", correct_category="MARKETING"))
    announced = category_drift(engine, find_campaign(engine, campaign_id))
    assert announced is not None
    assert announced.warning == (
        "template order_shipped (it) will become MARKETING (announced by the platform; now UTILITY)"
    )

    update = _category_update("order_shipped", previous_category="UTILITY", new_category="MARKETING")
    _deliver(engine, settings, update)
    _deliver(engine, settings, update, now=NOW + timedelta(hours=1))  # a duplicate changes nothing
    campaign = find_campaign(engine, campaign_id)
    drift = category_drift(engine, campaign)
    assert drift is not None and drift.upcoming is None
    assert drift.warning.startswith("template order_shipped (it) is now MARKETING, it was UTILITY")
    with engine.connect() as conn:
        template = conn.execute(
            sa.select(TEMPLATE_TABLE).where(
                TEMPLATE_TABLE.c.name == "order_shipped", TEMPLATE_TABLE.c.language == "it"
            )
        ).one()
    assert (template.category, template.previous_category, template.category_changed_at) == (
        "MARKETING",
        "UTILITY",
        NOW,
    )
    after = plan_summary(engine, settings=settings, campaign=campaign)
    assert after.category == "MARKETING" and drift.warning in after.notes
    assert after.estimated_cost > before.estimated_cost  # the rate card's marketing price, not utility's
    facts = campaign_facts(engine, settings=settings, campaign=campaign_id)
    assert facts["campaign"]["category_drift"] == drift.warning
    assert facts["cost"]["category"] == "marketing"


def test_a_campaign_paused_by_its_template_resumes_when_the_template_is_approved_again(
    engine: Engine,
) -> None:
    settings = _settings()
    by_platform = _order_campaign(engine, settings, "orders")
    by_person = _order_campaign(engine, settings, "orders-too")
    _deliver(engine, settings, _status_update("order_shipped", "PAUSED"))
    assert find_campaign(engine, by_platform).state == "paused"
    pause(engine, "orders-too", reason="paused by a person")  # already paused by the template: unchanged
    with engine.begin() as conn:
        conn.execute(
            sa.update(CAMPAIGN_TABLE)
            .where(CAMPAIGN_TABLE.c.id == by_person)
            .values(pause_reason="paused by a person")
        )
    _deliver(engine, settings, _status_update("order_shipped", "APPROVED"), now=NOW + timedelta(hours=3))
    resumed = find_campaign(engine, by_platform)
    assert (resumed.state, resumed.pause_reason) == ("planned", None)
    assert find_campaign(engine, by_person).state == "paused"  # a person's pause is theirs to lift

    _deliver(engine, settings, _status_update("order_shipped", "DISABLED"), now=NOW + timedelta(hours=4))
    _deliver(engine, settings, _status_update("order_shipped", "APPROVED"), now=NOW + timedelta(hours=5))
    assert find_campaign(engine, by_platform).state == "paused"  # DISABLED is final, not a pause


def test_pricing_type_is_stored_and_free_messages_are_not_charged(engine: Engine) -> None:
    settings = _settings()
    seeded = seed_campaign(engine, count=3)
    bodies = []
    for (message_id, _phone, wamid), kind in zip(
        seeded.messages, ("regular", "free_entry_point", "free_customer_service"), strict=True
    ):
        body = status_body(wamid=wamid, message_id=message_id, status="delivered", category="marketing_lite")
        body["entry"][0]["changes"][0]["value"]["statuses"][0]["pricing"]["type"] = kind
        bodies.append(body)
    _deliver(engine, settings, *bodies)
    stored = [row(engine, message_id) for message_id, _, _ in seeded.messages]
    assert [(r.state, r.pricing_type, r.pricing_category) for r in stored] == [
        ("delivered", "regular", "marketing_lite"),
        ("delivered", "free_entry_point", "marketing_lite"),
        ("delivered", "free_customer_service", "marketing_lite"),
    ]
    actual = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)["cost"]["actual"]
    assert actual["billable_messages"] == 1
    (line,) = actual["by_category_country"]
    card = RateCard(currency="EUR", default={"marketing": 0.06}, countries={39: {"marketing": 0.0572}})
    assert line["category"] == "marketing_lite"
    assert line["unit_price"] == card.price(category="marketing_lite", country_code=39) == 0.0572
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(MESSAGE_TABLE)) == 3


def test_campaigns_show_and_run_dues_summary_carry_the_drift_warning(
    sqlite_engine: Engine, sqlite_url: str, run_wacamp: Any
) -> None:
    settings = _settings()
    campaign_id = _order_campaign(sqlite_engine, settings, "orders")
    update = _category_update("order_shipped", previous_category="UTILITY", new_category="MARKETING")
    _deliver(sqlite_engine, settings, update)
    shown = run_wacamp("campaigns", "show", "orders", "--json", env={"WACAMP_DATABASE_URL": sqlite_url})
    assert shown.returncode == 0, shown.stderr
    warning = json.loads(shown.stdout)["category_drift"]
    assert warning.startswith("template order_shipped (it) is now MARKETING, it was UTILITY")
    with sqlite_engine.connect() as conn:
        assert _drift_warnings(conn, {campaign_id}) == [f"orders: {warning}"]

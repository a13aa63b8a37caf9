"""Planning a campaign into its ledger, on SQLite and PostgreSQL: dedup across campaigns, skip reasons."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.control import find_campaign, ledger_counts
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import NotFoundError, ValidationFailed
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Message, MessageState
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.definitions import CampaignDefinition, cancel_campaign, create_campaign, preview_bodies
from campaigns.planning.planner import allocate_message_ids, plan_campaign
from campaigns.planning.summary import plan_summary
from tests.campaign_seed import PROMO, Person, people, seed_list, seed_templates


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # no ./wacamp.toml of the developer's
    return load_settings(environ={"WACAMP_MESSAGING_TIER": "TIER_1K"})[0]


def _create(engine: Engine, settings: Settings, name: str, list_name: str, **kw: Any) -> int:
    definition = CampaignDefinition(
        name=name,
        list_name=list_name,
        template_name="promo",
        language="it",
        params=kw.pop("params", {"1": "{first_name}", "2": "SPRING20"}),
        button_payloads={"0": "STOP"},
        **kw,
    )
    return int(create_campaign(engine, settings=settings, definition=definition).id or 0)


def _rows(engine: Engine, campaign_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = sa.select(MESSAGE).where(MESSAGE.c.campaign_id == campaign_id).order_by(MESSAGE.c.id)
        return [dict(r._mapping) for r in conn.execute(query)]


def test_a_second_campaign_with_the_same_content_plans_only_the_new_recipients(
    engine: Engine, settings: Settings
) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 10))
    seed_list(engine, "summer", people(5, 15))
    first = _create(engine, settings, "spring", "spring")
    assert plan_campaign(engine, settings=settings, campaign="spring", chunk_size=4).planned == 10
    second = _create(engine, settings, "summer", "summer")
    outcome = plan_campaign(engine, settings=settings, campaign=second, chunk_size=3)
    assert (outcome.planned, outcome.skipped) == (5, {"duplicate_content": 5})
    rows = _rows(engine, second)
    planned_phones = sorted(r["phone"] for r in rows if r["state"] == "planned")
    assert planned_phones == [f"+39347{n:07d}" for n in range(10, 15)]
    duplicates = [r for r in rows if r["skip_reason"] == "duplicate_content"]
    assert all(r["dedup_hash"] is None and r["body"] is None for r in duplicates)
    assert ledger_counts(engine, first).by_state == {"planned": 10}


def test_a_campaign_with_different_parameters_plans_everyone_again(
    engine: Engine, settings: Settings
) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 6))
    _create(engine, settings, "a", "spring")
    plan_campaign(engine, settings=settings, campaign="a")
    other = _create(engine, settings, "b", "spring", params={"1": "{first_name}", "2": "SUMMER30"})
    outcome = plan_campaign(engine, settings=settings, campaign=other)
    assert (outcome.planned, outcome.skipped) == (6, {})


def test_skip_reasons_are_counted_exactly_on_a_mixed_list(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    later = utcnow() + timedelta(hours=20)
    mixed = [
        *people(0, 4),
        Person("+393480000001", {"first_name": "S"}, suppressed=True),
        Person("+393480000002", {"first_name": "S"}, suppressed=True, consent=False),  # suppression wins
        Person("+393480000003", {"first_name": "N"}, consent=False),
        Person("+393480000004", {"first_name": "N"}, consent=False),
        Person("+393480000005", {"first_name": "N"}, consent=False),
        Person("+393480000006", {}),
        Person("+393480000007", {"first_name": "   "}),
        Person("+393480000008", {"first_name": "x" * 5000}),
        Person("+393480000009", {"first_name": "D"}, deferred_until=later),
    ]
    seed_list(engine, "mixed", mixed)
    campaign_id = _create(engine, settings, "mixed", "mixed")
    plan_campaign(engine, settings=settings, campaign=campaign_id, chunk_size=5)
    counts = ledger_counts(engine, campaign_id)
    assert counts.by_state == {"planned": 5, "skipped": 8}
    assert counts.skipped_by_reason == {
        "no_consent": 3,
        "missing_param:first_name": 2,
        "suppressed": 2,
        "param_too_long": 1,
    }
    deferred = next(r for r in _rows(engine, campaign_id) if r["phone"] == "+393480000009")
    assert deferred["state"] == "planned" and deferred["next_attempt_at"] == later
    assert plan_summary(engine, settings=settings, campaign=find_campaign(engine, campaign_id)).deferred == 1


def test_a_default_fills_a_missing_attribute(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "l", [Person("+393480000006", {})])
    campaign_id = _create(engine, settings, "c", "l", defaults={"first_name": "amico"})
    assert plan_campaign(engine, settings=settings, campaign=campaign_id).planned == 1
    body = json.loads(preview_bodies(engine, campaign_id, limit=5)[0])
    assert body["template"]["components"][0]["parameters"][0]["text"] == "amico"


def test_planning_twice_changes_nothing_and_planning_again_adds_new_list_members(
    engine: Engine, settings: Settings
) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 5))
    campaign_id = _create(engine, settings, "spring", "spring")
    plan_campaign(engine, settings=settings, campaign=campaign_id)
    before = _rows(engine, campaign_id)
    assert plan_campaign(engine, settings=settings, campaign=campaign_id).added == 0
    assert _rows(engine, campaign_id) == before
    seed_list(engine, "spring", people(5, 7))
    assert plan_campaign(engine, settings=settings, campaign=campaign_id).planned == 2
    assert len(_rows(engine, campaign_id)) == 7


def test_each_body_is_frozen_with_its_own_row_id_as_callback_data(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 7))
    campaign_id = _create(engine, settings, "spring", "spring")
    batches: list[int] = []
    plan_campaign(engine, settings=settings, campaign=campaign_id, chunk_size=3, progress=batches.append)
    assert batches == [3, 3, 1]
    rows = _rows(engine, campaign_id)
    for row in rows:
        body = json.loads(row["body"])
        assert body["biz_opaque_callback_data"] == f"wacamp:{row['id']}"
        assert body["to"] == row["phone"]
        assert body["messaging_product"] == "whatsapp"
        assert row["dedup_hash"] == row["content_hash"]
    assert preview_bodies(engine, campaign_id, limit=2) == [r["body"] for r in rows[:2]]
    # Ids keep coming from the same sequence the dispatcher's own inserts would use.
    with write_transaction(engine) as conn:
        assert allocate_message_ids(conn, 2)[0] > max(r["id"] for r in rows)


def test_content_that_failed_before_sending_does_not_block_a_later_campaign(
    engine: Engine, settings: Settings
) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 3))
    first = _create(engine, settings, "a", "spring")
    plan_campaign(engine, settings=settings, campaign=first)
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(MESSAGE)
            .where(MESSAGE.c.campaign_id == first, MESSAGE.c.phone == "+393470000000")
            .values(state=MessageState.FAILED.value, dedup_hash=None)
        )
    second = _create(engine, settings, "b", "spring")
    outcome = plan_campaign(engine, settings=settings, campaign=second)
    assert (outcome.planned, outcome.skipped) == (1, {"duplicate_content": 2})


def test_cancelling_skips_planned_rows_and_frees_their_content(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 4))
    first = _create(engine, settings, "a", "spring")
    plan_campaign(engine, settings=settings, campaign=first)
    assert cancel_campaign(engine, find_campaign(engine, "a")) == 4
    assert ledger_counts(engine, first).skipped_by_reason == {"cancelled": 4}
    assert all(r["dedup_hash"] is None for r in _rows(engine, first))
    assert find_campaign(engine, first).state == "cancelled"
    second = _create(engine, settings, "b", "spring")
    assert plan_campaign(engine, settings=settings, campaign=second).planned == 4


def test_a_refused_definition_lists_every_problem_at_once(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO, {**PROMO, "language": "en", "status": "PAUSED"})
    seed_list(engine, "spring", people(0, 1))
    _create(engine, settings, "taken", "spring")
    definition = CampaignDefinition(
        name="taken",
        list_name="nope",
        template_name="promo",
        language="it",
        params={"1": "{x", "3": "y"},
        button_payloads={"5": "P"},
        sender_name="ghost",
    )
    with pytest.raises(ValidationFailed) as refused:
        create_campaign(engine, settings=settings, definition=definition)
    text = "\n".join(refused.value.problems)
    for expected in (
        "already exists",
        "body.2 is not bound",
        "body.3: the template has no such placeholder",
        "unbalanced",
        "--button-payload 5",
        "no sender named 'ghost'",
        "no contact list named 'nope'",
    ):
        assert expected in text
    assert len(refused.value.problems) == 7
    paused = CampaignDefinition(
        name="p", list_name="spring", template_name="promo", language="en", params={"1": "a", "2": "b"}
    )
    with pytest.raises(ValidationFailed, match="is PAUSED: only APPROVED"):
        create_campaign(engine, settings=settings, definition=paused)
    missing = CampaignDefinition(name="m", list_name="spring", template_name="promo", language="de")
    with pytest.raises(ValidationFailed, match=r"does not exist \(it exists in: en, it\)"):
        create_campaign(engine, settings=settings, definition=missing)


def test_campaigns_are_found_by_name_or_id(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 1))
    campaign_id = _create(engine, settings, "spring", "spring")
    assert find_campaign(engine, "spring").id == campaign_id
    assert find_campaign(engine, str(campaign_id)).name == "spring"
    with pytest.raises(NotFoundError):
        find_campaign(engine, "autumn")


def test_the_plan_summary_counts_tier_days_and_cost(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    italians = people(0, 1500)
    germans = [Person(f"+49151{n:07d}", {"first_name": "G"}) for n in range(600)]
    seed_list(engine, "big", [*italians, *germans])
    campaign_id = _create(engine, settings, "big", "big")
    plan_campaign(engine, settings=settings, campaign=campaign_id, chunk_size=700)
    summary = plan_summary(engine, settings=settings, campaign=find_campaign(engine, campaign_id))
    assert summary.to_send == 2100
    assert (summary.messaging_tier, summary.tier_limit, summary.days_needed) == ("TIER_1K", 1000, 3)
    assert summary.send_time_s == pytest.approx(2100 / 80)
    assert {c.country_code: c.recipients for c in summary.cost_by_country} == {39: 1500, 49: 600}
    assert summary.estimated_cost == pytest.approx(round(1500 * 0.0572 + 600 * 0.1365, 2))
    assert summary.example_prices
    assert any("needs 3 days" in note for note in summary.notes)
    assert find_campaign(engine, campaign_id).state == "planned"


def test_concurrent_planners_never_give_the_same_content_twice(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 300))
    ids = [_create(engine, settings, name, "spring") for name in ("a", "b")]
    targets = [*ids, ids[0]]  # two planners on campaign a at once, one on b

    def plan(campaign_id: int) -> None:
        plan_campaign(engine, settings=settings, campaign=campaign_id, chunk_size=25)

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(plan, targets))
    with engine.connect() as conn:
        per_contact = conn.execute(
            sa.select(MESSAGE.c.contact_id, sa.func.count(), sa.func.count(MESSAGE.c.dedup_hash)).group_by(
                MESSAGE.c.contact_id
            )
        ).all()
    assert len(per_contact) == 300
    assert all((rows, planned) == (2, 1) for _, rows, planned in per_contact)
    a, b = (ledger_counts(engine, campaign_id) for campaign_id in ids)
    assert a.total == b.total == 300
    assert a.by_state.get("planned", 0) + b.by_state.get("planned", 0) == 300


def test_only_contacts_narrows_the_recipients(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 6))
    campaign_id = _create(engine, settings, "spring", "spring")
    contact = Message.metadata.tables["contact"]
    chosen = sa.select(contact.c.id).where(contact.c.phone.in_(["+393470000001", "+393470000004"]))
    assert plan_campaign(engine, settings=settings, campaign=campaign_id, only_contacts=chosen).planned == 2
    assert sorted(r["phone"] for r in _rows(engine, campaign_id)) == ["+393470000001", "+393470000004"]

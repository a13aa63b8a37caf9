"""The Marketing Messages API path and template pacing, end to end against the sandbox (issue #14, part A).

dispatcher → sandbox (``/marketing_messages`` or ``/messages``) → signed webhooks → receiver → processor.
Every marketing body the sandbox accepted validates against Meta's ``MarketingMessageRequestPayload``;
the ledger's counts by path equal the sandbox's; rows without callback data are settled by wamid.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import TEMPLATE_TABLE as TEMPLATE
from campaigns.core.settings import Settings
from campaigns.definitions import CampaignDefinition, create_campaign
from campaigns.planning.planner import plan_campaign
from campaigns.report.facts import campaign_facts
from campaigns.report.recipients_csv import write_recipients_csv
from sandbox.config import SandboxConfig, TemplatePacing
from sandbox.samples import sample_templates
from sandbox.server import running_sandbox
from scheduler.sending.run_report import StopReason
from scheduler.webhooks.server import WebhookServer
from tests.campaign_seed import Person, seed_list, seed_templates
from tests.integration.test_dispatch_sandbox import sandbox_settings, send_campaign
from tests.marketing_support import validate_marketing_body
from tests.scheduling_support import phones


def marketing_campaign(
    engine: Engine, settings: Settings, *, name: str, recipients: int, via: str | None = "marketing"
) -> int:
    """A spring_sale (MARKETING, it) campaign created with `--via` and planned; its id."""
    seed_templates(engine, *sample_templates())
    seed_list(engine, name, [Person(phone, {"first_name": "Marco"}) for phone in phones(recipients)])
    definition = CampaignDefinition(
        name=name,
        list_name=name,
        template_name="spring_sale",
        language="it",
        params={"1": "{first_name}", "2": "20%"},
        button_payloads={"0": "STOP"},
        via=via,  # type: ignore[arg-type]
    )
    campaign = create_campaign(engine, settings=settings, definition=definition)
    assert campaign.id is not None
    plan_campaign(engine, settings=settings, campaign=campaign.id)
    return campaign.id


def rows(engine: Engine, campaign_id: int) -> list[Any]:
    with engine.connect() as conn:
        query = sa.select(MESSAGE).where(MESSAGE.c.campaign_id == campaign_id).order_by(MESSAGE.c.id)
        return list(conn.execute(query))


def campaign_row(engine: Engine, campaign_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(CAMPAIGN).where(CAMPAIGN.c.id == campaign_id)).one()


def fast(base_url: str, **env: str) -> Settings:
    return sandbox_settings(
        base_url,
        WACAMP_RATE_PER_S="80",
        WACAMP_MESSAGING_TIER="TIER_UNLIMITED",
        WACAMP_DISPATCH__WRITE_BATCH_MS="5",
        WACAMP_DISPATCH__CONTROL_POLL_S="0.05",
        **env,
    )


async def test_a_marketing_campaign_goes_through_the_marketing_api_and_is_settled_by_wamid(
    engine: Engine,
) -> None:
    async with WebhookServer(engine, fast("http://unused"), port=0, sandbox=True) as receiver:
        config = SandboxConfig(mps=80, seed=3, webhook_url=receiver.url)
        async with running_sandbox(config) as sb:
            settings = fast(sb.base_url)
            cid = marketing_campaign(engine, settings, name="mm", recipients=240)
            planned = rows(engine, cid)
            assert {row.via for row in planned} == {"marketing"}
            assert all("biz_opaque_callback_data" not in json.loads(row.body) for row in planned)
            report = await send_campaign(engine, cid, settings)
            assert report.reason is StopReason.COMPLETED, report.message
            assert await sb.webhooks_drained(timeout_s=60)
            stats = sb.stats()
            bodies = list(sb.sandbox.marketing.bodies)
        await receiver.wait_processed(timeout_s=60)
    for raw in bodies:
        validate_marketing_body(json.loads(raw))
    assert len(bodies) == stats.accepted_by_path["marketing"] == stats.accepted == 240
    assert stats.duplicates == 0 and stats.max_accepted_trailing_1s <= 80
    sent = rows(engine, cid)
    assert Counter(row.via for row in sent) == {"marketing": 240}
    assert all(row.wamid for row in sent)
    final = stats.webhooks["final_planned"]
    states = Counter(row.state for row in sent)
    assert states["read"] == final["read"] and states["failed"] == final["failed"]
    assert states["accepted"] == 0, "every accepted row was settled by its wamid"
    delivered = [row for row in sent if row.state in ("delivered", "read")]
    assert delivered and {row.pricing_category for row in delivered} == {"marketing_lite"}
    facts = campaign_facts(engine, settings=settings, campaign=cid)
    assert facts["paths"] == {"marketing": facts["counts"]["accepted"]}
    assert facts["campaign"]["via"] == "marketing"
    out = io.StringIO()
    write_recipients_csv(engine, cid, out)
    assert {line["via"] for line in csv.DictReader(io.StringIO(out.getvalue()))} == {"marketing"}


async def test_terms_not_accepted_with_strict_pause_the_campaign_and_say_what_to_do(engine: Engine) -> None:
    async with running_sandbox(SandboxConfig(mps=80, marketing_terms_accepted=False)) as sb:
        settings = fast(sb.base_url, WACAMP_MARKETING__PRODUCT_POLICY="STRICT")
        cid = marketing_campaign(engine, settings, name="strict", recipients=50)
        report = await send_campaign(engine, cid, settings)
        stats = sb.stats()
    assert report.reason is StopReason.CAMPAIGN_FATAL
    assert "131055" in report.message
    campaign = campaign_row(engine, cid)
    assert campaign.state == "paused" and campaign.product_policy == "STRICT"
    assert "131055" in (campaign.pause_reason or "")
    assert "accepts the Marketing Messages API terms in WhatsApp Manager" in (campaign.pause_reason or "")
    assert stats.accepted == 0 and stats.errors_by_code[131055] >= 1
    assert Counter(row.state for row in rows(engine, cid)) == {"planned": 50}
    facts = campaign_facts(engine, settings=settings, campaign=cid)
    assert facts["campaign"]["product_policy"] == "STRICT"


async def test_terms_not_accepted_with_cloud_api_fallback_send_everything_through_the_cloud_api(
    engine: Engine,
) -> None:
    async with WebhookServer(engine, fast("http://unused"), port=0, sandbox=True) as receiver:
        config = SandboxConfig(mps=80, seed=5, webhook_url=receiver.url, marketing_terms_accepted=False)
        async with running_sandbox(config) as sb:
            settings = fast(sb.base_url)  # CLOUD_API_FALLBACK is the default
            cid = marketing_campaign(engine, settings, name="fallback", recipients=120)
            report = await send_campaign(engine, cid, settings)
            assert report.reason is StopReason.COMPLETED, report.message
            assert await sb.webhooks_drained(timeout_s=60)
            stats = sb.stats()
        await receiver.wait_processed(timeout_s=60)
    assert stats.accepted_by_path == {"cloud": 120} and stats.duplicates == 0
    assert stats.errors_by_code[131055] >= 1
    sent = rows(engine, cid)
    assert Counter(row.via for row in sent) == {"cloud": 120}
    assert Counter(row.state for row in sent)["accepted"] == 0  # settled by their callback data
    facts = campaign_facts(engine, settings=settings, campaign=cid)
    assert facts["paths"] == {"cloud": facts["counts"]["accepted"]}
    assert facts["counts"]["accepted"] + facts["counts"]["failed"] == 120


async def test_a_template_not_synced_yet_is_requeued_not_failed(engine: Engine) -> None:
    async with running_sandbox(SandboxConfig(mps=80, marketing_warmup_s=0.6)) as sb:
        settings = fast(
            sb.base_url,
            WACAMP_MARKETING__WARMUP_RETRY_S="0.2",
            WACAMP_MARKETING__WARMUP_RETRY_MAX_S="0.4",
            WACAMP_LIMITS__MAX_ATTEMPTS="20",
        )
        cid = marketing_campaign(engine, settings, name="warm", recipients=20)
        report = await send_campaign(engine, cid, settings)
        stats = sb.stats()
    assert report.reason is StopReason.COMPLETED, report.message
    assert stats.errors_by_code[131009] >= 1
    assert stats.accepted == stats.accepted_by_path["marketing"] == 20
    assert Counter(row.state for row in rows(engine, cid)) == {"accepted": 20}


async def _paced(engine: Engine, *, outcome: str, name: str) -> tuple[int, Any, Settings]:
    async with WebhookServer(engine, fast("http://unused"), port=0, sandbox=True) as receiver:
        pacing = TemplatePacing(template="spring_sale", hold=30, outcome=outcome, after_s=1.5)
        config = SandboxConfig(mps=80, seed=9, webhook_url=receiver.url, pacing=pacing)
        async with running_sandbox(config) as sb:
            settings = fast(sb.base_url)
            cid = marketing_campaign(engine, settings, name=name, recipients=30, via="cloud")
            report = await send_campaign(engine, cid, settings)
            assert report.reason is StopReason.COMPLETED, report.message
            await receiver.wait_processed(timeout_s=30)
            assert Counter(row.state for row in rows(engine, cid))["held"] > 0, "held until released"
            pacer = sb.sandbox.pacer
            async with asyncio.timeout(30):
                while pacer.released + pacer.failed < 30:
                    await asyncio.sleep(0.05)
            assert await sb.webhooks_drained(timeout_s=60)
            stats = sb.stats()
        await receiver.wait_processed(timeout_s=60)
    assert stats.held == 30 and stats.accepted == 30 and stats.duplicates == 0
    assert set(stats.accepted_per_recipient.values()) == {1}, "no held message was sent again"
    return cid, stats, settings


async def test_held_rows_of_a_released_template_end_sent_delivered_or_read(engine: Engine) -> None:
    cid, stats, settings = await _paced(engine, outcome="release", name="paced")
    states = Counter(row.state for row in rows(engine, cid))
    final = stats.webhooks["final_planned"]
    assert states["held"] == 0
    assert states["read"] == final["read"] and states["failed"] == final["failed"]
    assert sum(states.values()) == 30
    facts = campaign_facts(engine, settings=settings, campaign=cid)
    assert facts["counts"]["held"] == 0 and facts["counts"]["accepted"] + facts["counts"]["failed"] == 30


async def test_held_rows_of_a_paused_template_fail_with_132015_and_the_template_is_paused(
    engine: Engine,
) -> None:
    cid, _, settings = await _paced(engine, outcome="pause", name="paused")
    sent = rows(engine, cid)
    assert Counter(row.state for row in sent) == {"failed": 30}
    assert {row.error_code for row in sent} == {132015}
    assert all(row.dedup_hash is None for row in sent)
    with engine.connect() as conn:
        query = sa.select(TEMPLATE.c.status).where(
            TEMPLATE.c.name == "spring_sale", TEMPLATE.c.language == "it"
        )
        assert conn.execute(query).scalar_one() == "PAUSED"
    assert campaign_row(engine, cid).state == "completed"  # every row was sent: nothing left to pause
    facts = campaign_facts(engine, settings=settings, campaign=cid)
    assert [error["code"] for error in facts["errors"]] == [132015]

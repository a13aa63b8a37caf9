"""End to end: dispatcher → sandbox → signed webhooks → receiver → processor → `wacamp report --format json`.

The report's counts must equal the sandbox's own statistics exactly, with the sandbox's duplicate,
reordered and read-without-delivered webhooks all in play.
"""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine

from campaigns.report.facts import campaign_facts
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from scheduler.sending.run_report import StopReason
from scheduler.webhooks.server import WebhookServer
from tests.dispatch_support import seed_campaign
from tests.integration.test_dispatch_sandbox import sandbox_settings, send_campaign


async def test_the_json_report_counts_equal_the_sandbox_statistics_exactly(
    engine: Engine,
    db_url: str,
    run_wacamp,  # type: ignore[no-untyped-def]
) -> None:
    campaign_id = seed_campaign(engine, recipients=300)
    receiver_settings = sandbox_settings("http://unused")
    async with WebhookServer(engine, receiver_settings, port=0, sandbox=True) as receiver:
        config = SandboxConfig(
            mps=300, seed=11, webhook_url=receiver.url, not_on_whatsapp_share=0.05, marketing_limit_share=0.05
        )
        async with running_sandbox(config) as sb:
            settings = sandbox_settings(
                sb.base_url, WACAMP_RATE_PER_S="300", WACAMP_MESSAGING_TIER="TIER_UNLIMITED"
            )
            report = await send_campaign(engine, campaign_id, settings)
            assert report.reason is StopReason.COMPLETED, report.message
            assert await sb.webhooks_drained(timeout_s=60)
            stats = sb.stats()
        await receiver.wait_processed(timeout_s=60)

    result = run_wacamp("report", str(campaign_id), "--format", "json", env={"WACAMP_DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    hooks = stats.webhooks
    counts, final = facts["counts"], hooks["final_planned"]
    assert hooks["duplicates_planned"] > 0
    assert hooks["out_of_order_planned"] + hooks["skipped_delivered_planned"] > 0
    assert hooks["posts_given_up"] == 0 and hooks["pending"] == 0
    assert counts["read"] == final["read"]
    assert counts["delivered"] == final["read"] + final["delivered"]
    assert counts["sent"] == final["read"] + final["delivered"] + final["sent"]
    assert counts["accepted"] == counts["sent"]  # every accepted message got at least `sent`
    assert counts["failed"] == final["failed"] > 0
    assert counts["accepted"] + counts["failed"] == stats.accepted == 300
    assert (counts["unknown"], counts["pending"]) == (0, 0)
    assert {str(e["code"]): e["count"] for e in facts["errors"]} == {
        str(code): n for code, n in hooks["failed_by_code"].items()
    }
    assert facts["cost"]["actual"]["billable_messages"] == counts["delivered"]
    assert facts["counts"] == campaign_facts(engine, settings=settings, campaign=campaign_id)["counts"]

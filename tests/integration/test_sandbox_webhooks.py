"""Webhooks the sandbox sends, received by a real aiohttp server: signatures, statuses, anomalies, retries."""

from __future__ import annotations

import dataclasses

from sandbox.config import SandboxConfig, WebhookTiming
from sandbox.server import running_sandbox
from tests.sandbox_support import Receiver, client_for, numbers, receiving, spring_sale, template_body

FAST = WebhookTiming(
    sent_delay_s=(0.0, 0.02),
    delivered_delay_s=(0.0, 0.05),
    read_delay_s=(0.0, 0.05),
    delivered_share=1.0,
    read_share=1.0,
    duplicate_share=0.0,
    out_of_order_share=0.0,
    skip_delivered_share=0.0,
    batch_wait_s=0.05,
)


def config_for(receiver: Receiver, **overrides: object) -> SandboxConfig:
    base = SandboxConfig(
        webhook_url=receiver.url,
        webhook=FAST,
        pair_spacing_s=0,
        not_on_whatsapp_share=0.0,
        marketing_limit_share=0.0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


async def test_statuses_are_signed_over_the_raw_bytes_and_echo_the_callback_data_with_pmp_pricing() -> None:
    async with (
        receiving() as receiver,
        running_sandbox(config_for(receiver)) as sb,
        client_for(sb) as client,
    ):
        answer = await client.send(spring_sale("+393471234567", callback="wacamp:42"))
        assert await sb.webhooks_drained(timeout_s=10)
    wamid = answer.body["messages"][0]["id"]
    assert receiver.posts
    assert all(receiver.signature_ok(raw, headers) for raw, headers in receiver.posts)
    statuses = receiver.statuses()
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    for status in statuses:
        assert status["id"] == wamid
        assert status["recipient_id"] == "393471234567"
        assert status["biz_opaque_callback_data"] == "wacamp:42"
        assert status["pricing"] == {
            "billable": True,
            "pricing_model": "PMP",
            "type": "regular",
            "category": "marketing",
        }


async def test_a_tampered_signature_would_not_match() -> None:
    async with (
        receiving() as receiver,
        running_sandbox(config_for(receiver)) as sb,
        client_for(sb) as client,
    ):
        await client.send(spring_sale("+393471234567"))
        assert await sb.webhooks_drained(timeout_s=10)
    raw, headers = receiver.posts[0]
    assert receiver.signature_ok(raw, headers)
    assert not receiver.signature_ok(raw + b" ", headers)


async def test_several_statuses_travel_in_one_post() -> None:
    timing = dataclasses.replace(FAST, delivered_share=0.0, sent_delay_s=(0.05, 0.05), batch_wait_s=0.2)
    async with (
        receiving() as receiver,
        running_sandbox(config_for(receiver, webhook=timing)) as sb,
        client_for(sb) as client,
    ):
        for to in numbers(10):
            await client.send(spring_sale(to))
        assert await sb.webhooks_drained(timeout_s=10)
    assert len(receiver.statuses()) == 10
    assert max(len(value["statuses"]) for value in receiver.changes("messages")) > 1


async def test_numbers_not_on_whatsapp_are_accepted_then_fail_with_131026_by_webhook() -> None:
    async with receiving() as receiver:
        config = config_for(receiver, not_on_whatsapp_numbers=frozenset({"393471234567"}))
        async with running_sandbox(config) as sb, client_for(sb) as client:
            answer = await client.send(spring_sale("+393471234567"))
            assert await sb.webhooks_drained(timeout_s=10)
            stats = sb.stats()
    assert answer.status == 200
    [failed] = receiver.statuses()
    assert failed["status"] == "failed"
    assert failed["errors"][0]["code"] == 131026
    assert "pricing" not in failed
    assert stats.async_failures_by_code == {131026: 1}
    assert stats.webhooks["failed_by_code"] == {"131026": 1}


async def test_the_not_on_whatsapp_share_picks_the_same_numbers_for_the_same_seed() -> None:
    config = SandboxConfig(not_on_whatsapp_share=0.3, seed=5, pair_spacing_s=0)
    runs = []
    for _ in range(2):
        async with running_sandbox(config) as sb, client_for(sb) as client:
            for to in numbers(40):
                await client.send(spring_sale(to))
            runs.append(sb.stats().async_failures_by_code)
    assert runs[0] == runs[1]
    assert 0 < runs[0][131026] < 40


async def test_marketing_limit_and_opted_out_users_fail_by_webhook_with_131049_and_131050() -> None:
    async with receiving() as receiver:
        config = config_for(
            receiver,
            marketing_limit_numbers=frozenset({"393470000001"}),
            opted_out_numbers=frozenset({"393470000002"}),
        )
        async with running_sandbox(config) as sb, client_for(sb) as client:
            limited = await client.send(spring_sale("+393470000001"))
            opted_out = await client.send(spring_sale("+393470000002"))
            assert await sb.webhooks_drained(timeout_s=10)
    assert limited.status == opted_out.status == 200
    codes = {
        s["recipient_id"]: s["errors"][0]["code"] for s in receiver.statuses() if s["status"] == "failed"
    }
    assert codes == {"393470000001": 131049, "393470000002": 131050}


async def test_marketing_to_us_numbers_fails_with_131049_but_utility_goes_through() -> None:
    named = [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Emma", "parameter_name": "first_name"},
                {"type": "text", "text": "A-9", "parameter_name": "order_id"},
            ],
        }
    ]
    timing = dataclasses.replace(FAST, delivered_share=0.0)
    async with (
        receiving() as receiver,
        running_sandbox(config_for(receiver, webhook=timing)) as sb,
        client_for(sb) as client,
    ):
        await client.send(spring_sale("+12025550123"))
        await client.send(template_body("+12025550124", "order_shipped", "en", named))
        assert await sb.webhooks_drained(timeout_s=10)
    outcome = {
        s["recipient_id"]: (s["status"], s.get("errors", [{}])[0].get("code")) for s in receiver.statuses()
    }
    assert outcome == {"12025550123": ("failed", 131049), "12025550124": ("sent", None)}


async def test_a_share_of_delivered_statuses_arrives_twice() -> None:
    timing = dataclasses.replace(FAST, read_share=0.0, duplicate_share=1.0)
    async with (
        receiving() as receiver,
        running_sandbox(config_for(receiver, webhook=timing)) as sb,
        client_for(sb) as client,
    ):
        await client.send(spring_sale("+393471234567"))
        assert await sb.webhooks_drained(timeout_s=10)
        stats = sb.stats()
    assert [s["status"] for s in receiver.statuses()] == ["sent", "delivered", "delivered"]
    assert stats.webhooks["duplicates_planned"] == 1
    assert stats.webhooks["statuses"]["delivered"] == 2


async def test_read_can_arrive_before_delivered() -> None:
    timing = dataclasses.replace(FAST, out_of_order_share=1.0, out_of_order_gap_s=1.0, batch_wait_s=0.0)
    async with (
        receiving() as receiver,
        running_sandbox(config_for(receiver, webhook=timing)) as sb,
        client_for(sb) as client,
    ):
        await client.send(spring_sale("+393471234567"))
        assert await sb.webhooks_drained(timeout_s=10)
    statuses = receiver.statuses()
    assert [s["status"] for s in statuses] == ["sent", "read", "delivered"]
    read, delivered = statuses[1], statuses[2]
    assert int(read["timestamp"]) >= int(delivered["timestamp"])


async def test_read_can_arrive_with_no_delivered_at_all() -> None:
    timing = dataclasses.replace(FAST, skip_delivered_share=1.0)
    async with (
        receiving() as receiver,
        running_sandbox(config_for(receiver, webhook=timing)) as sb,
        client_for(sb) as client,
    ):
        await client.send(spring_sale("+393471234567"))
        assert await sb.webhooks_drained(timeout_s=10)
    assert [s["status"] for s in receiver.statuses()] == ["sent", "read"]


async def test_failed_webhook_posts_are_retried_with_backoff_until_accepted() -> None:
    timing = dataclasses.replace(FAST, delivered_share=0.0, retry_base_s=0.01, retry_max_s=0.05)
    async with (
        receiving(Receiver(fail_first=3)) as receiver,
        running_sandbox(config_for(receiver, webhook=timing)) as sb,
        client_for(sb) as client,
    ):
        await client.send(spring_sale("+393471234567"))
        assert await sb.webhooks_drained(timeout_s=10)
        stats = sb.stats()
    assert [s["status"] for s in receiver.statuses()] == ["sent"]
    assert stats.webhooks["post_attempts_failed"] == 3
    assert stats.webhooks["posts_ok"] == 1


async def test_webhook_retries_stop_after_the_bounded_time() -> None:
    timing = dataclasses.replace(
        FAST, delivered_share=0.0, retry_base_s=0.01, retry_max_s=0.02, retry_for_s=0.2
    )
    async with (
        receiving(Receiver(fail_first=-1)) as receiver,
        running_sandbox(config_for(receiver, webhook=timing)) as sb,
        client_for(sb) as client,
    ):
        await client.send(spring_sale("+393471234567"))
        assert await sb.webhooks_drained(timeout_s=10)
        stats = sb.stats()
    assert receiver.posts == []
    assert stats.webhooks["posts_given_up"] == 1
    assert stats.webhooks["statuses_given_up"] == 1
    assert stats.webhooks["post_attempts_failed"] >= 2


async def test_an_unreachable_webhook_url_is_retried_then_given_up() -> None:
    async with receiving() as receiver:
        dead_url = receiver.url
    timing = dataclasses.replace(
        FAST, delivered_share=0.0, retry_base_s=0.01, retry_max_s=0.02, retry_for_s=0.2
    )
    config = SandboxConfig(webhook_url=dead_url, webhook=timing, not_on_whatsapp_share=0.0)
    async with running_sandbox(config) as sb, client_for(sb) as client:
        await client.send(spring_sale("+393471234567"))
        assert await sb.webhooks_drained(timeout_s=10)
        assert sb.stats().webhooks["posts_given_up"] == 1


async def test_emitted_counts_match_what_the_receiver_got() -> None:
    timing = dataclasses.replace(
        FAST,
        delivered_share=0.8,
        read_share=0.5,
        duplicate_share=0.2,
        out_of_order_share=0.2,
        skip_delivered_share=0.1,
    )
    async with receiving() as receiver:
        config = config_for(receiver, webhook=timing, not_on_whatsapp_share=0.1, seed=3)
        async with running_sandbox(config) as sb, client_for(sb) as client:
            for to in numbers(60):
                await client.send(spring_sale(to))
            assert await sb.webhooks_drained(timeout_s=20)
            stats = sb.stats()
    received: dict[str, int] = {}
    for status in receiver.statuses():
        received[status["status"]] = received.get(status["status"], 0) + 1
    assert received == stats.webhooks["statuses"]
    final: dict[str, str] = {}
    rank = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
    for status in receiver.statuses():
        if rank[status["status"]] > rank.get(final.get(status["id"], ""), 0):
            final[status["id"]] = status["status"]
    tally: dict[str, int] = {}
    for state in final.values():
        tally[state] = tally.get(state, 0) + 1
    assert tally == stats.webhooks["final_planned"]

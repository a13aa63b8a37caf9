"""The sandbox's other endpoints over real HTTP: templates listing, phone number fields, On-Premises API,
and simulated user activity (`/_sandbox/inbound`)."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp

from sandbox.config import SandboxConfig, WebhookTiming
from sandbox.samples import sample_templates
from sandbox.server import running_sandbox
from tests.sandbox_support import client_for, receiving, spring_sale

WABA = "200000000000001"
QUICK = WebhookTiming(sent_delay_s=(0.0, 0.01), delivered_share=0.0, batch_wait_s=0.0)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_the_templates_listing_pages_with_after_cursors_and_next_links() -> None:
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        first = await client.get(f"/v23.0/{WABA}/message_templates", limit="4")
        seen = list(first.body["data"])
        page = first
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sandbox-token"}) as session:
            while "next" in page.body.get("paging", {}):
                async with session.get(page.body["paging"]["next"]) as response:
                    page_body = await response.json()
                seen.extend(page_body["data"])
                page = type(page)(response.status, page_body)
    assert len(first.body["data"]) == 4
    assert first.body["paging"]["cursors"]["after"]
    assert [(t["name"], t["language"]) for t in seen] == [
        (t["name"], t["language"]) for t in sample_templates()
    ]


async def test_the_templates_listing_filters_by_status_and_refuses_another_waba() -> None:
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        pending = await client.get(f"/v23.0/{WABA}/message_templates", status="PENDING")
        other = await client.get("/v23.0/999/message_templates")
        unauthorized = await client.get(f"/v23.0/{WABA}/message_templates", token="bad")
    assert [t["name"] for t in pending.body["data"]] == ["welcome_offer"]
    assert other.code == 100
    assert unauthorized.code == 190


async def test_the_phone_number_reports_throughput_messaging_limit_and_quality() -> None:
    config = SandboxConfig(messaging_tier="TIER_10K", throughput_level="HIGH")
    async with running_sandbox(config) as sb, client_for(sb) as client:
        answer = await client.get(
            f"/v23.0/{config.phone_number_id}",
            fields="throughput,whatsapp_business_manager_messaging_limit,quality_rating",
        )
        unknown_field = await client.get(f"/v23.0/{config.phone_number_id}", fields="nonsense")
    assert answer.body == {
        "id": config.phone_number_id,
        "throughput": {"level": "HIGH"},
        "whatsapp_business_manager_messaging_limit": "TIER_10K",
        "quality_rating": "GREEN",
    }
    assert unknown_field.code == 100


async def test_on_premises_login_gives_a_token_that_sends_in_the_on_premises_shape() -> None:
    body = spring_sale("+393471234567")
    del body["messaging_product"]
    async with running_sandbox(SandboxConfig()) as sb, aiohttp.ClientSession() as session:
        auth = {"Authorization": basic("admin", "sandbox-password")}
        async with session.post(f"{sb.base_url}/v1/users/login", headers=auth) as response:
            login = await response.json()
        token = login["users"][0]["token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with session.post(f"{sb.base_url}/v1/messages", json=body, headers=headers) as response:
            sent = (response.status, await response.json())
        async with session.post(f"{sb.base_url}/v1/messages", json=body, headers=headers) as response:
            again = (response.status, await response.json())
    assert login["users"][0]["expires_after"].endswith("+00:00")
    assert sent[0] == 200
    assert sent[1]["messages"][0]["id"].startswith("wamid.")
    assert "messaging_product" not in sent[1]
    status, error_body = again
    assert status == 400
    assert set(error_body) == {"meta", "errors"}
    assert error_body["errors"][0]["code"] == 131056
    assert set(error_body["errors"][0]) == {"code", "title", "details"}


async def test_on_premises_refuses_bad_credentials_and_unknown_tokens() -> None:
    async with running_sandbox(SandboxConfig()) as sb, aiohttp.ClientSession() as session:
        bad = {"Authorization": basic("admin", "wrong")}
        async with session.post(f"{sb.base_url}/v1/users/login", headers=bad) as response:
            login = (response.status, await response.json())
        headers = {"Authorization": "Bearer made-up"}
        async with session.post(f"{sb.base_url}/v1/messages", json={}, headers=headers) as response:
            send = (response.status, await response.json())
    assert login[0] == 401
    assert login[1]["errors"][0]["code"] == 1005
    assert send[0] == 401
    assert send[1]["errors"][0]["code"] == 0


async def test_inbound_text_stop_and_quick_reply_tap_emit_message_webhooks() -> None:
    async with receiving() as receiver:
        config = SandboxConfig(webhook_url=receiver.url, webhook=QUICK, not_on_whatsapp_share=0.0)
        async with running_sandbox(config) as sb, client_for(sb) as client:
            sent = await client.send(spring_sale("+393471234567"))
            await client.inbound(**{"from": "393471234567", "kind": "text", "text": "Quanto costa?"})
            await client.inbound(**{"from": "393471234567", "kind": "stop"})
            tap = await client.inbound(**{"from": "393471234567", "kind": "button", "payload": "STOP"})
            assert await sb.webhooks_drained(timeout_s=10)
    assert tap.body["queued"] is True
    wamid = sent.body["messages"][0]["id"]
    messages = [m for value in receiver.changes("messages") for m in value.get("messages", [])]
    assert [m["type"] for m in messages] == ["text", "text", "button"]
    assert messages[0]["text"]["body"] == "Quanto costa?"
    assert messages[1]["text"]["body"] == "STOP"
    assert messages[2]["button"] == {"payload": "STOP", "text": "STOP"}
    assert messages[2]["context"]["id"] == wamid
    assert all(receiver.signature_ok(raw, headers) for raw, headers in receiver.posts)


async def test_a_user_preferences_stop_is_emitted_and_later_marketing_sends_fail_with_131050() -> None:
    async with receiving() as receiver:
        config = SandboxConfig(
            webhook_url=receiver.url, webhook=QUICK, not_on_whatsapp_share=0.0, marketing_limit_share=0.0
        )
        async with running_sandbox(config) as sb, client_for(sb) as client:
            await client.inbound(**{"from": "393471234567", "kind": "user_preferences", "value": "stop"})
            answer = await client.send(spring_sale("+393471234567"))
            assert await sb.webhooks_drained(timeout_s=10)
    [value] = receiver.changes("user_preferences")
    assert value["user_preferences"][0]["value"] == "stop"
    assert value["user_preferences"][0]["category"] == "marketing_messages"
    assert answer.status == 200
    [failed] = [s for s in receiver.statuses() if s["status"] == "failed"]
    assert failed["errors"][0]["code"] == 131050


async def test_inbound_without_a_sender_number_is_refused_with_100() -> None:
    async with (
        running_sandbox(SandboxConfig()) as sb,
        aiohttp.ClientSession() as session,
        session.post(f"{sb.base_url}/_sandbox/inbound", data=json.dumps({"kind": "text"})) as response,
    ):
        body = await response.json()
    assert body["error"]["code"] == 100


async def test_an_expired_on_premises_token_is_refused_with_401() -> None:
    async with (
        running_sandbox(SandboxConfig(onprem_token_ttl_s=0.2)) as sb,
        aiohttp.ClientSession() as session,
    ):
        auth = {"Authorization": basic("admin", "sandbox-password")}
        async with session.post(f"{sb.base_url}/v1/users/login", headers=auth) as response:
            token = (await response.json())["users"][0]["token"]
        await asyncio.sleep(0.3)
        body = spring_sale("+393471234567")
        del body["messaging_product"]
        headers = {"Authorization": f"Bearer {token}"}
        async with session.post(f"{sb.base_url}/v1/messages", json=body, headers=headers) as response:
            status, answer = response.status, await response.json()
    assert status == 401
    assert answer["errors"][0]["code"] == 0

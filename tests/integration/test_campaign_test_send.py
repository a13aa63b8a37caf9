"""`campaigns test` against the sandbox (a real HTTP server), through the real Cloud provider: the body a
test number receives is the body the real recipient receives, but for `to` (and without the callback
data that would tie its webhooks to the recipient's ledger row); test sends stay out of the ledger,
dedup and the tier budget."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.exceptions import UserError
from campaigns.core.models import MESSAGE_TABLE, TIER_USAGE_TABLE
from campaigns.definitions import CampaignDefinition, create_campaign
from campaigns.planning.planner import plan_campaign
from campaigns.templates.catalog import parse_templates, store_templates
from campaigns.templates.sync import SyncConfig, fetch_templates
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from scheduler.providers.factory import make_provider
from scheduler.sending.run_report import StopReason
from scheduler.sending.test_send import recorded_test_sends, send_test_messages
from tests.campaign_seed import people, seed_list
from tests.integration.test_dispatch_sandbox import sandbox_settings, send_campaign

TEST_NUMBERS = ["+393479990001", "+393479990002"]


@asynccontextmanager
async def recording_proxy(target: str) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on port 0 that keeps every POSTed JSON body and forwards it to `target`."""
    seen: list[dict[str, Any]] = []

    async def forward(request: web.Request) -> web.Response:
        raw = await request.read()
        if request.method == "POST":
            seen.append(json.loads(raw))
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(request.method, target + request.path_qs, data=raw, headers=headers) as answer,
        ):
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()


async def _campaign(engine: Engine, base_url: str) -> int:
    config = SyncConfig(
        base_url=base_url, version="v23.0", waba_id=SandboxConfig().waba_id, access_token="sandbox-token"
    )
    store_templates(
        engine, parse_templates(await fetch_templates(config), source="sandbox"), mark_missing_gone=False
    )
    seed_list(engine, "spring", people(0, 5))
    settings = sandbox_settings(base_url)
    definition = CampaignDefinition(
        name="spring",
        list_name="spring",
        template_name="spring_sale",
        language="it",
        params={"1": "{first_name}", "2": "20%"},
        button_payloads={"0": "STOP"},
    )
    campaign = create_campaign(engine, settings=settings, definition=definition)
    plan_campaign(engine, settings=settings, campaign=campaign.name)
    return int(campaign.id or 0)


def _but_to(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("to", "biz_opaque_callback_data")}


async def test_a_test_number_receives_the_recipients_body_but_to_and_nothing_is_counted(
    engine: Engine,
) -> None:
    async with running_sandbox(SandboxConfig(mps=80)) as sb, recording_proxy(sb.base_url) as (url, seen):
        campaign_id = await _campaign(engine, url)
        settings = sandbox_settings(url)
        campaign = control.find_campaign(engine, campaign_id)
        provider = make_provider(settings, settings.sender(None))
        try:
            results = await send_test_messages(
                engine, settings=settings, campaign=campaign, provider=provider, to=TEST_NUMBERS,
                as_phone="+393470000003",
            )  # fmt: skip
        finally:
            await provider.close()
        tests = [body for body in seen if body.get("to") in TEST_NUMBERS]
        report = await send_campaign(engine, campaign_id, settings)
    assert all(r.wamid and r.error is None for r in results), results
    real = [body for body in seen if body.get("to") == "+393470000003"]
    assert len(real) == 1 and len(tests) == 2
    assert real[0]["biz_opaque_callback_data"].startswith("wacamp:")
    assert "N3" in json.dumps(real[0])  # personalised for that recipient
    for body in tests:
        assert "biz_opaque_callback_data" not in body
        assert _but_to(body) == _but_to(real[0])
    assert report.reason is StopReason.COMPLETED, report.message
    with engine.connect() as conn:
        ledger_phones = set(conn.execute(sa.select(MESSAGE_TABLE.c.phone)).scalars())
        counted = set(conn.execute(sa.select(TIER_USAGE_TABLE.c.phone)).scalars())
    assert ledger_phones.isdisjoint(TEST_NUMBERS) and counted.isdisjoint(TEST_NUMBERS)
    assert len(counted) == 5
    recorded = recorded_test_sends(engine, campaign_id)
    assert [(r.phone, r.as_phone, r.wamid) for r in recorded] == [
        (r.phone, "+393470000003", r.wamid) for r in results
    ]


async def test_a_test_send_needs_a_planned_campaign_a_recipient_with_a_body_and_a_number(
    engine: Engine,
) -> None:
    async with running_sandbox(SandboxConfig(mps=80)) as sb:
        campaign_id = await _campaign(engine, sb.base_url)
        settings = sandbox_settings(sb.base_url)
        campaign = control.find_campaign(engine, campaign_id)
        provider = make_provider(settings, settings.sender(None))
        try:
            with pytest.raises(UserError, match="not a recipient"):
                await send_test_messages(
                    engine, settings=settings, campaign=campaign, provider=provider, to=TEST_NUMBERS,
                    as_phone="+393479999999",
                )  # fmt: skip
            with pytest.raises(UserError, match="no test number"):
                await send_test_messages(
                    engine, settings=settings, campaign=campaign, provider=provider, to=[]
                )
        finally:
            await provider.close()
    assert recorded_test_sends(engine, campaign_id) == []

"""The fault scenarios over real HTTP: throttle-storm, flaky, slow, template-paused."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from sandbox.config import FaultSettings, SandboxConfig, WebhookTiming
from sandbox.server import running_sandbox
from tests.sandbox_support import SandboxClient, client_for, numbers, receiving, spring_sale


def faulty(*faults: str, **settings: object) -> SandboxConfig:
    return SandboxConfig(
        faults=faults,
        fault_settings=FaultSettings(**settings),  # type: ignore[arg-type]
        pair_spacing_s=0,
        mps=0,
    )


async def test_a_throttle_storm_answers_130429_to_every_send_while_it_lasts() -> None:
    config = faulty("throttle-storm", storm_every_s=600.0, storm_length_s=300.0)
    async with running_sandbox(config) as sb, client_for(sb) as client:
        answers = [await client.send(spring_sale(to)) for to in numbers(5)]
        accepted = sb.stats().accepted
    assert [a.code for a in answers] == [130429] * 5
    assert accepted == 0


async def test_sends_are_accepted_again_once_the_storm_is_over() -> None:
    config = faulty("throttle-storm", storm_every_s=600.0, storm_length_s=1.0)
    async with running_sandbox(config) as sb, client_for(sb) as client:
        during = await client.send(spring_sale("+393471234567"))
        await asyncio.sleep(1.05)
        after = await client.send(spring_sale("+393471234568"))
    assert during.code == 130429
    assert after.status == 200


async def _flaky_outcomes(client: SandboxClient, recipients: list[str]) -> list[str]:
    outcomes = []
    for to in recipients:
        try:
            answer = await client.send(spring_sale(to))
        except aiohttp.ServerDisconnectedError:
            outcomes.append("reset")
        else:
            outcomes.append(f"{answer.status}:{answer.code}")
    return outcomes


async def test_flaky_answers_some_5xx_with_131000_or_131016_and_resets_some_accepted_sends() -> None:
    config = faulty("flaky", flaky_error_share=0.3, flaky_reset_share=0.2)
    async with running_sandbox(config) as sb:
        async with aiohttp.ClientSession() as session:
            outcomes = await _flaky_outcomes(SandboxClient(sb, session), numbers(80))
        stats = sb.stats()
    assert "500:131000" in outcomes
    assert "503:131016" in outcomes
    assert "200:None" in outcomes
    resets = outcomes.count("reset")
    assert resets > 0
    assert stats.resets_after_accept == resets
    assert stats.accepted == outcomes.count("200:None") + resets, "a reset send was accepted and recorded"


async def test_flaky_gives_the_same_outcomes_for_the_same_seed() -> None:
    config = faulty("flaky", flaky_error_share=0.3, flaky_reset_share=0.2)
    runs = []
    for _ in range(2):
        async with running_sandbox(config) as sb, aiohttp.ClientSession() as session:
            runs.append(await _flaky_outcomes(SandboxClient(sb, session), numbers(30)))
    assert runs[0] == runs[1]


async def test_slow_adds_hundreds_of_milliseconds_before_answering() -> None:
    config = faulty("slow", slow_ms=(200.0, 300.0))
    async with running_sandbox(config) as sb, client_for(sb) as client:
        started = time.monotonic()
        answer = await client.send(spring_sale("+393471234567"))
        elapsed_s = time.monotonic() - started
    assert answer.status == 200
    assert elapsed_s >= 0.2


async def test_template_paused_pauses_the_template_after_n_sends_with_132015_and_a_status_update() -> None:
    timing = WebhookTiming(sent_delay_s=(0.0, 0.01), delivered_share=0.0, batch_wait_s=0.0)
    async with receiving() as receiver:
        config = SandboxConfig(
            faults=("template-paused",),
            fault_settings=FaultSettings(pause_after_sends=3),
            webhook_url=receiver.url,
            webhook=timing,
            pair_spacing_s=0,
        )
        async with running_sandbox(config) as sb, client_for(sb) as client:
            answers = [await client.send(spring_sale(to)) for to in numbers(5)]
            listing = await client.get(f"/v23.0/{config.waba_id}/message_templates", name="spring_sale")
            assert await sb.webhooks_drained(timeout_s=10)
    assert [a.status for a in answers[:3]] == [200, 200, 200]
    assert [a.code for a in answers[3:]] == [132015, 132015]
    [update] = receiver.changes("message_template_status_update")
    assert update["event"] == "PAUSED"
    assert (update["message_template_name"], update["message_template_language"]) == ("spring_sale", "it")
    statuses = {t["language"]: t["status"] for t in listing.body["data"]}
    assert statuses == {"it": "PAUSED", "en": "APPROVED"}

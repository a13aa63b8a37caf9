"""The real providers against the in-process sandbox platform (Cloud and On-Premises shapes)."""

from __future__ import annotations

import asyncio
import json

import pytest

from campaigns.core.exceptions import OutcomeUnknownError, SenderFatalError, ThrottledError
from campaigns.core.settings_loading import load_settings
from campaigns.core.settings_sections import SenderSettings
from sandbox.config import FaultSettings, SandboxConfig
from sandbox.server import running_sandbox
from scheduler.providers.base import PhoneLimits
from scheduler.providers.cloud import CloudProvider
from scheduler.providers.factory import make_provider
from scheduler.providers.onprem import OnPremProvider
from tests.dispatch_support import body_for, phone_of


def provider_for(
    base_url: str, *, api: str = "cloud", password: str = "sandbox-password"
) -> CloudProvider | OnPremProvider:
    settings, _ = load_settings(
        environ={
            "WACAMP_API_BASE_URL": base_url,
            "WACAMP_ACCESS_TOKEN": "sandbox-token",
            "WACAMP_ONPREM_USERNAME": "admin",
            "WACAMP_ONPREM_PASSWORD": password,
        }
    )
    sender = SenderSettings(name="s", phone_number_id="100000000000001", api=api)  # type: ignore[arg-type]
    return make_provider(settings, sender)


def body(index: int, *, api: str = "cloud") -> str:
    text, _ = body_for(message_id=index, phone=phone_of(index), order_id=f"A{index}", api=api)
    return text


async def test_the_cloud_provider_reads_the_sandbox_limits_and_sends() -> None:
    async with running_sandbox(SandboxConfig(mps=0, not_on_whatsapp_share=0, marketing_limit_share=0)) as sb:
        provider = provider_for(sb.base_url)
        try:
            limits = await provider.read_limits()
            result = await provider.send(body(1))
        finally:
            await provider.close()
        stats = sb.stats()
    assert limits == PhoneLimits(
        messaging_tier="TIER_2K", throughput_level="STANDARD", quality_rating="GREEN"
    )
    assert result.wamid.startswith("wamid.")
    assert stats.accepted == 1


@pytest.mark.parametrize("status", [400, 429])
async def test_the_sandbox_throttle_is_a_throttle_with_either_status(status: int) -> None:
    config = SandboxConfig(mps=1, throttle_status=status, not_on_whatsapp_share=0, marketing_limit_share=0)
    async with running_sandbox(config) as sb:
        provider = provider_for(sb.base_url)
        try:
            outcomes = await asyncio.gather(
                *(provider.send(body(i)) for i in range(5)), return_exceptions=True
            )
        finally:
            await provider.close()
    throttles = [o for o in outcomes if isinstance(o, ThrottledError)]
    assert throttles and all(t.code == 130429 and t.http_status == status for t in throttles)


async def test_a_sandbox_reset_after_accepting_is_an_unknown_outcome_never_an_error() -> None:
    faults = FaultSettings(flaky_error_share=0.0, flaky_reset_share=1.0)
    config = SandboxConfig(mps=0, faults=("flaky",), fault_settings=faults, not_on_whatsapp_share=0)
    async with running_sandbox(config) as sb:
        provider = provider_for(sb.base_url)
        try:
            with pytest.raises(OutcomeUnknownError):
                await provider.send(body(2))
        finally:
            await provider.close()
        assert sb.stats().accepted == 1


async def test_the_on_prem_provider_logs_in_to_the_sandbox_and_sends_the_on_prem_shape() -> None:
    async with running_sandbox(SandboxConfig(mps=0, not_on_whatsapp_share=0, marketing_limit_share=0)) as sb:
        provider = provider_for(sb.base_url, api="onprem")
        assert isinstance(provider, OnPremProvider)
        try:
            onprem_body = body(3, api="onprem")
            assert "messaging_product" not in json.loads(onprem_body)
            result = await provider.send(onprem_body)
        finally:
            await provider.close()
    assert result.wamid
    assert provider.logins == 1


async def test_the_on_prem_provider_logs_in_again_when_the_sandbox_token_expired() -> None:
    config = SandboxConfig(mps=0, onprem_token_ttl_s=0.3, not_on_whatsapp_share=0, marketing_limit_share=0)
    async with running_sandbox(config) as sb:
        provider = provider_for(sb.base_url, api="onprem")
        assert isinstance(provider, OnPremProvider)
        try:
            await provider.send(body(4, api="onprem"))
            await asyncio.sleep(0.4)
            await provider.send(body(5, api="onprem"))
        finally:
            await provider.close()
    assert provider.logins == 2


async def test_wrong_on_prem_credentials_stop_the_sender() -> None:
    async with running_sandbox(SandboxConfig(mps=0)) as sb:
        provider = provider_for(sb.base_url, api="onprem", password="wrong")
        try:
            with pytest.raises(SenderFatalError, match="login refused"):
                await provider.send(body(6, api="onprem"))
        finally:
            await provider.close()

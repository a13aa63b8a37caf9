"""Build the provider of one sender from the settings."""

from __future__ import annotations

from campaigns.core.settings import Settings
from campaigns.core.settings_sections import SenderSettings
from scheduler.providers.base import Provider
from scheduler.providers.cloud import CloudProvider
from scheduler.providers.http import EXPECTED_LATENCY_S, HttpTransport, pool_limit
from scheduler.providers.onprem import OnPremProvider


def make_transport(
    settings: Settings, sender: SenderSettings, *, expected_latency_s: float = EXPECTED_LATENCY_S
) -> HttpTransport:
    """One HTTP session for the sender, its pool sized to rate × latency (at most `max_in_flight`)."""
    limit = pool_limit(
        rate_per_s=settings.sender_rate_per_s(sender),
        max_in_flight=settings.dispatch.max_in_flight,
        expected_latency_s=expected_latency_s,
    )
    return HttpTransport(
        connect_timeout_s=settings.whatsapp.connect_timeout_s,
        request_timeout_s=settings.whatsapp.request_timeout_s,
        pool_limit=limit,
    )


def make_provider(settings: Settings, sender: SenderSettings) -> CloudProvider | OnPremProvider:
    """The Cloud or On-Premises client of `sender` (`sender.api`), with `[whatsapp]` URL and credentials.

    Keep at most `provider.pool_limit` sends in flight: more would wait for a connection inside
    aiohttp and then leave in a bunch, defeating the rate limiter's spacing.
    """
    transport = make_transport(settings, sender)
    whatsapp = settings.whatsapp
    if sender.api == "onprem":
        return OnPremProvider(
            base_url=whatsapp.base_url,
            username=whatsapp.username,
            password=whatsapp.password,
            transport=transport,
        )
    return CloudProvider(
        base_url=whatsapp.base_url,
        version=whatsapp.version,
        phone_number_id=sender.phone_number_id,
        access_token=whatsapp.access_token,
        transport=transport,
        management_max_retries=whatsapp.management_max_retries,
    )


def _conforms(provider: CloudProvider | OnPremProvider) -> Provider:
    """Both clients satisfy the `Provider` protocol (checked by mypy here)."""
    return provider

"""The WhatsApp Cloud API client (graph.facebook.com or a stand-in such as the sandbox)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import tenacity

from campaigns.core.exceptions import OutcomeUnknownError, ThrottledError, TransientError
from scheduler.providers.base import PhoneLimits, SendResult
from scheduler.providers.http import HttpTransport, error_for, send_result_from
from scheduler.providers.marketing import marketing_url, send_marketing

#: The phone-number fields `read_limits` asks for.
PHONE_LIMIT_FIELDS = "whatsapp_business_manager_messaging_limit,throughput,quality_rating"


class CloudProvider:
    """Sends through `POST {base}/{version}/{phone_number_id}/messages` with a bearer token.

    `read_limits` retries throttled and transient failures (it is a read, so an unknown outcome is
    retried too) up to `management_max_retries` times with jittered exponential waits.
    """

    def __init__(
        self,
        *,
        base_url: str,
        version: str,
        phone_number_id: str,
        access_token: str,
        transport: HttpTransport,
        management_max_retries: int = 6,
        retry_wait_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        base = base_url.rstrip("/")
        node = quote(phone_number_id, safe="")
        self.messages_url = f"{base}/{version}/{node}/messages"
        self.marketing_url = marketing_url(self.messages_url)
        self.phone_url = f"{base}/{version}/{node}?fields={PHONE_LIMIT_FIELDS}"
        self.transport = transport
        self._headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"}
        self._management_max_retries = management_max_retries
        self._retry_wait_s = retry_wait_s
        self._sleep = sleep

    @property
    def pool_limit(self) -> int:
        """Connections in the pool: keep at most this many sends in flight."""
        return self.transport.pool_limit

    async def send(self, body_json: str) -> SendResult:
        """POST the frozen body as it is; return the accepted message or raise its `PlatformError`."""
        answer = await self.transport.request(
            "POST", self.messages_url, headers=self._headers, body=body_json.encode("utf-8")
        )
        return send_result_from(answer)

    async def send_marketing(self, body_json: str) -> SendResult:
        """POST a frozen marketing body to the Marketing Messages API (`scheduler.providers.marketing`)."""
        return await send_marketing(
            self.transport, self.marketing_url, headers=self._headers, body_json=body_json
        )

    async def read_limits(self) -> PhoneLimits:
        """Messaging tier, throughput level and quality rating of the phone number."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((ThrottledError, TransientError, OutcomeUnknownError)),
            stop=tenacity.stop_after_attempt(self._management_max_retries + 1),
            wait=tenacity.wait_random_exponential(multiplier=self._retry_wait_s, max=60 * self._retry_wait_s),
            reraise=True,
            sleep=self._sleep,
        )
        data: Any = await retrying(self._read_phone_fields)
        return phone_limits_from(data)

    async def _read_phone_fields(self) -> Any:
        headers = {"Authorization": self._headers["Authorization"]}
        answer = await self.transport.request("GET", self.phone_url, headers=headers)
        data = answer.json()
        if not 200 <= answer.status < 300 or not isinstance(data, dict) or "error" in data:
            raise error_for(answer)
        return data

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.transport.close()


def _text(value: Any, *keys: str) -> str | None:
    """A string value, or the first string found under `keys` of a dict value (liberal parsing)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float):
        return str(int(value))
    if isinstance(value, dict):
        for key in keys:
            found = _text(value.get(key), *keys)
            if found:
                return found
    if isinstance(value, list) and value:
        return _text(value[0], *keys)
    return None


def phone_limits_from(data: Any) -> PhoneLimits:
    """Read the tier (a `TIER_*` string or a number), `throughput.level` and `quality_rating`."""
    if not isinstance(data, dict):
        return PhoneLimits()
    tier = _text(
        data.get("whatsapp_business_manager_messaging_limit"),
        "current_limit",
        "messaging_limit",
        "max_daily_conversations_per_business",
        "value",
        "tier",
    ) or _text(data.get("messaging_limit_tier"))
    level = _text(data.get("throughput"), "level", "value")
    quality = _text(data.get("quality_rating"), "rating", "value")
    return PhoneLimits(
        messaging_tier=tier.upper() if tier else None,
        throughput_level=level.upper() if level else None,
        quality_rating=quality.upper() if quality else None,
    )

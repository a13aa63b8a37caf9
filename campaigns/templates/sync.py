"""`templates sync`: read every template of the WABA from the Graph API, page after page.

``GET {base_url}/{version}/{waba_id}/message_templates`` with the Bearer token, following
``paging.next`` to the end. The management API allows a few hundred calls per hour: a throttled page
(error 4, 80007 or HTTP 429) or a transient failure is retried with jittered exponential backoff
(`tenacity`), honouring ``Retry-After``, at most ``whatsapp.management_max_retries`` times.
All pages are read before anything is stored, so a failed sync changes nothing.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import (
    ConfigError,
    PlatformError,
    RetryableError,
    ThrottledError,
    TransientError,
    UserError,
    classify_platform_error,
)

FIELDS = "name,language,status,category,parameter_format,components,id,rejected_reason"


class SyncError(UserError):
    """The template listing could not be read."""


@dataclass(frozen=True)
class SyncConfig:
    """Where and how to read the listing."""

    base_url: str
    version: str
    waba_id: str
    access_token: str
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 15.0
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    page_limit: int = 100

    @classmethod
    def from_settings(cls, settings: Any) -> SyncConfig:
        wa = settings.whatsapp
        missing = [key for key in ("waba_id", "access_token") if not getattr(wa, key)]
        if missing:
            names = {"waba_id": "WACAMP_WABA_ID", "access_token": "WACAMP_ACCESS_TOKEN"}
            what = ", ".join(f"whatsapp.{k} ({names[k]})" for k in missing)
            raise ConfigError(f"templates sync needs {what}")
        return cls(
            base_url=wa.base_url,
            version=wa.version,
            waba_id=wa.waba_id,
            access_token=wa.access_token,
            connect_timeout_s=wa.connect_timeout_s,
            request_timeout_s=wa.request_timeout_s,
            max_retries=wa.management_max_retries,
            backoff_base_s=settings.limits.backoff_base_s,
            backoff_max_s=settings.limits.backoff_max_s,
        )

    @property
    def first_url(self) -> str:
        return f"{self.base_url}/{self.version}/{self.waba_id}/message_templates"


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), None if absent."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - utcnow()).total_seconds())


def platform_error(status: int, payload: Any, retry_after: float | None) -> PlatformError:
    """The classified error of a Graph API error answer (``{"error": {"code", "message"}}``)."""
    error = payload.get("error", {}) if isinstance(payload, dict) else {}
    code = error.get("code") if isinstance(error, dict) else None
    return classify_platform_error(
        code=code if isinstance(code, int) else None,
        title=str(error.get("message", f"HTTP {status}")) if isinstance(error, dict) else f"HTTP {status}",
        http_status=status,
        retry_after_s=retry_after,
    )


class _Wait:
    """Tenacity wait: the server's Retry-After when it gave one, else jittered exponential backoff."""

    def __init__(self, *, base_s: float, max_s: float) -> None:
        self.backoff = wait_random_exponential(multiplier=base_s, max=max_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ThrottledError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        return float(self.backoff(state))


async def _get_page(
    session: aiohttp.ClientSession, url: str, params: dict[str, str] | None
) -> dict[str, Any]:
    try:
        async with session.get(url, params=params) as response:
            text = await response.text()
            retry_after = retry_after_s(response.headers.get("Retry-After"))
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    try:
        payload = json.loads(text) if text else {}
    except json.JSONDecodeError:
        payload = {}
    if status >= 400 or (isinstance(payload, dict) and "error" in payload):
        raise platform_error(status, payload, retry_after)
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise SyncError(f"GET {url}: the answer has no 'data' list")
    return payload


async def fetch_templates(
    config: SyncConfig,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Every template object of the listing (only those called `name` when given), all pages, in order."""
    timeout = aiohttp.ClientTimeout(
        total=config.request_timeout_s, connect=config.connect_timeout_s, sock_read=config.request_timeout_s
    )
    headers = {"Authorization": f"Bearer {config.access_token}"}
    items: list[dict[str, Any]] = []
    url: str | None = config.first_url
    first = {"limit": str(config.page_limit), "fields": FIELDS} | ({"name": name} if name else {})
    params: dict[str, str] | None = first
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        while url:
            page = await _get_page_retrying(session, url, params, config=config, sleep=sleep)
            items.extend(page["data"])
            paging = page.get("paging")
            url = paging.get("next") if isinstance(paging, dict) else None
            params = None  # `next` is a complete URL with its own query
    return items


async def _get_page_retrying(
    session: aiohttp.ClientSession,
    url: str,
    params: dict[str, str] | None,
    *,
    config: SyncConfig,
    sleep: Callable[[float], Awaitable[None]],
) -> dict[str, Any]:
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(config.max_retries + 1),
        wait=_Wait(base_s=config.backoff_base_s, max_s=config.backoff_max_s),
        sleep=sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await _get_page(session, url, params)
    except PlatformError as exc:
        tries = f" after {config.max_retries + 1} attempts" if isinstance(exc, RetryableError) else ""
        raise SyncError(f"templates sync: GET {url} failed{tries}: {exc}") from exc
    raise AssertionError("unreachable: tenacity either returns or raises")

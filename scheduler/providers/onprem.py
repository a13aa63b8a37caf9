"""The On-Premises API client: basic-auth login for a bearer token, refreshed before it expires."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import OutcomeUnknownError, RetryableError, SenderFatalError, TransientError
from scheduler.providers.base import PhoneLimits, SendResult
from scheduler.providers.http import HttpAnswer, HttpTransport, error_for, parse_error_body, send_result_from

#: Error codes that mean "this token is not (or no longer) valid": log in again once.
TOKEN_REJECTED_CODES = frozenset({0, 190, 1005})


class OnPremProvider:
    """Sends through `POST {base}/v1/messages`; logs in with `POST {base}/v1/users/login`.

    The token is fetched on first use, refreshed `refresh_margin_s` before its `expires_after`, and
    fetched again once if a send is refused for authentication (a refused request was not taken, so
    sending it again cannot duplicate it). Concurrent sends share one login.
    """

    def __init__(
        self,
        *,
        base_url: str,
        username: str,
        password: str,
        transport: HttpTransport,
        refresh_margin_s: float = 60.0,
        utc_now: Callable[[], datetime] = utcnow,
    ) -> None:
        base = base_url.rstrip("/")
        self.messages_url = f"{base}/v1/messages"
        self.login_url = f"{base}/v1/users/login"
        self.transport = transport
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._basic_auth = f"Basic {credentials}"
        self._refresh_margin = timedelta(seconds=refresh_margin_s)
        self._utc_now = utc_now
        self._token: str | None = None
        self._expires_at: datetime | None = None
        self._login_lock = asyncio.Lock()
        self.logins = 0

    @property
    def pool_limit(self) -> int:
        """Connections in the pool: keep at most this many sends in flight."""
        return self.transport.pool_limit

    async def send(self, body_json: str) -> SendResult:
        """POST the frozen body as it is (logging in first when needed)."""
        body = body_json.encode("utf-8")
        token = await self._bearer()
        answer = await self._post(token, body)
        if _token_rejected(answer):
            token = await self._bearer(rejected=token)
            answer = await self._post(token, body)
        return send_result_from(answer)

    async def read_limits(self) -> PhoneLimits:
        """The On-Premises API does not report tier or throughput: everything unknown."""
        return PhoneLimits()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.transport.close()

    async def _post(self, token: str, body: bytes) -> HttpAnswer:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return await self.transport.request("POST", self.messages_url, headers=headers, body=body)

    async def _bearer(self, *, rejected: str | None = None) -> str:
        async with self._login_lock:
            if self._token is None or self._token == rejected or self._expiring():
                await self._login()
            assert self._token is not None
            return self._token

    def _expiring(self) -> bool:
        return self._expires_at is not None and self._utc_now() >= self._expires_at - self._refresh_margin

    async def _login(self) -> None:
        headers = {"Authorization": self._basic_auth, "Content-Type": "application/json"}
        try:
            answer = await self.transport.request("POST", self.login_url, headers=headers, body=b"{}")
        except OutcomeUnknownError as exc:
            # A login is not a message: whatever happened to it, nothing was sent to anyone.
            raise TransientError(f"On-Premises login got no answer: {exc}") from exc
        users = answer.json().get("users") if isinstance(answer.json(), dict) else None
        first = users[0] if isinstance(users, list) and users and isinstance(users[0], dict) else {}
        token = first.get("token")
        if not 200 <= answer.status < 300 or not isinstance(token, str) or not token:
            raise _login_error(answer)
        self._token = token
        self._expires_at = parse_expiry(first.get("expires_after"), now=self._utc_now())
        self.logins += 1


def _token_rejected(answer: HttpAnswer) -> bool:
    if answer.status == 401:
        return True
    body = parse_error_body(answer.json())
    return body is not None and body.code in TOKEN_REJECTED_CODES and answer.status in (401, 403)


def _login_error(answer: HttpAnswer) -> Exception:
    error = error_for(answer)
    if isinstance(error, RetryableError):
        return error
    return SenderFatalError(
        f"On-Premises login refused (HTTP {answer.status}): {error.title}"
        " — check [whatsapp] username and password",
        code=error.code,
        http_status=answer.status,
    )


def parse_expiry(value: Any, *, now: datetime) -> datetime | None:
    """`expires_after`: "2025-03-01 15:29:26+00:00" (ISO; naive is UTC), epoch seconds or seconds from now."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC) if value > 1e9 else now + timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_expiry(float(text), now=now)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return None

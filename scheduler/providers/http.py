"""The HTTP layer both providers share: one session, explicit timeouts, and honest failure classes.

The distinction that at-most-once delivery rests on is made here. aiohttp starts writing a request
(`ClientRequest.send`) only once it holds a connection for it, and the session's request class
(`_TrackedRequest`) marks that moment; before it nothing can have reached the platform, after it
anything may have:

- a failure before the request was written (connection refused, DNS, connect timeout, waiting for
  a pooled connection) → `TransientError`: safe to retry;
- a failure after it (read timeout, reset, server closed the socket, truncated answer) →
  `OutcomeUnknownError`: the message may have been accepted, so it must never be resent blindly.

aiohttp itself retries a request on a stale keep-alive connection only for idempotent methods;
POST is never retried behind our back.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from campaigns.core.exceptions import (
    OutcomeUnknownError,
    PlatformError,
    SenderFatalError,
    TransientError,
    classify_platform_error,
)
from scheduler.providers.base import SendResult

#: The round trip a send is assumed to take when sizing the connection pool (rate × latency).
EXPECTED_LATENCY_S = 0.25


def pool_limit(
    *, rate_per_s: float, max_in_flight: int, expected_latency_s: float = EXPECTED_LATENCY_S
) -> int:
    """Connections to sustain `rate_per_s` at `expected_latency_s` (×2 headroom), at most `max_in_flight`."""
    return max(1, min(max_in_flight, math.ceil(rate_per_s * expected_latency_s * 2)))


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP response that was read completely: its body as the bytes that came."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as text (bytes that are not UTF-8 replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (parsed once per answer)."""
        return self._json

    @functools.cached_property
    def _json(self) -> Any:
        # orjson reads the bytes as they came, about 4 x faster than decode + json.loads (issue #17);
        # what it refuses (a number past 64 bits, bytes that are not UTF-8) gets the stdlib's reading.
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(self.text)
        except ValueError:
            return None


class _Progress:
    """How far one request got: `written` once aiohttp starts writing it to a connection."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written = False


#: The progress of the request this task is making (`HttpTransport.request` sets it around each one).
_PROGRESS: contextvars.ContextVar[_Progress | None] = contextvars.ContextVar("wacamp_request", default=None)


class _TrackedRequest(aiohttp.ClientRequest):
    """A request that marks its `_Progress` written when aiohttp starts writing it to a connection.

    aiohttp calls `send(conn)` in the requesting task once it holds a connection, just before the
    status line and headers go out (the moment its `on_request_headers_sent` trace signal marks: a
    tracing config marked it before, but fires seven signals per request for this one fact, a fifth
    of a send's CPU; issue #17). Everything that fails before it (refused, DNS, connect timeout, a
    wait for a pooled connection) sent nothing.
    """

    async def send(self, conn: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        progress = _PROGRESS.get()
        if progress is not None:
            progress.written = True
        return await super().send(conn)


class HttpTransport:
    """One `aiohttp.ClientSession` (created on first use, inside the running loop) for one provider."""

    def __init__(self, *, connect_timeout_s: float, request_timeout_s: float, pool_limit: int) -> None:
        self.pool_limit = pool_limit
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout_s, connect=connect_timeout_s, sock_connect=connect_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self.pool_limit, limit_per_host=self.pool_limit),
                request_class=_TrackedRequest,
                raise_for_status=False,
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> HttpAnswer:
        """Send one request and read the whole answer; raise `TransientError` or `OutcomeUnknownError`."""
        progress = _Progress()
        token = _PROGRESS.set(progress)
        try:
            async with self._get_session().request(method, url, data=body, headers=headers) as response:
                return HttpAnswer(response.status, response.headers, await response.read())
        except aiohttp.InvalidURL as exc:
            raise SenderFatalError(f"the API URL is not valid: {url}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            reason = _describe(exc)
            if not progress.written:
                raise TransientError(f"could not reach the API, nothing was sent: {reason}") from exc
            raise OutcomeUnknownError(f"no answer after the request was sent: {reason}") from exc
        finally:
            _PROGRESS.reset(token)

    async def close(self) -> None:
        """Close the session (and its connections)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def retry_after_s(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The `Retry-After` header in seconds (a number or an HTTP date), None when absent or unreadable."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class ErrorBody:
    """The error the platform described in a response body (Cloud or On-Premises shape)."""

    code: int | None
    title: str
    details: str


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def parse_error_body(data: Any) -> ErrorBody | None:
    """Cloud `{"error": {code, message, error_data: {details}}}` or On-Prem `{"errors": [{code, title}]}`."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        error_data = error.get("error_data")
        details = error_data.get("details") if isinstance(error_data, dict) else None
        title = error.get("message") or error.get("title") or error.get("error_user_title") or ""
        return ErrorBody(_as_int(error.get("code")), str(title), str(details or error.get("details") or ""))
    errors = data.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        title = first.get("title") or first.get("message") or ""
        return ErrorBody(_as_int(first.get("code")), str(title), str(first.get("details") or ""))
    return None


def error_for(answer: HttpAnswer) -> PlatformError:
    """The platform error an answer carries: by `error.code`; by HTTP status only without an error body."""
    wait_s = retry_after_s(answer.headers)
    body = parse_error_body(answer.json())
    if body is not None and body.code is not None:
        return classify_platform_error(
            code=body.code,
            title=body.title,
            http_status=answer.status,
            details=body.details,
            retry_after_s=wait_s,
        )
    title = body.title if body is not None else (answer.text.strip()[:200] or f"HTTP {answer.status}")
    if answer.status in (401, 403):
        return SenderFatalError(code=None, title=title, http_status=answer.status)
    return classify_platform_error(code=None, title=title, http_status=answer.status, retry_after_s=wait_s)


def send_result_from(answer: HttpAnswer) -> SendResult:
    """`messages[0].id` (and `message_status`) of a send answer, or the error it carries.

    An error answer raises its `PlatformError`; a 2xx answer without a message id raises
    `OutcomeUnknownError` (the platform may have taken the message without saying so readably).
    """
    data = answer.json()
    if 200 <= answer.status < 300 and parse_error_body(data) is None:
        messages = data.get("messages") if isinstance(data, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if isinstance(wamid, str) and wamid:
            status = first.get("message_status") if isinstance(first, dict) else None
            return SendResult(wamid=wamid, message_status=status if isinstance(status, str) else None)
        raise OutcomeUnknownError(
            f"HTTP {answer.status} without a message id: {answer.text.strip()[:200]}",
            http_status=answer.status,
        )
    raise error_for(answer)

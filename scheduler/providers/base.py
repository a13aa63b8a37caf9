"""What the dispatcher needs from a WhatsApp API client, whichever API it speaks.

A provider sends one prepared request body and either returns the platform's answer (`SendResult`)
or raises exactly one of the `campaigns.core.exceptions` platform errors:

- `RetryableError` subclasses (`ThrottledError` with `retry_after_s`, `PairRateLimitedError`,
  `MaintenanceError`, `TransientError`): the platform did not take the message; it may be retried.
  `TransientError` is also raised when the connection failed *before* the request was written
  (connection refused, DNS): nothing can have reached the platform.
- `PermanentError` subclasses (`RecipientError`, `MarketingLimitError`, `OptedOutError`,
  `CampaignFatalError`, `SenderFatalError`).
- `OutcomeUnknownError`: the request may have reached the platform but no answer came back (timeout
  after sending, connection reset, disconnect). The dispatcher records `unknown` and never resends.

Errors are classified by the body's `error.code` (`campaigns.core.exceptions.classify_platform_error`),
never by the HTTP status alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SendResult:
    """The platform accepted the message: its id and, on Cloud API, its `message_status`."""

    wamid: str
    message_status: str | None = None


@dataclass(frozen=True)
class PhoneLimits:
    """What `GET /{phone_number_id}?fields=...` says about a sender (None where it did not say)."""

    messaging_tier: str | None = None
    throughput_level: str | None = None
    quality_rating: str | None = None


class Provider(Protocol):
    """A WhatsApp API client for one sender phone number (one aiohttp.ClientSession each)."""

    @property
    def pool_limit(self) -> int:
        """Connections in its HTTP pool: the dispatcher keeps at most this many sends in flight.

        More would wait for a connection inside aiohttp and then leave in a bunch, defeating the rate
        limiter's spacing.
        """
        ...

    async def send(self, body_json: str) -> SendResult:
        """POST one frozen ledger body (JSON text built by `campaigns.content.payloads`) as it is."""
        ...

    async def read_limits(self) -> PhoneLimits:
        """The sender's messaging tier and throughput level as the platform reports them."""
        ...

    async def close(self) -> None:
        """Close the HTTP session."""
        ...

"""The one outcome policy: what wacamp does with each answer of the platform.

Pure (no I/O, no database, no asyncio): a platform answer, the `[limits]` settings and the attempt
count go in, ONE action comes out. Everyone asks here: the dispatcher (send errors), the webhook
processor (``failed`` statuses), the report ("what wacamp did") and ``campaigns retry`` (which codes
are worth a follow-up). They only do what the action says.

::

    answer ──► Cause (what it means) ──► Action (what to do)     describe(action) / describe_cause()
               outcome_causes           outcomes, outcome_delays   outcome_descriptions

An answer is classified by ``error.code``, never by the HTTP status alone (platform.md); the status only
breaks ties for a body without a known code (429 throttled, 5xx transient, anything else permanent).

| cause | action |
|---|---|
| throttled | `SlowSender`: the sender slows down (Retry-After), the row is requeued, attempt refunded |
| pair rate | `Requeue` of that recipient after ``pair_retry_base_s ** X`` (held), then `FailRow` |
| maintenance | `PauseSender` for ``maintenance_retry_s``, the row requeued, never gives up |
| transient | `Requeue` after jittered exponential backoff, then `FailRow` after ``max_attempts`` |
| marketing limit | `DeferRecipient` for ``marketing_defer_h`` (the message fails) |
| opted out | `SuppressContact` (the message fails) |
| recipient | `FailRow` |
| template unusable, account restricted | `StopCampaign` (the row is given back) |
| sender blocked | `StopSender` (the row is given back) |
| outcome unknown | `RecordUnknown` (never resent by itself) |
| marketing terms (131055) | `FallBackToCloud` (product_policy CLOUD_API_FALLBACK), else `StopCampaign` |
| template not synced (131009, marketing path) | `Requeue` after ``warmup_retry_s`` doubling, then `FailRow` |

A ``failed`` status webhook is about a message the platform had accepted: nothing can be retried then,
so only the contact effects remain (defer, suppress) and everything else fails the row; the campaign
and sender consequences arrive as webhooks of their own (template status, account update).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from campaigns.core import exceptions as exc
from campaigns.core.settings_sections import LimitsSettings
from campaigns.outcome_causes import Cause, cause_of_code, cause_of_error
from campaigns.outcome_delays import maintenance_delay_s, pair_rate_delay_s, transient_delay_s, warmup_delay_s

#: Throttled rows without a Retry-After go back to the queue for this long (the sender slows down anyway).
THROTTLE_REQUEUE_S = 1.0
#: The shipped ([marketing] warmup_retry_s, warmup_retry_max_s): Meta syncs a template within 10 minutes.
WARMUP_S = (60.0, 600.0)

# ----------------------------------------------------------------------------------------- actions


class ActionKind(enum.StrEnum):
    """The kinds of thing wacamp can do about an answer."""

    REQUEUE = "requeue"
    SLOW_SENDER = "slow the sender"
    PAUSE_SENDER = "pause the sender"
    DEFER_RECIPIENT = "defer the recipient"
    SUPPRESS_CONTACT = "suppress the contact"
    FAIL_ROW = "fail the row"
    STOP_CAMPAIGN = "stop the campaign"
    STOP_SENDER = "stop the sender"
    RECORD_UNKNOWN = "record unknown"
    FALL_BACK_TO_CLOUD = "fall back to the Cloud API"


@dataclass(frozen=True)
class Requeue:
    """The row goes back to the queue, due again in `after_s`; nothing is recorded as failed."""

    cause: Cause
    after_s: float
    refund_attempt: bool
    #: 131056: no request to this recipient before `after_s` from this engine either.
    hold_recipient: bool = False

    @property
    def kind(self) -> ActionKind:
        return ActionKind.REQUEUE


@dataclass(frozen=True)
class SlowSender:
    """Over a rate limit: the sender slows down and the row is requeued (attempt refunded)."""

    cause: Cause
    retry_after_s: float | None
    requeue_after_s: float

    @property
    def kind(self) -> ActionKind:
        return ActionKind.SLOW_SENDER


@dataclass(frozen=True)
class PauseSender:
    """The number is under maintenance: the sender pauses `pause_s`, the row is requeued after it."""

    cause: Cause
    pause_s: float

    @property
    def kind(self) -> ActionKind:
        return ActionKind.PAUSE_SENDER


@dataclass(frozen=True)
class DeferRecipient:
    """131049: this message fails, the recipient gets no marketing template for `defer_h` hours."""

    cause: Cause
    defer_h: float

    @property
    def kind(self) -> ActionKind:
        return ActionKind.DEFER_RECIPIENT

    def until(self, now: datetime) -> datetime:
        """When the deferral that starts at `now` ends."""
        return now + timedelta(hours=self.defer_h)


@dataclass(frozen=True)
class SuppressContact:
    """131050: this message fails and the contact is suppressed for good."""

    cause: Cause

    @property
    def kind(self) -> ActionKind:
        return ActionKind.SUPPRESS_CONTACT


@dataclass(frozen=True)
class FailRow:
    """The row is `failed` with its code; `attempts_spent` is set when retries were exhausted."""

    cause: Cause
    attempts_spent: int | None = None

    @property
    def kind(self) -> ActionKind:
        return ActionKind.FAIL_ROW


@dataclass(frozen=True)
class StopCampaign:
    """The campaign cannot go on (template unusable, account restricted): row given back, campaign paused."""

    cause: Cause

    @property
    def kind(self) -> ActionKind:
        return ActionKind.STOP_CAMPAIGN


@dataclass(frozen=True)
class StopSender:
    """The sender cannot send at all (auth, registration, payment): row given back, everything stops."""

    cause: Cause

    @property
    def kind(self) -> ActionKind:
        return ActionKind.STOP_SENDER


@dataclass(frozen=True)
class RecordUnknown:
    """The request may have reached the platform: the row becomes `unknown`, never resent by itself."""

    cause: Cause

    @property
    def kind(self) -> ActionKind:
        return ActionKind.RECORD_UNKNOWN


@dataclass(frozen=True)
class FallBackToCloud:
    """131055 with product_policy CLOUD_API_FALLBACK: this run sends through the Cloud API from now on.

    The refused row goes straight back to the queue (attempt refunded): the platform did not take it.
    """

    cause: Cause

    @property
    def kind(self) -> ActionKind:
        return ActionKind.FALL_BACK_TO_CLOUD


Action = (
    Requeue
    | FallBackToCloud
    | SlowSender
    | PauseSender
    | DeferRecipient
    | SuppressContact
    | FailRow
    | StopCampaign
    | StopSender
    | RecordUnknown
)


# ------------------------------------------------------------------------------------------ policy


def decide(
    cause: Cause,
    *,
    limits: LimitsSettings,
    attempt: int = 1,
    retry_after_s: float | None = None,
    cloud_fallback: bool = False,
    warmup_s: tuple[float, float] = WARMUP_S,
) -> Action:
    """THE decision: what to do about an answer of this cause.

    `cloud_fallback`: the campaign's product_policy lets a refused marketing send go through the Cloud
    API. `warmup_s`: ([marketing] warmup_retry_s, warmup_retry_max_s) for a template not synced yet.

    `attempt` counts the attempts spent on the retry counter of that cause, this one included: the
    row's attempts for transient and maintenance errors, the recipient's 131056 answers in this run for
    the pair rate (see `for_send_error`). `retry_after_s` is the platform's Retry-After, if any.
    """
    if cause is Cause.THROTTLED:
        wait_s = retry_after_s if retry_after_s is not None and retry_after_s > 0 else THROTTLE_REQUEUE_S
        return SlowSender(cause, retry_after_s=retry_after_s, requeue_after_s=wait_s)
    if cause is Cause.PAIR_RATE:
        pair_s = pair_rate_delay_s(attempt=attempt, limits=limits)
        if pair_s is None:
            return FailRow(cause, attempts_spent=attempt)
        return Requeue(cause, after_s=pair_s, refund_attempt=True, hold_recipient=True)
    if cause is Cause.MAINTENANCE:
        return PauseSender(cause, pause_s=maintenance_delay_s(attempt=max(1, attempt), limits=limits))
    if cause is Cause.MARKETING_TERMS:
        return FallBackToCloud(cause) if cloud_fallback else StopCampaign(cause)
    if cause is Cause.TEMPLATE_WARMING:
        return _warming(attempt=max(1, attempt), limits=limits, warmup_s=warmup_s)
    if cause is Cause.TRANSIENT:
        backoff_s = transient_delay_s(attempt=max(1, attempt), limits=limits)
        if backoff_s is None:
            return FailRow(cause, attempts_spent=attempt)
        return Requeue(cause, after_s=backoff_s, refund_attempt=False)
    return _final(cause, limits)


def _warming(*, attempt: int, limits: LimitsSettings, warmup_s: tuple[float, float]) -> Action:
    """131009 on the marketing path: wait for the template's sync (≤ 10 min), doubling; then give up."""
    if attempt >= limits.max_attempts:
        return FailRow(Cause.TEMPLATE_WARMING, attempts_spent=attempt)
    after_s = warmup_delay_s(attempt=attempt, warmup_s=warmup_s)
    return Requeue(Cause.TEMPLATE_WARMING, after_s=after_s, refund_attempt=False)


def _final(cause: Cause, limits: LimitsSettings) -> Action:
    """The actions that do not depend on attempts."""
    if cause is Cause.MARKETING_LIMIT:
        return DeferRecipient(cause, defer_h=limits.marketing_defer_h)
    if cause is Cause.OPTED_OUT:
        return SuppressContact(cause)
    if cause in (Cause.TEMPLATE_UNUSABLE, Cause.ACCOUNT_RESTRICTED):
        return StopCampaign(cause)
    if cause is Cause.SENDER_BLOCKED:
        return StopSender(cause)
    if cause is Cause.OUTCOME_UNKNOWN:
        return RecordUnknown(cause)
    return FailRow(cause)


def for_send_error(
    error: exc.PlatformError,
    *,
    limits: LimitsSettings,
    attempt: int,
    count_pair_strike: Callable[[], int] | None = None,
    cloud_fallback: bool = False,
    warmup_s: tuple[float, float] = WARMUP_S,
) -> Action:
    """What to do about an error a send raised (an error body, a transport error, no answer).

    `attempt` is the row's attempts (this one included). `count_pair_strike` is called once, and only
    for a 131056, to count it against the recipient and return how many it got in this run; without
    it the row's attempts count.
    """
    cause = cause_of_error(error)
    if cause is Cause.PAIR_RATE and count_pair_strike is not None:
        attempt = count_pair_strike()
    retry_after_s = error.retry_after_s if isinstance(error, exc.ThrottledError) else None
    return decide(
        cause,
        limits=limits,
        attempt=attempt,
        retry_after_s=retry_after_s,
        cloud_fallback=cloud_fallback,
        warmup_s=warmup_s,
    )


def for_failed_status(code: int | None, *, limits: LimitsSettings) -> Action:
    """What to do about a ``failed`` status webhook: the message is failed already, only contact effects."""
    cause = cause_of_code(code)
    action = _final(cause, limits)
    if isinstance(action, DeferRecipient | SuppressContact):
        return action
    return FailRow(cause)

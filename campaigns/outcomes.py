"""The one outcome policy: what wacamp does with each answer of the platform.

Pure (no I/O, no database, no asyncio): a platform answer, the `[limits]` settings and the attempt
count go in, ONE action comes out. Everyone asks here: the dispatcher (send errors), the webhook
processor (``failed`` statuses), the report ("what wacamp did") and ``campaigns retry`` (which codes
are worth a follow-up). They only do what the action says.

::

    answer ──► Cause (what it means) ──► Action (what to do)     describe(action) / describe_cause()

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

import tenacity

from campaigns.core import exceptions as exc
from campaigns.core.settings_sections import LimitsSettings

#: Throttled rows without a Retry-After go back to the queue for this long (the sender slows down anyway).
THROTTLE_REQUEUE_S = 1.0
#: The shipped ([marketing] warmup_retry_s, warmup_retry_max_s): Meta syncs a template within 10 minutes.
WARMUP_S = (60.0, 600.0)


class Cause(enum.StrEnum):
    """What a platform answer means, in the policy's words."""

    THROTTLED = "throttled"
    PAIR_RATE = "pair rate"
    MAINTENANCE = "maintenance"
    TRANSIENT = "transient"
    MARKETING_LIMIT = "marketing limit"
    OPTED_OUT = "opted out"
    RECIPIENT = "recipient"
    TEMPLATE_UNUSABLE = "template unusable"
    ACCOUNT_RESTRICTED = "account restricted"
    SENDER_BLOCKED = "sender blocked"
    OUTCOME_UNKNOWN = "outcome unknown"
    MARKETING_TERMS = "marketing terms not accepted"
    TEMPLATE_WARMING = "template not synced"


#: The code sets of `campaigns.core.exceptions`, by cause (a code belongs to one cause only).
CODES: dict[Cause, frozenset[int]] = {
    Cause.THROTTLED: exc.THROTTLE_CODES,
    Cause.PAIR_RATE: exc.PAIR_RATE_CODES,
    Cause.MAINTENANCE: exc.MAINTENANCE_CODES,
    Cause.TRANSIENT: exc.TRANSIENT_CODES,
    Cause.MARKETING_LIMIT: exc.MARKETING_LIMIT_CODES,
    Cause.OPTED_OUT: exc.OPTED_OUT_CODES,
    Cause.RECIPIENT: exc.RECIPIENT_CODES,
    Cause.TEMPLATE_UNUSABLE: exc.TEMPLATE_FATAL_CODES,
    Cause.ACCOUNT_RESTRICTED: exc.ACCOUNT_FATAL_CODES,
    Cause.SENDER_BLOCKED: exc.SENDER_FATAL_CODES,
    Cause.MARKETING_TERMS: exc.MARKETING_TERMS_CODES,
}

#: Every code the policy knows by name (others are classified by HTTP status, else permanent).
KNOWN_CODES: frozenset[int] = frozenset().union(*CODES.values())

#: Exception classes the providers raise, most specific first (`CampaignFatalError` is split by code).
_BY_CLASS: tuple[tuple[type[exc.PlatformError], Cause], ...] = (
    (exc.MarketingTermsError, Cause.MARKETING_TERMS),
    (exc.TemplateWarmingError, Cause.TEMPLATE_WARMING),
    (exc.ThrottledError, Cause.THROTTLED),
    (exc.PairRateLimitedError, Cause.PAIR_RATE),
    (exc.MaintenanceError, Cause.MAINTENANCE),
    (exc.TransientError, Cause.TRANSIENT),
    (exc.MarketingLimitError, Cause.MARKETING_LIMIT),
    (exc.OptedOutError, Cause.OPTED_OUT),
    (exc.RecipientError, Cause.RECIPIENT),
    (exc.SenderFatalError, Cause.SENDER_BLOCKED),
    (exc.OutcomeUnknownError, Cause.OUTCOME_UNKNOWN),
)


# ------------------------------------------------------------------------------------------ causes


def _cause_of_class(cls: type[exc.PlatformError], code: int | None) -> Cause | None:
    """The cause an exception class stands for (`CampaignFatalError` split by code); None for a base class."""
    if issubclass(cls, exc.CampaignFatalError) and not issubclass(cls, exc.MarketingTermsError):
        return Cause.ACCOUNT_RESTRICTED if code in exc.ACCOUNT_FATAL_CODES else Cause.TEMPLATE_UNUSABLE
    for known, cause in _BY_CLASS:
        if issubclass(cls, known):
            return cause
    return None


def cause_of_code(code: int | None, http_status: int | None = None) -> Cause:
    """The cause of an error body: by ``error.code``; the HTTP status only when the code is unknown.

    The classification is `campaigns.core.exceptions.error_class_for`'s, the one the providers use.
    """
    cause = _cause_of_class(exc.error_class_for(code, http_status), code)
    return Cause.RECIPIENT if cause is None else cause


def cause_of_error(error: exc.PlatformError) -> Cause:
    """The cause of an error a provider raised: its class; a bare base class is classified by its code."""
    cause = _cause_of_class(type(error), error.code)
    return cause_of_code(error.code, error.http_status) if cause is None else cause


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


# ------------------------------------------------------------------------------------------ delays

_RETRYING = tenacity.Retrying()


def _wait(strategy: tenacity.wait.wait_base, attempt: int) -> float:
    """Ask a tenacity wait strategy for its delay after `attempt` attempts."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    state = tenacity.RetryCallState(_RETRYING, None, (), {})
    state.attempt_number = attempt
    return float(strategy(state))


def transient_delay_s(*, attempt: int, limits: LimitsSettings) -> float | None:
    """Jittered exponential backoff after a transient error; None once `max_attempts` are spent.

    ``backoff_base_s · 2^(attempt-1)`` plus up to ``backoff_base_s`` of jitter, at most ``backoff_max_s``.
    """
    if attempt >= limits.max_attempts:
        return None
    # wait_exponential_jitter, spelled so it means the same in tenacity 8 and 9.
    strategy = tenacity.wait_exponential(
        multiplier=limits.backoff_base_s, max=limits.backoff_max_s
    ) + tenacity.wait_random(0, limits.backoff_base_s)
    return min(_wait(strategy, attempt), limits.backoff_max_s)


def pair_rate_delay_s(*, attempt: int, limits: LimitsSettings) -> float | None:
    """131056: ``pair_retry_base_s ** (attempt - 1)`` seconds; None once `max_attempts` are spent."""
    if attempt >= limits.max_attempts:
        return None
    strategy = tenacity.wait_exponential(multiplier=1, exp_base=limits.pair_retry_base_s)
    return _wait(strategy, attempt)


def maintenance_delay_s(*, attempt: int, limits: LimitsSettings) -> float:
    """131057 (the number is being upgraded): wait `maintenance_retry_s`, however many attempts."""
    return _wait(tenacity.wait_fixed(limits.maintenance_retry_s), attempt)


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
    first_s, max_s = warmup_s
    after_s = _wait(tenacity.wait_exponential(multiplier=first_s, max=max_s), attempt)
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


# --------------------------------------------------------------------------- follow-ups, description

#: Causes whose recipients a later send may reach (a follow-up campaign is worth it).
RETRYABLE_CAUSES = frozenset(
    {Cause.THROTTLED, Cause.PAIR_RATE, Cause.MAINTENANCE, Cause.TRANSIENT, Cause.MARKETING_LIMIT}
)


def retryable_codes() -> frozenset[int]:
    """The known codes worth a follow-up campaign (`campaigns retry`'s default)."""
    return frozenset(code for cause in RETRYABLE_CAUSES for code in CODES[cause])


def _s(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


#: Actions whose description does not depend on their fields.
_FIXED_WORDS: dict[type, str] = {
    SuppressContact: "suppressed the contact; never retried",
    StopSender: "stopped sending: fix credentials, registration or payment",
    RecordUnknown: "recorded as unknown (the platform may have it); never resent by itself",
    FallBackToCloud: "sent through the Cloud API instead (product_policy CLOUD_API_FALLBACK); not a failure",
}


#: What a person must do when the Marketing Messages API refuses a campaign (131055, STRICT).
MARKETING_TERMS_TODO = (
    "an admin of the business portfolio accepts the Marketing Messages API terms in WhatsApp Manager, "
    "then `wacamp campaigns resume NAME` (or create the campaign again with --via cloud)"
)
MARKETING_TERMS_ADVICE = (
    f"paused the campaign: the business portfolio has not accepted the Marketing Messages API terms; "
    f"{MARKETING_TERMS_TODO}"
)


def stop_reason(action: StopCampaign, *, code: int | None, title: str) -> str:
    """Why a campaign was stopped, as its pause reason says it: the platform's words, and what to do."""
    reason = f"({code}) {title}".strip()
    if action.cause is Cause.MARKETING_TERMS:
        return f"{reason}: {MARKETING_TERMS_TODO}"
    return reason


def describe(action: Action) -> str:
    """What wacamp did, in words, for one action (past tense, as the report says it)."""
    fixed = _FIXED_WORDS.get(type(action))
    if fixed is not None:
        return fixed
    match action:
        case SlowSender(retry_after_s=retry_after_s, requeue_after_s=after_s):
            honoured = f"Retry-After {_s(retry_after_s)}" if retry_after_s else f"{_s(after_s)}"
            return f"slowed the sender down and requeued after {honoured}; not a failure"
        case Requeue(after_s=after_s, hold_recipient=True):
            return f"requeued that recipient after {_s(after_s)} and kept sending to others"
        case Requeue(after_s=after_s, refund_attempt=refund):
            return f"requeued after {_s(after_s)}" + ("" if refund else " (counted as an attempt)")
        case PauseSender(pause_s=pause_s):
            return f"paused the sender {_s(pause_s)} and requeued; not a failure"
        case DeferRecipient(defer_h=defer_h):
            return f"deferred that recipient {defer_h:g} h; `wacamp campaigns retry` sends again later"
        case FailRow(attempts_spent=None):
            return "permanent failure for that recipient; not retried"
        case FailRow(attempts_spent=spent):
            return f"recorded as failed after {spent} attempts"
        case StopCampaign(cause=Cause.MARKETING_TERMS):
            return MARKETING_TERMS_ADVICE
        case StopCampaign(cause=Cause.TEMPLATE_UNUSABLE):
            return "paused the campaign: the template cannot be used"
        case StopCampaign():
            return "paused the campaign: the account is restricted"
    raise AssertionError(f"no description for {action!r}")  # pragma: no cover


def describe_cause(cause: Cause, *, limits: LimitsSettings) -> str:
    """The whole rule for a cause, for the report and the docs: first answer, and the last if retries end."""
    first = decide(cause, limits=limits, attempt=1)
    if cause is Cause.THROTTLED:
        return "slowed the sender down (honouring Retry-After) and requeued; not a failure"
    if cause is Cause.PAIR_RATE:
        return (
            f"requeued that recipient after {limits.pair_retry_base_s:g}^X s (X = 0, 1, 2 …) and kept "
            f"sending to others; {describe(decide(cause, limits=limits, attempt=limits.max_attempts))}"
        )
    if cause is Cause.MARKETING_TERMS:
        fallback = describe(decide(cause, limits=limits, cloud_fallback=True))
        return f"{fallback}; with STRICT: {describe(first)}"
    if cause is Cause.TEMPLATE_WARMING:
        last = decide(cause, limits=limits, attempt=limits.max_attempts)
        return f"requeued after {_s(WARMUP_S[0])} doubling to {_s(WARMUP_S[1])} (the sync); {describe(last)}"
    if cause is Cause.TRANSIENT:
        last = decide(cause, limits=limits, attempt=limits.max_attempts)
        return (
            f"retried with jittered exponential backoff ({_s(limits.backoff_base_s)} doubling, at most "
            f"{_s(limits.backoff_max_s)}); {describe(last)}"
        )
    return describe(first)

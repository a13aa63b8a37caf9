"""The outcome policy in words: what wacamp did for an action, and the whole rule for a cause.

The report, `error_catalog`, the pause reasons and the docs' outcome table (`scripts/outcome_table.py`)
say it with these functions, so the words never disagree with `campaigns.outcomes`.
"""

from __future__ import annotations

from campaigns.core.settings_sections import LimitsSettings
from campaigns.outcome_causes import Cause
from campaigns.outcomes import (
    WARMUP_S,
    Action,
    DeferRecipient,
    FailRow,
    FallBackToCloud,
    PauseSender,
    RecordUnknown,
    Requeue,
    SlowSender,
    StopCampaign,
    StopSender,
    SuppressContact,
    decide,
)


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
MARKETING_TERMS_REMEDY = (
    "an admin of the business portfolio accepts the Marketing Messages API terms in WhatsApp Manager, "
    "then `wacamp campaigns resume NAME` (or create the campaign again with --via cloud)"
)
MARKETING_TERMS_ADVICE = (
    f"paused the campaign: the business portfolio has not accepted the Marketing Messages API terms; "
    f"{MARKETING_TERMS_REMEDY}"
)


def stop_reason(action: StopCampaign, *, code: int | None, title: str) -> str:
    """Why a campaign was stopped, as its pause reason says it: the platform's words, and what to do."""
    reason = f"({code}) {title}".strip()
    if action.cause is Cause.MARKETING_TERMS:
        return f"{reason}: {MARKETING_TERMS_REMEDY}"
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

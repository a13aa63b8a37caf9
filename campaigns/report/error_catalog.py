"""What each platform error code means and what wacamp did about it (from docs/platform facts).

The actions follow `campaigns.core.exceptions.classify_platform_error`: the same code sets decide both
what the dispatcher and the webhook processor do and what the report says they did.
"""

from __future__ import annotations

from dataclasses import dataclass

from campaigns.core import exceptions as exc


@dataclass(frozen=True)
class ErrorInfo:
    """A platform error code as people read it in a report."""

    meaning: str
    action: str


_MEANINGS: dict[int, str] = {
    0: "authentication failed",
    1: "API unknown error",
    2: "API service temporarily unavailable",
    4: "app rate limit reached",
    10: "permission denied",
    100: "invalid parameter",
    190: "access token expired or invalid",
    368: "temporarily blocked for policy violations",
    470: "outside the 24 h customer service window (On-Premises)",
    80007: "WhatsApp Business Account rate limit reached",
    130429: "throughput rate limit hit",
    130472: "the user's number is part of an experiment",
    130497: "business account restricted from messaging users in this country",
    131000: "something went wrong (unknown platform error)",
    131016: "service temporarily unavailable",
    131026: "message undeliverable (no WhatsApp, old app, or terms not accepted)",
    131031: "business account locked",
    131042: "payment problem on the business account",
    131047: "re-engagement message: more than 24 h since the user's last message",
    131048: "spam rate limit hit",
    131049: "per-user marketing limit: too many marketing messages to this user recently",
    131050: "the user stopped marketing messages from this business",
    131051: "unsupported message type",
    131056: "too many messages to this user in a short time (pair rate limit)",
    131057: "business account in maintenance (throughput upgrade)",
    131064: "business account restricted",
    132000: "number of template parameters does not match",
    132001: "template does not exist in this language or is not approved",
    132005: "translated template text too long",
    132007: "template content violates a WhatsApp policy",
    132012: "template parameter format does not match",
    132015: "template is paused for low quality",
    132016: "template is disabled for low quality",
    133010: "phone number not registered",
}

_ACTIONS: tuple[tuple[frozenset[int], str], ...] = (
    (exc.THROTTLE_CODES, "slowed the sender down (honouring Retry-After) and requeued; not a failure"),
    (exc.PAIR_RATE_CODES, "requeued that recipient after 4^X s and kept sending to others"),
    (exc.MAINTENANCE_CODES, "retried after about a minute"),
    (
        exc.TRANSIENT_CODES,
        "retried with jittered exponential backoff; recorded as failed after the last attempt",
    ),
    (exc.MARKETING_LIMIT_CODES, "deferred that recipient 24 h; `wacamp campaigns retry` sends again later"),
    (exc.OPTED_OUT_CODES, "suppressed the contact; never retried"),
    (exc.RECIPIENT_CODES, "permanent failure for that recipient; not retried"),
    (exc.TEMPLATE_FATAL_CODES, "paused the campaign: the template cannot be used"),
    (exc.ACCOUNT_FATAL_CODES, "paused the campaign: the account is restricted"),
    (exc.SENDER_FATAL_CODES, "stopped sending: fix credentials, registration or payment"),
)


def error_info(code: int | None) -> ErrorInfo:
    """Meaning and action for a platform error code (unknown codes are permanent recipient failures)."""
    if code is None:
        return ErrorInfo("no error code recorded", "recorded as failed")
    meaning = _MEANINGS.get(code, "error code not in wacamp's catalogue")
    for codes, action in _ACTIONS:
        if code in codes:
            return ErrorInfo(meaning, action)
    return ErrorInfo(meaning, "permanent failure for that recipient; not retried")


#: Codes worth a follow-up campaign by default: transient ones and the 24 h marketing limit.
RETRYABLE_BY_DEFAULT: frozenset[int] = frozenset(
    exc.TRANSIENT_CODES
    | exc.MAINTENANCE_CODES
    | exc.PAIR_RATE_CODES
    | exc.THROTTLE_CODES
    | exc.MARKETING_LIMIT_CODES
)

"""What a platform answer means: its `Cause`, by ``error.code`` (the HTTP status only breaks ties).

The first half of the outcome policy (`campaigns.outcomes` turns a cause into one action). The code sets
are `campaigns.core.exceptions`'; `retryable_codes` are the causes a follow-up campaign may still reach.
"""

from __future__ import annotations

import enum

from campaigns.core import exceptions as exc


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


#: Causes whose recipients a later send may reach (a follow-up campaign is worth it).
RETRYABLE_CAUSES = frozenset(
    {Cause.THROTTLED, Cause.PAIR_RATE, Cause.MAINTENANCE, Cause.TRANSIENT, Cause.MARKETING_LIMIT}
)


def retryable_codes() -> frozenset[int]:
    """The known codes worth a follow-up campaign (`campaigns retry`'s default)."""
    return frozenset(code for cause in RETRYABLE_CAUSES for code in CODES[cause])

"""How long a message waits before its next attempt, by the kind of error it got.

Pure functions of the attempt number (plus tenacity's jitter), built on tenacity's wait strategies.
``attempt`` is the number of attempts already made (1 after the first failed one).

- transient (131000, 131016, 1, 2, 5xx, refused connection): ``backoff_base_s · 2^(attempt-1)`` plus up
  to ``backoff_base_s`` of jitter, at most ``backoff_max_s``; gives up after ``max_attempts``.
- pair rate 131056: ``pair_retry_base_s ** X`` with X = attempt - 1 (1, 4, 16, 64 … s); gives up after
  ``max_attempts``.
- maintenance 131057: ``maintenance_retry_s``, never gives up.
- throttled: ``Retry-After`` or 0; the whole sender slows down instead (`scheduler.sending.throttle`).
- marketing limit 131049: ``marketing_defer_h`` hours (a deferral of the recipient, not a retry).
"""

from __future__ import annotations

import tenacity

from campaigns.core.exceptions import (
    MaintenanceError,
    MarketingLimitError,
    PairRateLimitedError,
    PlatformError,
    ThrottledError,
    TransientError,
)
from campaigns.core.settings import LimitsSettings

_RETRYING = tenacity.Retrying()


def _wait(strategy: tenacity.wait.wait_base, attempt: int) -> float:
    """Ask a tenacity wait strategy for its delay after `attempt` attempts."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    state = tenacity.RetryCallState(_RETRYING, None, (), {})
    state.attempt_number = attempt
    return float(strategy(state))


def transient_delay_s(*, attempt: int, limits: LimitsSettings) -> float | None:
    """Jittered exponential backoff after a transient error; None once `max_attempts` are spent."""
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


def marketing_defer_s(limits: LimitsSettings) -> float:
    """131049: how long the recipient gets no marketing template from us (`marketing_defer_h`)."""
    return limits.marketing_defer_h * 3600.0


def retry_delay_s(error: PlatformError, *, attempt: int, limits: LimitsSettings) -> float | None:
    """Delay before retrying after `error`, or None when the message must be recorded as failed.

    Raises ValueError for errors that are never retried (permanent or outcome unknown).
    """
    if isinstance(error, ThrottledError):
        return max(0.0, error.retry_after_s or 0.0)
    if isinstance(error, PairRateLimitedError):
        return pair_rate_delay_s(attempt=attempt, limits=limits)
    if isinstance(error, MaintenanceError):
        return maintenance_delay_s(attempt=attempt, limits=limits)
    if isinstance(error, TransientError):
        return transient_delay_s(attempt=attempt, limits=limits)
    if isinstance(error, MarketingLimitError):
        return marketing_defer_s(limits)
    raise ValueError(f"{type(error).__name__} is never retried")

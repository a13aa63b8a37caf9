"""The outcome policy's retry delays: jittered exponential backoff, 131056 pair rate, maintenance, warm-up.

Pure functions of the attempt count and `[limits]` (tenacity's wait strategies); `campaigns.outcomes`
decides when they apply.
"""

from __future__ import annotations

import tenacity

from campaigns.core.settings_sections import LimitsSettings

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


def warmup_delay_s(*, attempt: int, warmup_s: tuple[float, float]) -> float:
    """131009 on the marketing path: ``warmup_s[0]`` doubling, at most ``warmup_s[1]`` (the sync)."""
    first_s, max_s = warmup_s
    return _wait(tenacity.wait_exponential(multiplier=first_s, max=max_s), attempt)

"""Retry delays by error kind, as pure functions of the attempt number."""

from __future__ import annotations

import pytest

from campaigns.core.exceptions import (
    MaintenanceError,
    MarketingLimitError,
    OutcomeUnknownError,
    PairRateLimitedError,
    RecipientError,
    ThrottledError,
    TransientError,
)
from campaigns.core.settings import LimitsSettings, load_settings
from scheduler.sending.backoff import (
    maintenance_delay_s,
    marketing_defer_s,
    pair_rate_delay_s,
    retry_delay_s,
    transient_delay_s,
)


@pytest.fixture
def limits() -> LimitsSettings:
    settings, _ = load_settings(environ={})
    return settings.limits


def test_transient_delays_grow_exponentially_with_jitter_of_at_most_the_base(limits: LimitsSettings) -> None:
    for attempt in range(1, limits.max_attempts):
        floor = limits.backoff_base_s * 2 ** (attempt - 1)
        delays = {transient_delay_s(attempt=attempt, limits=limits) for _ in range(50)}
        assert all(d is not None and floor <= d <= floor + limits.backoff_base_s for d in delays)
        assert len(delays) > 1


def test_transient_delays_never_exceed_the_maximum() -> None:
    settings, _ = load_settings(environ={"WACAMP_LIMITS__MAX_ATTEMPTS": "40"})
    delays = [transient_delay_s(attempt=30, limits=settings.limits) for _ in range(20)]
    assert all(d == settings.limits.backoff_max_s for d in delays)


def test_transient_errors_give_up_once_max_attempts_are_spent(limits: LimitsSettings) -> None:
    assert transient_delay_s(attempt=limits.max_attempts - 1, limits=limits) is not None
    assert transient_delay_s(attempt=limits.max_attempts, limits=limits) is None


def test_pair_rate_waits_four_to_the_power_x(limits: LimitsSettings) -> None:
    assert [pair_rate_delay_s(attempt=n, limits=limits) for n in (1, 2, 3, 4)] == [1.0, 4.0, 16.0, 64.0]
    assert pair_rate_delay_s(attempt=limits.max_attempts, limits=limits) is None


def test_maintenance_waits_the_configured_time_whatever_the_attempt(limits: LimitsSettings) -> None:
    assert {maintenance_delay_s(attempt=n, limits=limits) for n in (1, 7, 50)} == {limits.maintenance_retry_s}


def test_the_marketing_limit_defers_the_recipient_for_the_configured_hours(limits: LimitsSettings) -> None:
    assert marketing_defer_s(limits) == 24 * 3600


def test_retry_delay_dispatches_on_the_error_class(limits: LimitsSettings) -> None:
    assert retry_delay_s(ThrottledError(retry_after_s=7), attempt=1, limits=limits) == 7
    assert retry_delay_s(ThrottledError(), attempt=9, limits=limits) == 0
    assert retry_delay_s(PairRateLimitedError(), attempt=3, limits=limits) == 16
    assert retry_delay_s(MaintenanceError(), attempt=1, limits=limits) == 60
    assert retry_delay_s(MarketingLimitError(), attempt=1, limits=limits) == 86400
    assert retry_delay_s(TransientError(), attempt=limits.max_attempts, limits=limits) is None


@pytest.mark.parametrize("error", [RecipientError(), OutcomeUnknownError()])
def test_errors_that_are_never_retried_have_no_delay(error: Exception, limits: LimitsSettings) -> None:
    with pytest.raises(ValueError, match="never retried"):
        retry_delay_s(error, attempt=1, limits=limits)  # type: ignore[arg-type]


def test_attempts_count_from_one(limits: LimitsSettings) -> None:
    with pytest.raises(ValueError, match="from 1"):
        maintenance_delay_s(attempt=0, limits=limits)

"""The adaptive controller on a fake clock: decrease on throttling, Retry-After, linear recovery."""

from __future__ import annotations

import asyncio

import pytest

from campaigns.core.settings_loading import load_settings
from scheduler.sending.ratelimit import RateLimiter
from scheduler.sending.throttle import ThrottleController
from tests.fakeclock import FakeClock


def controller(
    *, target: float = 80.0, decrease: float = 0.5, recovery_s: float = 30.0
) -> ThrottleController:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=target, clock=clock)
    return ThrottleController(
        limiter, target_rate_per_s=target, decrease=decrease, recovery_s=recovery_s, clock=clock
    )


def clock_of(ctl: ThrottleController) -> FakeClock:
    clock = ctl.clock
    assert isinstance(clock, FakeClock)
    return clock


def test_a_throttle_event_multiplies_the_rate_by_the_decrease() -> None:
    ctl = controller()
    assert ctl.on_throttled(started_at_s=0.0) is True
    assert ctl.limiter.rate_per_s == pytest.approx(40.0)


def test_the_rate_climbs_back_linearly_to_the_target_over_the_recovery_time() -> None:
    ctl = controller()
    ctl.on_throttled(started_at_s=0.0)
    clock = clock_of(ctl)
    clock.advance(15.0)
    assert ctl.refresh() == pytest.approx(60.0)
    clock.advance(15.0)
    assert ctl.refresh() == pytest.approx(80.0)
    clock.advance(100.0)
    assert ctl.refresh() == pytest.approx(80.0)


def test_throttles_of_requests_started_within_a_second_of_the_last_decrease_do_not_decrease_again() -> None:
    ctl = controller()
    clock = clock_of(ctl)
    clock.advance(1.0)
    assert ctl.on_throttled(started_at_s=0.9) is True
    assert ctl.on_throttled(started_at_s=0.95) is False
    clock.advance(0.5)
    assert ctl.on_throttled(started_at_s=1.9) is False
    assert ctl.limiter.rate_per_s == pytest.approx(40.0)
    clock.advance(1.0)
    assert ctl.on_throttled(started_at_s=2.1) is True
    assert ctl.limiter.rate_per_s == pytest.approx((40.0 + 40.0 * 1.5 / 30.0) * 0.5)


def test_a_storm_of_throttles_decreases_once_per_second_not_once_per_request() -> None:
    ctl = controller(target=200.0)
    clock = clock_of(ctl)
    for _ in range(100):
        clock.advance(0.005)
        ctl.on_throttled(started_at_s=clock.now() - 0.002)
    assert ctl.decreases == 1
    assert ctl.limiter.rate_per_s == pytest.approx(100.0, rel=0.01)


def test_repeated_throttling_never_takes_the_rate_below_the_minimum() -> None:
    ctl = controller(recovery_s=1e9)
    clock = clock_of(ctl)
    for _ in range(20):
        clock.advance(1.5)
        ctl.on_throttled(started_at_s=clock.now())
    assert ctl.limiter.rate_per_s == pytest.approx(1.0)


def test_retry_after_pauses_every_start_and_recovery_begins_after_it() -> None:
    ctl = controller()
    clock = clock_of(ctl)

    async def scenario() -> float:
        ctl.on_throttled(started_at_s=0.0, retry_after_s=10.0)
        task = asyncio.create_task(ctl.acquire())
        await clock.drive([task])
        return task.result()

    assert asyncio.run(scenario()) == pytest.approx(10.0)
    assert ctl.rate_at(10.0) == pytest.approx(40.0)
    assert ctl.rate_at(25.0) == pytest.approx(60.0)


def test_acquire_applies_the_recovered_rate_to_the_limiter() -> None:
    ctl = controller(target=10.0, recovery_s=10.0)
    clock = clock_of(ctl)
    ctl.on_throttled(started_at_s=0.0)
    clock.advance(5.0)

    async def scenario() -> float:
        return await ctl.acquire()

    asyncio.run(scenario())
    assert ctl.limiter.rate_per_s == pytest.approx(7.5)


def test_the_rate_never_goes_above_a_lowered_target() -> None:
    ctl = controller()
    ctl.set_target(50.0)
    assert ctl.limiter.rate_per_s == pytest.approx(50.0)
    clock_of(ctl).advance(100.0)
    assert ctl.refresh() == pytest.approx(50.0)


def test_the_controller_reads_decrease_and_recovery_from_the_dispatch_settings() -> None:
    settings, _ = load_settings(environ={"WACAMP_DISPATCH__THROTTLE_DECREASE": "0.25"})
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=80, clock=clock)
    ctl = ThrottleController.from_settings(limiter, settings.dispatch, target_rate_per_s=80, clock=clock)
    ctl.on_throttled(started_at_s=0.0)
    assert limiter.rate_per_s == pytest.approx(20.0)
    clock.advance(settings.dispatch.throttle_recovery_s)
    assert ctl.refresh() == pytest.approx(80.0)


@pytest.mark.parametrize(("decrease", "recovery_s"), [(0.0, 1.0), (1.0, 1.0), (0.5, 0.0)])
def test_a_decrease_outside_zero_to_one_or_a_zero_recovery_is_refused(
    decrease: float, recovery_s: float
) -> None:
    with pytest.raises(ValueError):
        controller(decrease=decrease, recovery_s=recovery_s)

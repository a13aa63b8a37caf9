"""The rate limiter on a fake clock: the one-second cap always holds, the pace is kept, FIFO order."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.sending.ratelimit import DEFAULT_GUARD_S, WINDOW_S, RateLimiter, pace_per_s, window_capacity
from tests.fakeclock import FakeClock

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def busiest_window(starts: Sequence[float], window_s: float = WINDOW_S) -> int:
    """Most starts in any half-open window [t, t + window_s) (it suffices to try t = each start)."""
    ordered = sorted(starts)
    best, left = 0, 0
    for right, start in enumerate(ordered):
        while ordered[left] + window_s <= start:
            left += 1
        best = max(best, right - left + 1)
    return best


async def run_arrivals(
    limiter: RateLimiter, clock: FakeClock, arrivals_s: Sequence[float]
) -> list[tuple[float, float]]:
    """One task per arrival time; returns (arrival, start) pairs in arrival order."""

    async def one(arrival_s: float) -> tuple[float, float]:
        if arrival_s > clock.now():
            await clock.sleep_until(arrival_s)
        arrived = clock.now()
        return arrived, await limiter.acquire()

    tasks = [asyncio.create_task(one(at)) for at in arrivals_s]
    await clock.drive(tasks)
    return [task.result() for task in tasks]


def simulate(
    *, rate_per_s: float, burst: int, arrivals_s: Sequence[float], max_late_s: float, seed: int
) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    clock = FakeClock(lateness_s=lambda: rng.uniform(0.0, max_late_s))
    limiter = RateLimiter(rate_per_s=rate_per_s, burst=burst, clock=clock)
    return asyncio.run(run_arrivals(limiter, clock, arrivals_s))


rates = st.one_of(
    st.integers(min_value=1, max_value=2000).map(float),
    st.floats(min_value=1.0, max_value=2000.0, allow_nan=False, allow_infinity=False),
)


@st.composite
def arrival_patterns(draw: st.DrawFn, rate_per_s: float) -> list[float]:
    """Groups of arrivals: bursts at one instant, steady trickles, idle gaps."""
    arrivals: list[float] = []
    now = 0.0
    budget = min(3000, max(20, int(rate_per_s * 2.5)))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        count = draw(st.integers(min_value=1, max_value=max(1, budget // 3)))
        spacing_s = draw(st.sampled_from([0.0, 0.0, 0.2 / rate_per_s, 1.0 / rate_per_s, 3.0 / rate_per_s]))
        arrivals.extend(now + i * spacing_s for i in range(count))
        now = arrivals[-1] + draw(st.sampled_from([0.0, 0.003, 0.5, 1.0, 2.5]))
    return arrivals


@HYPOTHESIS
@given(data=st.data(), rate_per_s=rates, burst=st.integers(min_value=1, max_value=50))
def test_no_one_second_window_ever_holds_more_starts_than_the_rate(
    data: st.DataObject, rate_per_s: float, burst: int
) -> None:
    arrivals = data.draw(arrival_patterns(rate_per_s))
    max_late_s = data.draw(st.sampled_from([0.0, 0.0005, 0.002, 0.02]))
    pairs = simulate(
        rate_per_s=rate_per_s,
        burst=burst,
        arrivals_s=arrivals,
        max_late_s=max_late_s,
        seed=data.draw(st.integers()),
    )
    starts = [start for _, start in pairs]
    assert busiest_window(starts) <= math.floor(rate_per_s)
    assert busiest_window(starts, WINDOW_S + DEFAULT_GUARD_S) <= math.floor(rate_per_s)
    assert all(start >= arrived for arrived, start in pairs)


@HYPOTHESIS
@given(data=st.data(), rate_per_s=rates, burst=st.integers(min_value=1, max_value=50))
def test_requests_start_in_the_order_they_arrived(data: st.DataObject, rate_per_s: float, burst: int) -> None:
    arrivals = data.draw(arrival_patterns(rate_per_s))
    pairs = simulate(rate_per_s=rate_per_s, burst=burst, arrivals_s=arrivals, max_late_s=0.002, seed=1)
    starts = [start for _, start in pairs]
    assert starts == sorted(starts)


@HYPOTHESIS
@given(
    rate_per_s=rates,
    burst=st.integers(min_value=1, max_value=20),
    max_late_s=st.sampled_from([0.0, 0.0005, 0.001, 0.003, 0.005]),
    seed=st.integers(),
)
def test_a_backlog_is_served_at_no_less_than_99_percent_of_the_pace_despite_late_timers(
    rate_per_s: float, burst: int, max_late_s: float, seed: int
) -> None:
    count = min(4000, max(30, int(pace_per_s(rate_per_s) * 3)))
    pairs = simulate(
        rate_per_s=rate_per_s, burst=burst, arrivals_s=[0.0] * count, max_late_s=max_late_s, seed=seed
    )
    starts = [start for _, start in pairs]
    achieved_per_s = (len(starts) - 1) / (starts[-1] - starts[0])
    assert achieved_per_s >= 0.99 * pace_per_s(rate_per_s)
    assert busiest_window(starts) <= window_capacity(rate_per_s)


def test_a_fractional_rate_is_paced_at_its_whole_part_per_second() -> None:
    pairs = simulate(rate_per_s=80.9, burst=1, arrivals_s=[0.0] * 401, max_late_s=0.0, seed=0)
    starts = [start for _, start in pairs]
    assert starts[-1] - starts[0] == pytest.approx(400 / 80, rel=DEFAULT_GUARD_S)
    assert busiest_window(starts) == 80


def test_a_rate_below_one_per_second_spaces_requests_by_its_interval() -> None:
    pairs = simulate(rate_per_s=0.5, burst=1, arrivals_s=[0.0] * 4, max_late_s=0.0, seed=0)
    assert [start for _, start in pairs] == pytest.approx([0.0, 2.0, 4.0, 6.0])


def test_a_burst_starts_back_to_back_after_an_idle_moment_then_the_pace_resumes() -> None:
    pairs = simulate(rate_per_s=10, burst=4, arrivals_s=[0.0] * 6, max_late_s=0.0, seed=0)
    assert [start for _, start in pairs] == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.1, 0.2])


def test_a_burst_larger_than_the_rate_is_still_capped_at_the_rate_per_second() -> None:
    pairs = simulate(rate_per_s=5, burst=50, arrivals_s=[0.0] * 12, max_late_s=0.0, seed=0)
    starts = [start for _, start in pairs]
    assert starts[:5] == [0.0] * 5
    assert busiest_window(starts) == 5
    assert starts[5] == pytest.approx(1.0 + DEFAULT_GUARD_S)


def test_the_guard_keeps_the_cap_over_a_little_more_than_a_second() -> None:
    async def scenario() -> list[float]:
        clock = FakeClock()
        limiter = RateLimiter(rate_per_s=4, burst=4, clock=clock, guard_s=0.05)
        tasks = [asyncio.create_task(limiter.acquire()) for _ in range(5)]
        await clock.drive(tasks)
        return [task.result() for task in tasks]

    assert asyncio.run(scenario()) == pytest.approx([0.0, 0.0, 0.0, 0.0, 1.05])


def test_a_late_wake_up_within_the_catch_up_allowance_is_given_back() -> None:
    clock = FakeClock(lateness_s=lambda: 0.004)
    limiter = RateLimiter(rate_per_s=100, clock=clock)
    pairs = asyncio.run(run_arrivals(limiter, clock, [0.0] * 101))
    starts = [start for _, start in pairs]
    assert starts[-1] <= 1.0 + DEFAULT_GUARD_S + 0.004 + 1e-9
    assert busiest_window(starts) <= 100


def test_pause_until_holds_every_start_until_then() -> None:
    async def scenario() -> list[float]:
        clock = FakeClock()
        limiter = RateLimiter(rate_per_s=10, clock=clock)
        await limiter.acquire()
        limiter.pause_until(5.0)
        tasks = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
        await clock.drive(tasks)
        return [task.result() for task in tasks]

    assert asyncio.run(scenario()) == pytest.approx([5.0, 5.1, 5.2])


def test_a_lower_rate_applies_from_the_next_permit() -> None:
    async def scenario() -> list[float]:
        clock = FakeClock()
        limiter = RateLimiter(rate_per_s=10, clock=clock, guard_s=0.0)
        starts = [await limiter.acquire()]
        limiter.set_rate(2)
        tasks = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
        await clock.drive(tasks)
        return starts + [task.result() for task in tasks]

    assert asyncio.run(scenario()) == pytest.approx([0.0, 0.5, 1.0, 1.5])


@HYPOTHESIS
@given(
    changes=st.lists(st.floats(min_value=1.0, max_value=300.0), min_size=1, max_size=8), seed=st.integers()
)
def test_rate_changes_never_let_a_window_exceed_the_rate_in_force(changes: list[float], seed: int) -> None:
    async def scenario() -> list[tuple[float, int]]:
        rng = random.Random(seed)
        clock = FakeClock(lateness_s=lambda: rng.uniform(0, 0.002))
        limiter = RateLimiter(rate_per_s=changes[0], burst=3, clock=clock)
        record: list[tuple[float, int]] = []

        async def consumer() -> None:
            for rate in changes:
                limiter.set_rate(rate)
                for _ in range(int(rate * 0.7) + 1):
                    record.append((await limiter.acquire(), limiter.capacity))

        task = asyncio.create_task(consumer())
        await clock.drive([task])
        return record

    record = asyncio.run(scenario())
    for index, (start, capacity) in enumerate(record):
        in_window = sum(1 for other, _ in record[: index + 1] if other + WINDOW_S > start)
        assert in_window <= capacity


def test_a_cancelled_waiter_does_not_hold_up_the_queue() -> None:
    async def scenario() -> list[float]:
        clock = FakeClock()
        limiter = RateLimiter(rate_per_s=1, clock=clock, guard_s=0.0)
        await limiter.acquire()
        doomed = asyncio.create_task(limiter.acquire())
        later = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        doomed.cancel()
        await clock.drive([later])
        return [later.result()]

    assert asyncio.run(scenario()) == pytest.approx([1.0])


def test_only_the_head_of_the_queue_sleeps_on_a_timer() -> None:
    async def scenario() -> int:
        clock = FakeClock()
        limiter = RateLimiter(rate_per_s=100, clock=clock)
        tasks = [asyncio.create_task(limiter.acquire()) for _ in range(200)]
        await clock.drive(tasks)
        return clock.sleeps

    assert asyncio.run(scenario()) == 199


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_a_rate_that_is_not_a_positive_number_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(rate_per_s=rate)


def test_a_burst_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(rate_per_s=1, burst=0)


def test_window_capacity_treats_a_rate_a_hair_below_an_integer_as_that_integer() -> None:
    assert window_capacity(80 * 0.1 * 10) == 80
    assert window_capacity(0.3) == 1
    assert window_capacity(79.99) == 79

"""The sender pace's arrival guard: a start waits 1 s after the arrival of the start `rate` places back."""

from __future__ import annotations

import asyncio

from scheduler.sending.pace import SenderPace
from scheduler.sending.ratelimit import RateLimiter
from scheduler.sending.throttle import ThrottleController
from tests.fakeclock import FakeClock


def pace(clock: FakeClock, rate_per_s: float, *, guard_s: float) -> SenderPace:
    limiter = RateLimiter(rate_per_s=rate_per_s, burst=int(rate_per_s), clock=clock)
    controller = ThrottleController(
        limiter, target_rate_per_s=rate_per_s, decrease=0.5, recovery_s=30, clock=clock
    )
    return SenderPace(controller, guard_s=guard_s, clock=clock)


async def five_starts(clock: FakeClock, sender: SenderPace, *, answer_after_s: float | None) -> list[float]:
    starts: list[float] = []

    async def run() -> None:
        for _ in range(5):
            permit = await sender.acquire()
            starts.append(clock.now())
            if answer_after_s is not None:
                permit.landed(clock.now() + answer_after_s)

    await clock.drive([asyncio.create_task(run())])
    return starts


async def test_a_request_never_answered_holds_the_next_window_for_the_whole_guard() -> None:
    clock = FakeClock()
    starts = await five_starts(clock, pace(clock, 4, guard_s=0.3), answer_after_s=None)
    assert abs(starts[4] - starts[0] - 1.3) < 1e-9


async def test_an_answer_bounds_the_arrival_so_the_window_opens_one_second_after_the_answer() -> None:
    clock = FakeClock()
    starts = await five_starts(clock, pace(clock, 4, guard_s=0.3), answer_after_s=0.01)
    assert abs(starts[4] - starts[0] - 1.01) < 1e-9


async def test_a_slow_answer_counts_no_later_than_the_guard() -> None:
    clock = FakeClock()
    starts = await five_starts(clock, pace(clock, 4, guard_s=0.05), answer_after_s=0.4)
    assert abs(starts[4] - starts[0] - 1.05) < 1e-9

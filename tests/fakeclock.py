"""A fake clock for asyncio code that takes an injected `campaigns.core.clock.Clock`.

Time stands still while any task can run; when every task is blocked, `FakeClock.drive` jumps to
the earliest pending timer and wakes its sleeper. Each wake-up may be made late by `lateness_s()`,
as real event-loop timers are. Usage::

    clock = FakeClock()
    tasks = [asyncio.create_task(worker(clock)) for _ in range(10)]
    await clock.drive(tasks)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterable


class FakeClock:
    """Virtual monotonic seconds; `sleep` parks the caller until `drive` reaches its wake-up time."""

    def __init__(self, *, start_s: float = 0.0, lateness_s: Callable[[], float] | None = None) -> None:
        self._now_s = start_s
        self._lateness_s = lateness_s or (lambda: 0.0)
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.sleeps = 0

    def now(self) -> float:
        return self._now_s

    def advance(self, delta_s: float) -> None:
        """Move time forward without waking anyone (for code that only reads the clock)."""
        self._now_s += delta_s

    async def sleep(self, delay_s: float) -> None:
        self.sleeps += 1
        await self.sleep_until(self._now_s + max(0.0, delay_s) + self._lateness_s())

    async def sleep_until(self, wake_s: float) -> None:
        """Wake exactly at `wake_s` (no lateness): for test drivers that schedule arrivals."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (wake_s, next(self._seq), future))
        await future

    async def drive(self, tasks: Iterable[asyncio.Task[object]], *, max_steps: int = 10_000_000) -> None:
        """Run virtual time until every task in `tasks` is done."""
        watched = list(tasks)
        for _ in range(max_steps):
            await self._settle()
            if all(task.done() for task in watched):
                return
            if not self._timers:
                raise RuntimeError("every task is blocked and no timer is pending: deadlock")
            wake_s, _, future = heapq.heappop(self._timers)
            self._now_s = max(self._now_s, wake_s)
            if not future.done():
                future.set_result(None)
        raise RuntimeError("fake clock: too many steps")

    @staticmethod
    async def _settle() -> None:
        """Yield until no other callback is ready to run (every other task is blocked)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        while loop._ready:  # type: ignore[attr-defined]
            await asyncio.sleep(0)

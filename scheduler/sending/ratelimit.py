"""The per-sender rate limiter: GCRA pacing plus a hard cap over the trailing second.

Guarantee (see docs/architecture.md, "Rate limiting and backoff"): with ``rate_per_s = r`` the
*window capacity* is ``C = max(1, floor(r))``; at every start the half-open second ending at it,
``(t - 1 s, t]``, holds at most ``C`` starts (the capacity in force at that start), so no window of
one second ever holds more starts than the rate. Requests are paced at ``C`` per second (``r`` when
``r < 1``); that pace is the most any limiter with this guarantee can achieve over time, so a
fractional rate such as 80.5 gives 80 per second. Over a backlog the achieved rate stays within a
fraction of a percent of the pace even when timers wake up late. The cap is kept over ``1 s +
guard_s`` so that a little jitter between the permit and the platform cannot break it either.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from campaigns.core.clock import Clock, MonotonicClock

#: The window of the hard cap: the platform counts messages per second.
WINDOW_S = 1.0
#: The cap is kept over WINDOW_S + this, for the jitter between a permit and the platform.
DEFAULT_GUARD_S = 0.002
#: Rates a hair below an integer (80 * 0.5 * 2 in floating point) still count as that integer.
_RATE_EPSILON = 1e-9


def window_capacity(rate_per_s: float) -> int:
    """Most starts allowed in any one-second window at `rate_per_s`: ``max(1, floor(rate))``."""
    return max(1, math.floor(rate_per_s + _RATE_EPSILON))


def pace_per_s(rate_per_s: float) -> float:
    """The rate requests are spaced at: the window capacity, or the rate itself below 1 per second."""
    return rate_per_s if rate_per_s < 1 else float(window_capacity(rate_per_s))


class RateLimiter:
    """Paces request starts for one sender: exact GCRA waits, never more than the rate in any second.

    ``await limiter.acquire()`` returns the (clock) time at which the caller may start its request.
    Waiting callers are served first come, first served: only the one at the head of the queue sleeps
    on a timer (no thundering herd, one wake-up per permit).

    - GCRA: the theoretical arrival time (TAT) advances by ``1 / pace`` per permit; a request is due at
      ``TAT - (burst - 1) / pace``, so ``burst`` requests may start back to back after an idle moment.
      The TAT advances from the moment the permit was due, not from when the timer fired, so a
      wake-up that is late by up to ``catch_up_s`` is given back by starting the next requests sooner
      (longer stalls are lost rather than paid back in one burst).
    - Hard cap: recent start times are kept; a request never starts while the last
      ``window_capacity`` starts all lie within the last ``1 s + guard_s``. The guard (2 ms by default)
      keeps the guarantee true where it matters, at the platform: a request is written a little after
      its permit and travels with a little jitter, which could otherwise put C + 1 arrivals in one
      second there. It costs at most ``guard_s`` per second of rate (0.2 %).
    - ``pause_until`` holds every start until a clock time (a throttle's Retry-After).
    """

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int = 1,
        clock: Clock | None = None,
        catch_up_s: float = 0.05,
        guard_s: float = DEFAULT_GUARD_S,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        if catch_up_s < 0 or guard_s < 0:
            raise ValueError(f"catch_up_s and guard_s must not be negative, not {catch_up_s}, {guard_s}")
        self._clock: Clock = clock or MonotonicClock()
        self._burst = burst
        self._catch_up_s = catch_up_s
        self._cap_window_s = WINDOW_S + guard_s
        self._lock = asyncio.Lock()
        self._starts: deque[float] = deque()
        self._tat_s = -math.inf
        self._paused_until_s = -math.inf
        self._rate_per_s = 0.0
        self._interval_s = 0.0
        self._capacity = 1
        self.set_rate(rate_per_s)

    @property
    def rate_per_s(self) -> float:
        """The rate asked for (see `window_capacity` for what a fractional rate allows)."""
        return self._rate_per_s

    @property
    def burst(self) -> int:
        """Requests that may start back to back after an idle moment (still within the window cap)."""
        return self._burst

    @property
    def capacity(self) -> int:
        """Most starts in any one-second window at the current rate."""
        return self._capacity

    @property
    def paused_until_s(self) -> float:
        """Clock time before which nothing starts (``-inf`` when never paused)."""
        return self._paused_until_s

    def set_rate(self, rate_per_s: float) -> None:
        """Change the rate; it applies from the next permit on (the adaptive controller calls this)."""
        if not rate_per_s > 0 or math.isinf(rate_per_s):
            raise ValueError(f"rate_per_s must be a positive number, not {rate_per_s}")
        interval_s = 1.0 / pace_per_s(rate_per_s)
        if math.isfinite(self._tat_s):
            # The TAT is "last permit + one interval": re-base it on the new interval.
            self._tat_s += interval_s - self._interval_s
        self._rate_per_s = rate_per_s
        self._interval_s = interval_s
        self._capacity = window_capacity(rate_per_s)

    def pause_until(self, until_s: float) -> None:
        """Let no request start before clock time `until_s` (earlier pauses are never shortened)."""
        self._paused_until_s = max(self._paused_until_s, until_s)

    async def acquire(self) -> float:
        """Wait until a request may start; return that start time on the limiter's clock."""
        arrival_s = self._clock.now()
        async with self._lock:
            start_s = await self._wait_for_turn()
            # A pause counts as idle time: the pace restarts from its end, not from before it.
            earliest_s = max(arrival_s, start_s - self._catch_up_s, self._paused_until_s)
            self._tat_s = max(self._tat_s, earliest_s) + self._interval_s
            self._starts.append(start_s)
        return start_s

    def next_start_s(self) -> float:
        """The earliest clock time a request arriving now could start (ignores queued waiters)."""
        now = self._clock.now()
        return max(now, self._due_s(now))

    async def _wait_for_turn(self) -> float:
        while True:
            now = self._clock.now()
            due = self._due_s(now)
            if now >= due:
                return now
            await self._clock.sleep(due - now)

    def _due_s(self, now: float) -> float:
        starts = self._starts
        while starts and starts[0] + self._cap_window_s <= now:
            starts.popleft()
        due = max(self._tat_s - (self._burst - 1) * self._interval_s, self._paused_until_s)
        if len(starts) >= self._capacity:
            due = max(due, starts[-self._capacity] + self._cap_window_s)
        return due

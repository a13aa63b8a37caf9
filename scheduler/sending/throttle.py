"""The adaptive rate of one sender: slow down when the platform throttles, climb back to the target."""

from __future__ import annotations

import math

from campaigns.core.clock import Clock, MonotonicClock
from campaigns.core.settings_sections import DispatchSettings
from scheduler.sending.ratelimit import WINDOW_S, RateLimiter


class ThrottleController:
    """Drives a `RateLimiter`'s rate for one sender from the throttle events the platform sends.

    - On a throttle event (130429, 80007, 4, HTTP 429) the rate is multiplied by ``decrease`` (never
      below ``min_rate_per_s``), and ``Retry-After`` pauses every start until it has passed.
    - The platform counts the trailing second, so for ``hold_s`` (1 s) after a decrease it still
      sees traffic sent at the old rate and may keep throttling. Throttle events of requests that
      started before ``last decrease + hold_s`` still honour Retry-After but do not decrease the
      rate again: one decrease per platform window, not one per in-flight request (which would
      collapse the rate to the minimum within a fraction of a second).
    - After a decrease the rate climbs back linearly to the target over ``recovery_s`` (counted from
      the end of any pause) and never goes above the target.

    Call `acquire` (instead of the limiter's) so the rate is brought up to date before each permit.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        target_rate_per_s: float,
        decrease: float,
        recovery_s: float,
        clock: Clock | None = None,
        min_rate_per_s: float = 1.0,
        hold_s: float = WINDOW_S,
    ) -> None:
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be between 0 and 1, not {decrease}")
        if recovery_s <= 0:
            raise ValueError(f"recovery_s must be positive, not {recovery_s}")
        self._limiter = limiter
        self._clock: Clock = clock or MonotonicClock()
        self._decrease = decrease
        self._recovery_s = recovery_s
        self._min_rate_per_s = min_rate_per_s
        self._hold_s = hold_s
        self._target_rate_per_s = target_rate_per_s
        self._floor_rate_per_s = target_rate_per_s
        self._recovery_start_s = -math.inf
        self._last_decrease_s = -math.inf
        self.throttle_events = 0
        self.decreases = 0
        limiter.set_rate(target_rate_per_s)

    @classmethod
    def from_settings(
        cls,
        limiter: RateLimiter,
        dispatch: DispatchSettings,
        *,
        target_rate_per_s: float,
        clock: Clock | None = None,
    ) -> ThrottleController:
        """A controller with `[dispatch] throttle_decrease` and `throttle_recovery_s`."""
        return cls(
            limiter,
            target_rate_per_s=target_rate_per_s,
            decrease=dispatch.throttle_decrease,
            recovery_s=dispatch.throttle_recovery_s,
            clock=clock,
            min_rate_per_s=min(1.0, target_rate_per_s),
        )

    @property
    def target_rate_per_s(self) -> float:
        """The rate the controller returns to (the sender's configured rate)."""
        return self._target_rate_per_s

    @property
    def clock(self) -> Clock:
        """The clock the controller (and its limiter's permit times) are read on."""
        return self._clock

    @property
    def limiter(self) -> RateLimiter:
        """The limiter whose rate this controller sets."""
        return self._limiter

    def rate_at(self, now_s: float) -> float:
        """The rate in force at clock time `now_s`: the decreased rate, climbing linearly to the target."""
        if now_s <= self._recovery_start_s:
            return self._floor_rate_per_s
        progress = min(1.0, (now_s - self._recovery_start_s) / self._recovery_s)
        rate = self._floor_rate_per_s + (self._target_rate_per_s - self._floor_rate_per_s) * progress
        return min(rate, self._target_rate_per_s)

    def refresh(self) -> float:
        """Bring the limiter's rate up to date with the recovery ramp; return it."""
        rate = self.rate_at(self._clock.now())
        if not math.isclose(rate, self._limiter.rate_per_s, rel_tol=1e-9):
            self._limiter.set_rate(rate)
        return rate

    async def acquire(self) -> float:
        """`RateLimiter.acquire` at the current adaptive rate; returns the start time."""
        self.refresh()
        return await self._limiter.acquire()

    def on_throttled(self, *, started_at_s: float, retry_after_s: float | None = None) -> bool:
        """Record a throttle answer for a request that started at `started_at_s` (its permit time).

        Returns True when this event decreased the rate.
        """
        now = self._clock.now()
        self.throttle_events += 1
        resume_s = now
        if retry_after_s is not None and retry_after_s > 0:
            resume_s = now + retry_after_s
            self._limiter.pause_until(resume_s)
        if started_at_s < self._last_decrease_s + self._hold_s:
            return False
        self._floor_rate_per_s = max(self._min_rate_per_s, self.rate_at(now) * self._decrease)
        self._recovery_start_s = resume_s
        self._last_decrease_s = now
        self.decreases += 1
        self._limiter.set_rate(self._floor_rate_per_s)
        return True

    def set_target(self, target_rate_per_s: float) -> None:
        """Change the target (e.g. the platform reported another throughput level)."""
        self._target_rate_per_s = target_rate_per_s
        self._floor_rate_per_s = min(self._floor_rate_per_s, target_rate_per_s)
        self.refresh()

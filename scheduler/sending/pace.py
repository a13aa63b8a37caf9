"""The pace of one sender: its rate limiter, its adaptive throttle, and a guard for arrival jitter.

The limiter (`scheduler.sending.ratelimit`) guarantees that no second holds more request *starts* than the
rate. The platform counts *arrivals*: a request held up for a few milliseconds between its start and
the wire (a busy event loop, the OS scheduling another process) can land in the next request's
second and cost a 130429, which halves the sender's rate. So each start also gets an *anchor*, the
latest moment it can have arrived: its answer's time (the platform answered, so it had arrived), but
never later than `start + guard_s` (an answer that is merely slow says nothing about the arrival).
A request may start only when one second has passed since the anchor of the start `capacity` places
back, and of every start before it. Against a nearby server that costs almost nothing (answers come
back in a millisecond); against a distant one it costs at most `guard_s` per second of rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from campaigns.core.clock import Clock, MonotonicClock
from campaigns.core.settings import Settings
from campaigns.core.settings_sections import SenderSettings
from scheduler.sending.ratelimit import RateLimiter
from scheduler.sending.throttle import ThrottleController

#: The most an arrival is assumed to trail its start when the answer comes later than that
#: (`[dispatch] arrival_guard_ms`).
ARRIVAL_GUARD_S = 0.05
WINDOW_S = 1.0


@dataclass(slots=True)
class Permit:
    """One request start: its time on the limiter's clock and its arrival anchor (monotonic seconds)."""

    start_s: float
    anchor_s: float
    limit_s: float

    def landed(self, now_s: float) -> None:
        """The answer came back at `now_s` (the pace's clock): the request had arrived by then."""
        self.anchor_s = min(self.limit_s, now_s)


class SenderPace:
    """One sender's limiter and its adaptive throttle: what every send start waits on.

    Shared by every campaign a process sends for that sender (`scheduler.runs.dispatch_runner`).
    """

    def __init__(
        self, controller: ThrottleController, *, guard_s: float = ARRIVAL_GUARD_S, clock: Clock | None = None
    ) -> None:
        self.controller = controller
        self.guard_s = guard_s
        #: The same clock as the limiter's (monotonic seconds); injected by tests.
        self.clock: Clock = clock or MonotonicClock()
        self._recent: deque[Permit] = deque()
        self._floor_s = float("-inf")

    @property
    def rate_per_s(self) -> float:
        """The rate in force now (below the target after throttling)."""
        return self.controller.limiter.rate_per_s

    @property
    def target_rate_per_s(self) -> float:
        return self.controller.target_rate_per_s

    async def acquire(self) -> Permit:
        """Wait until a request may start (limiter, throttle and arrival guard); return its permit."""
        while (wait_s := self._guard_wait_s(self.clock.now())) > 0:
            await self.clock.sleep(wait_s)
        start_s = await self.controller.acquire()
        now = self.clock.now()
        permit = Permit(start_s=start_s, anchor_s=now + self.guard_s, limit_s=now + self.guard_s)
        self._recent.append(permit)
        return permit

    def wait_s(self) -> float:
        """About how long `acquire` would wait now (callers skip racing a short wait against a stop)."""
        now = self.clock.now()
        return max(self._guard_wait_s(now), self.controller.limiter.next_start_s() - now, 0.0)

    def _guard_wait_s(self, now_s: float) -> float:
        capacity = self.controller.limiter.capacity
        recent = self._recent
        while recent and len(recent) > capacity - 1:
            # Older starts only matter through their latest anchor (an upper bound if not landed yet).
            self._floor_s = max(self._floor_s, recent.popleft().anchor_s)
        return self._floor_s + WINDOW_S - now_s

    def throttled(self, *, started_at_s: float, retry_after_s: float | None) -> None:
        """The platform throttled a request that started at `started_at_s`: slow the sender down."""
        self.controller.on_throttled(started_at_s=started_at_s, retry_after_s=retry_after_s)

    def pause(self, seconds: float) -> None:
        """Let no request of this sender start for `seconds` (maintenance)."""
        limiter = self.controller.limiter
        limiter.pause_until(limiter.next_start_s() + seconds)


def make_pace(settings: Settings, sender: SenderSettings) -> SenderPace:
    """The pace of one sender from the settings (rate, burst, throttle reaction)."""
    rate_per_s = settings.sender_rate_per_s(sender)
    limiter = RateLimiter(rate_per_s=rate_per_s, burst=settings.throughput.burst)
    controller = ThrottleController.from_settings(limiter, settings.dispatch, target_rate_per_s=rate_per_s)
    return SenderPace(controller, guard_s=settings.dispatch.arrival_guard_ms / 1000)

"""The clock the rate limiter and the throttle controller read, injected so tests can fake time."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and a way to wait for some of them."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def sleep(self, delay_s: float) -> None:
        """Return after about `delay_s` seconds (often a little later)."""
        ...


class MonotonicClock:
    """The real clock: `time.monotonic` and `asyncio.sleep` (the event loop's own time base)."""

    def now(self) -> float:
        """Seconds from `time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, delay_s: float) -> None:
        """`asyncio.sleep`: event-loop timers wake up late by up to a few milliseconds."""
        await asyncio.sleep(max(0.0, delay_s))

"""A run's halt: stopping is an event, set once, with the first reason given for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

from scheduler.sending.run_report import RunEnd, StopReason

T = TypeVar("T")


class Halt:
    """Stops a run: the first reason wins (`end`); waits are raced against it (`unless_halted`)."""

    def __init__(self, *, on_halt: Callable[[], None] = lambda: None) -> None:
        self._event = asyncio.Event()
        self._on_halt = on_halt
        #: Why the run stopped (None while it runs).
        self.end: RunEnd | None = None

    def __call__(
        self, reason: StopReason, message: str = "", *, resume_after: datetime | None = None
    ) -> None:
        """Stop claiming and sending; the first reason wins."""
        if self.end is None:
            self.end = RunEnd(reason, message or reason.value, resume_after)
        self._event.set()
        self._on_halt()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    async def unless_halted(self, awaitable: Coroutine[Any, Any, T] | asyncio.Future[T]) -> bool:
        """Await `awaitable` unless the run halts first (then it is cancelled): True when it finished."""
        task = asyncio.ensure_future(awaitable)
        if self.is_set:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        halted = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({task, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return not task.cancelled() and task.exception() is None

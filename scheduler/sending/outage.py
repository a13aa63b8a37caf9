"""Waiting out database trouble: one clock per run for how long the database has not answered.

Every database call of a run (claims, result batches, lease renewals, the control poll, the run's
bookkeeping) goes through `DatabaseWait.run`. A passing trouble
(`campaigns.core.exceptions.is_passing_database_trouble`: SQLite locked past its busy timeout, a
PostgreSQL restart or failover, a lost connection) is retried with jittered exponential backoff
(tenacity); every caller shares one outage clock, so the run gives up `outage_wait_s` after the database
first failed to answer, whichever call noticed it, and resumes by itself as soon as any call gets
through. While it waits it logs, every `log_every_s`, how long the outage lasts and what the run holds.

Giving up raises `DatabaseUnavailableError` (exit 75, resumable) after calling `on_give_up` (the
dispatcher halts the run then). An error that is not passing trouble (a missing table) is raised at
once, untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity

from campaigns.core.exceptions import DatabaseUnavailableError, is_passing_database_trouble

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Backoff between attempts: random exponential from 0.1 s, at most this long (so resuming is prompt).
MAX_BACKOFF_S = 2.0
#: How often a wait is logged with what the run holds.
LOG_EVERY_S = 5.0


async def _awaiting(attempt: Callable[[], Awaitable[T]]) -> T:
    return await attempt()


class DatabaseWait:
    """Retries database calls through passing trouble for up to `outage_wait_s` (module docstring)."""

    def __init__(
        self,
        *,
        outage_wait_s: float,
        describe_held: Callable[[], str] = lambda: "",
        on_give_up: Callable[[DatabaseUnavailableError], None] = lambda _exc: None,
        give_up_early: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.outage_wait_s = outage_wait_s
        #: What the run holds while it waits ("120 results journaled, 3 requests in flight").
        self.describe_held = describe_held
        self.on_give_up = on_give_up
        #: True when waiting is pointless (the run was told to stop): give up at the next failure.
        self.give_up_early = give_up_early
        self.clock = clock
        self.log_every_s = log_every_s
        self._since: float | None = None
        self._last_log = 0.0
        self._last_error = ""
        #: Outages waited out (the database answered again) and the longest, in seconds.
        self.outages = 0
        self.longest_s = 0.0

    @property
    def in_trouble(self) -> bool:
        """Whether the last database call failed with a passing trouble."""
        return self._since is not None

    @property
    def outage_s(self) -> float:
        """How long the database has not answered (0 when it does)."""
        return 0.0 if self._since is None else self.clock() - self._since

    async def run(self, attempt: Callable[[], Awaitable[T]], *, what: str, read_only: bool = False) -> T:
        """`await attempt()`, retried through passing trouble; raises `DatabaseUnavailableError` on giving up.

        A `read_only` call that gets through does not end the outage: on SQLite, reads go on while
        another process holds the write lock.
        """
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(is_passing_database_trouble),
            stop=self._should_stop,
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=MAX_BACKOFF_S),
            before_sleep=lambda state: self._waiting(what),
            reraise=True,
        )
        try:
            result: T = await retrying(_awaiting, attempt)  # tenacity awaits only coroutine functions
        except Exception as exc:
            if is_passing_database_trouble(exc):
                self._failed(exc)
                raise self._give_up(what) from exc
            raise
        if not read_only:
            self._answered()
        return result

    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        if state.outcome is not None and (exc := state.outcome.exception()) is not None:
            self._failed(exc)
        return self.outage_s >= self.outage_wait_s or self.give_up_early()

    def _failed(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {str(getattr(exc, 'orig', exc)).strip()[:200]}"
        if self._since is None:
            self._since = self.clock()
            self._last_log = self._since
            log.warning(
                "database trouble (%s): sending paused, results kept; waiting up to %.0f s for it to answer",
                self._last_error,
                self.outage_wait_s,
            )

    def _waiting(self, what: str) -> None:
        now = self.clock()
        if now - self._last_log < self.log_every_s:
            return
        self._last_log = now
        held = self.describe_held()
        log.warning(
            "the database has not answered for %.0f s (%s; %s waits)%s; giving up after %.0f s",
            self.outage_s,
            self._last_error,
            what,
            f"; holding {held}" if held else "",
            self.outage_wait_s,
        )

    def _answered(self) -> None:
        if self._since is None:
            return
        waited_s = self.outage_s
        self._since = None
        self.outages += 1
        self.longest_s = max(self.longest_s, waited_s)
        log.warning("the database answers again after %.1f s: sending resumes", waited_s)

    def _give_up(self, what: str) -> DatabaseUnavailableError:
        held = self.describe_held()
        error = DatabaseUnavailableError(
            f"the database did not answer for {self.outage_s:.0f} s ({self._last_error}; {what}): "
            f"the run stopped{' holding ' + held if held else ''}; results not written are kept in the "
            "journal and written by the next command; run again when the database is back"
        )
        self.on_give_up(error)
        return error

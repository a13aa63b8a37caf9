"""The dispatcher: sends one planned campaign at exactly the sender's rate, at most once per row.

::

    claim (write txn, committed) ──► ready rows ──► pair check ──► in-flight slot ──► rate limiter
          ▲                                                                              │
          │                                                                  send task (one request)
    ledger (the queue) ◄── writer task (batched Core UPDATEs) ◄── outcome ◄──────────────┘

- **Claims** take the next due `planned` rows (tier budget permitting) and mark them `sending` in a
  short write transaction committed before any request; they are topped up only when fewer than half
  a batch is waiting, so after a `kill -9` at most ``max_in_flight + claim batch`` rows are `unknown`.
- **Sends** start when an in-flight slot is free and the sender's limiter allows (GCRA + hard cap
  over the trailing second, slowed down by the adaptive throttle on 130429).
- **Outcomes** go to the one writer task; errors are handled by class (see `_ERROR_HANDLERS`).
- **Control**: the campaign's state is polled, so `campaigns pause` from another shell stops the run
  within `control_poll_s`; the `stop` event (SIGINT/SIGTERM) stops claiming, lets in-flight requests
  finish within `shutdown_grace_s`, writes every result and gives unsent claims back.
- Every helper task is named and supervised: if one dies, the run stops instead of running half-alive.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import (
    CampaignFatalError,
    LockedError,
    MaintenanceError,
    MarketingLimitError,
    OptedOutError,
    OutcomeUnknownError,
    PairRateLimitedError,
    PlatformError,
    RecipientError,
    SenderFatalError,
    ThrottledError,
    TransientError,
    UserError,
)
from campaigns.core.models import CAMPAIGN_RUN_TABLE as CAMPAIGN_RUN
from campaigns.core.models import CampaignState
from campaigns.core.settings import Settings
from scheduler.providers.base import Provider
from scheduler.sending import backoff, ledger
from scheduler.sending.budget import TierBudget, TierChoice, claim_within_budget, resolve_tier
from scheduler.sending.ledger import ClaimedRow, Outcome, OutcomeKind
from scheduler.sending.pace import Permit
from scheduler.sending.pace import SenderPace as SenderPace  # re-exported for scheduler.runs.dispatch_runner
from scheduler.sending.pace import make_pace as make_pace
from scheduler.sending.pairs import PairSpacer
from scheduler.sending.writer import ContactAction, ResultWriter, ThrottleNote, TierRefund

log = logging.getLogger(__name__)


#: Rows due within this many seconds are waited for in the run; later ones end it as `waiting`.
WAIT_IN_RUN_MAX_S = 120.0
#: A claim holds at most this many seconds of sending at the current rate ("what it can send soon").
CLAIM_AHEAD_S = 2.0
#: A permit due sooner than this is simply awaited; a longer wait is raced against a halt.
SHORT_WAIT_S = 0.05
#: Throttled rows without a Retry-After go back to the queue for this long (the sender slows down anyway).
THROTTLE_REQUEUE_S = 1.0

T = TypeVar("T")


class StopReason(enum.StrEnum):
    """Why a run ended; each maps to an exit code (`EXIT_CODES`)."""

    COMPLETED = "completed"
    BUDGET = "tier budget spent"
    WAITING = "waiting for deferred rows"
    PAUSED = "paused"
    SIGNAL = "stopped by a signal"
    CANCELLED = "campaign cancelled"
    CAMPAIGN_FATAL = "campaign paused by the platform"
    SENDER_FATAL = "sender cannot send"
    ERROR = "error"


#: 0 completed, 75 stopped early but resumable (EX_TEMPFAIL), 1 stopped by an error.
EXIT_CODES = {
    StopReason.COMPLETED: 0,
    StopReason.BUDGET: 75,
    StopReason.WAITING: 75,
    StopReason.PAUSED: 75,
    StopReason.SIGNAL: 75,
    StopReason.CANCELLED: 1,
    StopReason.CAMPAIGN_FATAL: 1,
    StopReason.SENDER_FATAL: 1,
    StopReason.ERROR: 1,
}


@dataclass
class RunStats:
    """Counters of one run; request starts are counted per wall-clock second (the platform's window)."""

    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    requeued: int = 0
    throttled: int = 0
    released: int = 0
    starts_per_second: Counter[int] = field(default_factory=Counter)
    started_s: float = field(default_factory=time.monotonic)

    def count_start(self, wall_s: float) -> None:
        self.starts_per_second[int(wall_s)] += 1

    @property
    def sent(self) -> int:
        """Requests started."""
        return sum(self.starts_per_second.values())

    @property
    def busiest_second(self) -> int:
        return max(self.starts_per_second.values(), default=0)

    def recent_rate_per_s(self, now_wall_s: float, *, window_s: int = 5) -> float:
        """Request starts per second over the last `window_s` whole seconds."""
        current = int(now_wall_s)
        seconds = range(current - window_s, current)
        elapsed = min(window_s, max(1.0, time.monotonic() - self.started_s))
        return sum(self.starts_per_second.get(s, 0) for s in seconds) / elapsed


@dataclass(frozen=True)
class Progress:
    """A snapshot for the progress line: sent, failed, deferred, unknown, rate and ETA."""

    campaign: str
    accepted: int
    failed: int
    unknown: int
    deferred: int
    remaining: int
    rate_per_s: float
    target_rate_per_s: float
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        rate = self.rate_per_s or self.target_rate_per_s
        return self.remaining / rate if rate > 0 else None


@dataclass(frozen=True)
class RunReport:
    """How a run ended and what it did."""

    campaign: str
    reason: StopReason
    message: str
    tier: TierChoice | None
    accepted: int
    failed: int
    unknown: int
    requeued: int
    throttled: int
    busiest_second: int
    elapsed_s: float
    recovered_unknown: int = 0
    resume_after: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]

    @property
    def rate_per_s(self) -> float:
        sent = self.accepted + self.failed + self.unknown
        return sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "campaign": self.campaign,
            "outcome": self.reason.name.lower(),
            "message": self.message,
            "exit_code": self.exit_code,
            "tier": None if self.tier is None else {"name": self.tier.name, "source": self.tier.source},
            "accepted": self.accepted,
            "failed": self.failed,
            "unknown": self.unknown,
            "requeued": self.requeued,
            "throttled": self.throttled,
            "recovered_unknown": self.recovered_unknown,
            "busiest_second": self.busiest_second,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate_per_s, 2),
            "resume_after": self.resume_after.isoformat() if self.resume_after else None,
            "counts": self.counts,
        }


class Dispatcher:
    """Runs one campaign until it is done, paused, out of budget, stopped or broken (module docstring)."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        campaign: control.CampaignRef,
        provider: Provider,
        stop: asyncio.Event | None = None,
        pace: SenderPace | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        now: Callable[[], datetime] = utcnow,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.campaign = campaign
        self.provider = provider
        self.sender = settings.sender(campaign.sender_name)
        self.stop = stop or asyncio.Event()
        self.pace = pace or make_pace(settings, self.sender)
        self.on_progress = on_progress
        self.announce = announce or (lambda line: log.info("%s", line))
        #: The report of a run that was forced to stop (run() raised CancelledError).
        self.last_report: RunReport | None = None
        self.now = now
        self.owner = ledger.new_owner()
        self.dispatch = settings.dispatch
        self.limits = settings.limits
        self.pairs = PairSpacer(
            spacing_s=self.limits.pair_spacing_s, retry_base_s=self.limits.pair_retry_base_s
        )
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wacamp-db")
        self.writer = ResultWriter(
            engine,
            batch_rows=self.dispatch.write_batch_rows,
            batch_ms=self.dispatch.write_batch_ms,
            executor=self._db,
        )
        self.stats = RunStats()
        self.budget: TierBudget | None = None
        self.tier: TierChoice | None = None
        self._ready: deque[ClaimedRow] = deque()
        self._claiming: asyncio.Future[list[ClaimedRow]] | None = None
        self._in_flight: dict[asyncio.Task[None], ClaimedRow] = {}
        self._permits: dict[int, Permit] = {}
        #: When each claimed-but-unsent row was claimed (limited tiers only): a release gives its count back.
        self._claimed_at: dict[int, datetime] = {}
        #: Never more sends in flight than the provider has connections (they would queue inside
        #: aiohttp and leave in a bunch, defeating the limiter's spacing).
        self.max_in_flight = min(self.dispatch.max_in_flight, provider.pool_limit)
        self._slots_taken = 0
        self._slot_freed = asyncio.Event()
        self._halted = asyncio.Event()
        self._reason: StopReason | None = None
        self._message = ""
        self._resume_after: datetime | None = None
        self._run_id: int | None = None
        self._recovered = 0
        self._remaining_at_start = 0

    async def _in_db(self, func: Callable[..., T], *args: Any) -> T:
        """Run a database write on the run's one database thread.

        Claims, result batches and state changes never contend with each other inside this process,
        so SQLite's busy handler (which sleeps in steps of up to 100 ms) never gets involved.
        """
        return await asyncio.get_running_loop().run_in_executor(self._db, functools.partial(func, *args))

    # ----------------------------------------------------------------- run
    async def run(self) -> RunReport:
        """Send the campaign; return how it ended (never raises for platform errors)."""
        try:
            await self._prepare()
        except BaseException:
            self._db.shutdown(wait=False)
            raise
        writer_task = self.writer.start()
        helpers = [
            asyncio.create_task(self._control_loop(), name="campaign-control"),
            asyncio.create_task(self._progress_loop(), name="progress"),
            asyncio.create_task(self._watch_stop(), name="stop-signal"),
        ]
        pump = asyncio.create_task(self._pump(), name="claim-and-send")
        try:
            await self._supervise(pump, [writer_task, *helpers])
            await self._shutdown(grace_s=self.dispatch.shutdown_grace_s)
        except asyncio.CancelledError:
            self._halt(StopReason.SIGNAL, "forced stop: requests in flight are unknown")
            await asyncio.shield(self._forced_stop([pump, *helpers]))
            raise
        finally:
            for task in [pump, *helpers]:
                task.cancel()
        try:
            return await self._in_db(self._finish)
        finally:
            self._db.shutdown(wait=False)

    async def _forced_stop(self, tasks: list[asyncio.Task[None]]) -> None:
        """A second Ctrl-C: stop at once, but still write every result and the campaign's state."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown(grace_s=0)
        self.last_report = await self._in_db(self._finish)
        self._db.shutdown(wait=False)

    async def _supervise(self, pump: asyncio.Task[None], helpers: list[asyncio.Task[None]]) -> None:
        """Wait for the send loop; a helper that dies halts the run (never half-alive)."""
        pending: set[asyncio.Task[None]] = {pump, *helpers}
        while pump in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {pump}:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    log.error("task %s died", task.get_name(), exc_info=exc)
                    self._halt(StopReason.ERROR, f"task {task.get_name()} died: {exc!r}")
        if not pump.cancelled() and (exc := pump.exception()) is not None:
            log.error("the send loop failed", exc_info=exc)
            self._halt(StopReason.ERROR, f"the send loop failed: {exc!r}")

    def _halt(self, reason: StopReason, message: str = "", *, resume_after: datetime | None = None) -> None:
        """Stop claiming and sending; the first reason wins."""
        if self._reason is None:
            self._reason = reason
            self._message = message or reason.value
            self._resume_after = resume_after
        self._halted.set()
        self._slot_freed.set()

    @property
    def halted(self) -> bool:
        return self._halted.is_set()

    # ------------------------------------------------------------ prepare
    async def _prepare(self) -> None:
        ref = self.campaign
        if ref.state == CampaignState.CANCELLED:
            raise UserError(f"campaign {ref.name!r} is cancelled")
        if ref.state == CampaignState.PAUSED:
            reason = f" ({ref.pause_reason})" if ref.pause_reason else ""
            raise UserError(
                f"campaign {ref.name!r} is paused{reason}: run `wacamp campaigns resume {ref.name}` first"
            )
        await self._in_db(self._recover_and_sweep)
        self.tier = await resolve_tier(settings=self.settings, sender=self.sender, provider=self.provider)
        self.announce(_describe_tier(self.tier))
        if self._recovered:
            self.announce(
                f"{self._recovered} rows were in flight when a previous run stopped: they are `unknown` "
                f"now (status webhooks settle them; `wacamp campaigns resolve {ref.name} --resend-unknown` "
                "resends the rest)"
            )
        self.budget = TierBudget(
            portfolio=self.sender.portfolio,
            limit=self.tier.limit,
            window_s=self.limits.tier_window_h * 3600,
            clock=self.now,
        )
        await self._in_db(self._start_run)

    def _recover_and_sweep(self) -> None:
        now = self.now()
        with write_transaction(self.engine) as conn:
            self._close_crashed_runs(conn, now)
            owners = ledger.stale_owners(conn, campaign_id=self.campaign.id)
            dead = [owner for owner in owners if not ledger.owner_is_alive(owner)]
            self._recovered = ledger.recover_in_flight(
                conn, campaign_id=self.campaign.id, now=now, dead_owners=dead
            )
            ledger.skip_suppressed(conn, campaign_id=self.campaign.id, now=now)
            ledger.defer_marketing_limited(conn, campaign_id=self.campaign.id, now=now)
            queue = ledger.queue_state(conn, campaign_id=self.campaign.id, now=now)
        self._remaining_at_start = queue.due + queue.later

    def _close_crashed_runs(self, conn: Any, now: datetime) -> None:
        """Refuse to run beside a live run of this campaign on this host; close the runs that died."""
        runs = CAMPAIGN_RUN.c
        open_runs = conn.execute(
            sa.select(runs.id, runs.worker).where(
                runs.campaign_id == self.campaign.id, runs.finished_at.is_(None)
            )
        ).all()
        for run_id, worker in open_runs:
            pid = ledger.live_elsewhere_on_this_host(worker)
            if pid is not None:
                raise LockedError(
                    f"campaign {self.campaign.name!r} is being sent by another process (pid {pid}): "
                    f"stop it first, or `wacamp campaigns pause {self.campaign.name}`"
                )
            if not ledger.owner_is_alive(worker):
                conn.execute(
                    sa.update(CAMPAIGN_RUN)
                    .where(runs.id == run_id)
                    .values(finished_at=now, outcome="crashed: the process died while sending")
                )

    def _start_run(self) -> None:
        now = self.now()
        with write_transaction(self.engine) as conn:
            control.set_state(
                conn,
                self.campaign.id,
                state=CampaignState.RUNNING,
                now=now,
                started_at=sa.func.coalesce(control.c.started_at, now),
            )
            self._run_id = conn.execute(
                sa.insert(CAMPAIGN_RUN)
                .values(campaign_id=self.campaign.id, worker=self.owner, started_at=now)
                .returning(CAMPAIGN_RUN.c.id)
            ).scalar_one()

    # --------------------------------------------------------------- pump
    async def _pump(self) -> None:
        """Claim rows and start their sends until the run halts."""
        while not self.halted:
            row = await self._next_row()
            if row is None:
                await self._when_idle()
                continue
            await self._start_send(row)

    async def _next_row(self) -> ClaimedRow | None:
        """The next claimed row; claims ahead in the background so sending never waits on the database.

        A claim starts when fewer than half a batch is ready and asks for what tops it up to one
        batch, so claimed-but-unsent rows never exceed one claim batch.
        """
        target = self._claim_size()
        if self._claiming is None and len(self._ready) < max(1, target // 2) and not self.halted:
            self._claiming = asyncio.ensure_future(self._in_db(self._claim, target - len(self._ready)))
        if self._claiming is not None and (self._claiming.done() or not self._ready):
            # Never cancelled: the claim commits in its thread whatever happens to this task.
            claimed = await asyncio.shield(self._claiming)
            self._claiming = None
            self._ready.extend(claimed)
            if not claimed and not self._ready:
                return None
        return self._ready.popleft() if self._ready else None

    def _claim_size(self) -> int:
        """One claim batch, but never more than the sender can send in CLAIM_AHEAD_S."""
        ahead = math.ceil(self.pace.rate_per_s * CLAIM_AHEAD_S)
        return max(1, min(self.dispatch.claim_batch, ahead))

    def _claim(self, limit: int) -> list[ClaimedRow]:
        assert self.budget is not None
        now = self.now()
        with write_transaction(self.engine) as conn:
            rows = claim_within_budget(
                conn,
                budget=self.budget,
                campaign_id=self.campaign.id,
                owner=self.owner,
                limit=limit,
                now=now,
                lease_s=self.dispatch.lease_s,
            )
        if not self.budget.unlimited:
            self._claimed_at.update((row.id, now) for row in rows)
        return rows

    async def _start_send(self, row: ClaimedRow) -> None:
        wait_s = self.pairs.wait_s(row.phone, time.monotonic())
        if wait_s > 0:
            self._claimed_at.pop(row.id, None)  # it stays counted: claimed again later, it costs nothing
            self._requeue(row, after_s=wait_s, refund=True)
            return
        if not await self._take_slot():
            self._release(row)
            return
        permit = await self._permit()
        if permit is None:
            self._give_slot()
            self._release(row)
            return
        self.pairs.mark(row.phone, time.monotonic())
        self.stats.count_start(time.time())
        self._claimed_at.pop(row.id, None)
        self._permits[row.id] = permit
        task = asyncio.create_task(self._send(row), name=f"send-{row.id}")
        self._in_flight[task] = row
        task.add_done_callback(self._sent)

    async def _take_slot(self) -> bool:
        """Wait for an in-flight slot (no task per wait: a send's end or a halt wakes us)."""
        while self._slots_taken >= self.max_in_flight:
            if self.halted:
                return False
            self._slot_freed.clear()
            await self._slot_freed.wait()
        self._slots_taken += 1
        return True

    def _give_slot(self) -> None:
        self._slots_taken -= 1
        self._slot_freed.set()

    async def _permit(self) -> Permit | None:
        """The sender's permit for one request, or None if the run halts while waiting for it."""
        if self.pace.wait_s() < SHORT_WAIT_S:  # the common case at full speed: no task, no race
            return await self.pace.acquire()
        acquiring = asyncio.ensure_future(self.pace.acquire())
        if not await self._until_halted(acquiring):
            return None
        return acquiring.result()

    async def _until_halted(self, awaitable: Coroutine[Any, Any, T] | asyncio.Future[T]) -> bool:
        """Await `awaitable` unless the run halts first (then it is cancelled): True when it finished."""
        task = asyncio.ensure_future(awaitable)
        if self.halted:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        halted = asyncio.ensure_future(self._halted.wait())
        try:
            await asyncio.wait({task, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return not task.cancelled() and task.exception() is None

    def _sent(self, task: asyncio.Task[None]) -> None:
        row = self._in_flight.pop(task, None)
        if row is not None:
            self._permits.pop(row.id, None)
        self._give_slot()

    # ---------------------------------------------------------------- idle
    async def _when_idle(self) -> None:
        """Nothing to claim now: finish, wait for budget or for rows due later, or claim again."""
        await self._drain_in_flight()
        await self.writer.flush()
        decision = await self._in_db(self._idle_decision)
        if decision is None:
            await asyncio.sleep(0.05)
        elif isinstance(decision, float):
            await self._until_halted(asyncio.sleep(decision))
        else:
            reason, message, resume_after = decision
            self._halt(reason, message, resume_after=resume_after)

    async def _drain_in_flight(self) -> None:
        if self._in_flight:
            await self._until_halted(asyncio.wait(set(self._in_flight)))

    def _idle_decision(self) -> float | tuple[StopReason, str, datetime | None] | None:
        """None: claim again now; seconds: sleep then claim; a tuple: stop for that reason."""
        assert self.budget is not None
        now = self.now()
        with write_transaction(self.engine) as conn:
            ledger.skip_suppressed(conn, campaign_id=self.campaign.id, now=now)
            ledger.defer_marketing_limited(conn, campaign_id=self.campaign.id, now=now)
            queue = ledger.queue_state(conn, campaign_id=self.campaign.id, now=now)
            remaining = self.budget.remaining(conn, now)
            frees_at = self.budget.capacity_frees_at(conn, now)
        if queue.due and remaining == 0:
            when = f" until {frees_at:%Y-%m-%d %H:%M} UTC" if frees_at else ""
            message = (
                f"tier {self.budget.limit} unique recipients per window spent: {queue.due} rows wait{when}"
            )
            return StopReason.BUDGET, message, frees_at
        if queue.due:
            return None
        if queue.later and queue.next_due_at is not None:
            wait_s = (queue.next_due_at - now).total_seconds()
            if wait_s <= WAIT_IN_RUN_MAX_S:
                return max(0.05, wait_s)
            message = (
                f"{queue.later} rows are deferred: the first is due at {queue.next_due_at:%Y-%m-%d %H:%M} UTC"
            )
            return StopReason.WAITING, message, queue.next_due_at
        return StopReason.COMPLETED, "every row has an outcome", None

    # ---------------------------------------------------------------- send
    async def _send(self, row: ClaimedRow) -> None:
        try:
            result = await self.provider.send(row.body)
        except asyncio.CancelledError:
            self._outcome(row, OutcomeKind.UNKNOWN, error_title="in flight when the run was forced to stop")
            raise
        except PlatformError as exc:
            if not isinstance(exc, OutcomeUnknownError):
                self._landed(row)
            self._on_error(row, exc)
        except Exception as exc:  # a defect, not an answer: the request may have gone out
            log.exception("unexpected error sending message %s", row.id)
            self._outcome(row, OutcomeKind.UNKNOWN, error_title=f"{type(exc).__name__}: {exc}")
            self._halt(StopReason.ERROR, f"unexpected error while sending: {type(exc).__name__}: {exc}")
        else:
            self._landed(row)
            self.stats.accepted += 1
            self._outcome(row, OutcomeKind.ACCEPTED, wamid=result.wamid, message_status=result.message_status)

    def _landed(self, row: ClaimedRow) -> None:
        """An answer came back: the request reached the platform by now (see `scheduler.sending.pace`)."""
        permit = self._permits.get(row.id)
        if permit is not None:
            permit.landed(self.pace.clock.now())

    def _on_error(self, row: ClaimedRow, exc: PlatformError) -> None:
        for cls, handler in _ERROR_HANDLERS:
            if isinstance(exc, cls):
                handler(self, row, exc)
                return
        self._fail(row, exc)

    def _outcome(self, row: ClaimedRow, kind: OutcomeKind, **fields: Any) -> None:
        if kind is OutcomeKind.UNKNOWN:
            self.stats.unknown += 1
        self.writer.put(Outcome(kind=kind, message_id=row.id, at=self.now(), **fields))

    def _requeue(
        self, row: ClaimedRow, *, after_s: float, refund: bool, exc: PlatformError | None = None
    ) -> None:
        self.stats.requeued += 1
        self._outcome(
            row,
            OutcomeKind.REQUEUE,
            next_attempt_at=self.now() + timedelta(seconds=after_s),
            refund_attempt=refund,
            error_code=None if exc is None else exc.code,
            error_title=None if exc is None else exc.title,
        )

    def _release(self, row: ClaimedRow) -> None:
        self.stats.released += 1
        self._outcome(row, OutcomeKind.RELEASE)
        claimed_at = self._claimed_at.pop(row.id, None)
        if claimed_at is not None and self.budget is not None:
            self.writer.put(
                TierRefund(portfolio=self.budget.portfolio, phone=row.phone, counted_at=claimed_at)
            )

    def _fail(self, row: ClaimedRow, exc: PlatformError) -> None:
        self.stats.failed += 1
        self._outcome(row, OutcomeKind.FAILED, error_code=exc.code, error_title=exc.title or str(exc))

    def _on_throttled(self, row: ClaimedRow, exc: PlatformError) -> None:
        retry_after_s = getattr(exc, "retry_after_s", None)
        self.stats.throttled += 1
        permit = self._permits.get(row.id)
        started_at_s = -math.inf if permit is None else permit.start_s
        self.pace.throttled(started_at_s=started_at_s, retry_after_s=retry_after_s)
        self.writer.put(
            ThrottleNote(
                sender_name=self.sender.name,
                campaign_id=self.campaign.id,
                code=exc.code,
                retry_after_s=retry_after_s,
                at=self.now(),
            )
        )
        self._requeue(row, after_s=retry_after_s or THROTTLE_REQUEUE_S, refund=True, exc=exc)

    def _on_pair_rate(self, row: ClaimedRow, exc: PlatformError) -> None:
        wait_s = backoff.pair_rate_delay_s(attempt=self.pairs.strike(row.phone), limits=self.limits)
        if wait_s is None:
            self._fail(row, exc)
            return
        self.pairs.hold(row.phone, time.monotonic() + wait_s)
        self._requeue(row, after_s=wait_s, refund=True, exc=exc)

    def _on_maintenance(self, row: ClaimedRow, exc: PlatformError) -> None:
        wait_s = backoff.maintenance_delay_s(attempt=max(1, row.attempts), limits=self.limits)
        self.pace.pause(wait_s)
        self._requeue(row, after_s=wait_s, refund=True, exc=exc)

    def _on_transient(self, row: ClaimedRow, exc: PlatformError) -> None:
        wait_s = backoff.transient_delay_s(attempt=row.attempts, limits=self.limits)
        if wait_s is None:
            self._fail(row, exc)
            return
        self._requeue(row, after_s=wait_s, refund=False, exc=exc)

    def _on_opted_out(self, row: ClaimedRow, exc: PlatformError) -> None:
        self._fail(row, exc)
        self.writer.put(ContactAction(row.contact_id, suppress_reason=f"({exc.code}) {exc.title}"[:200]))

    def _on_marketing_limit(self, row: ClaimedRow, exc: PlatformError) -> None:
        self._fail(row, exc)
        until = self.now() + timedelta(hours=self.limits.marketing_defer_h)
        self.writer.put(ContactAction(row.contact_id, defer_until=until))

    def _on_campaign_fatal(self, row: ClaimedRow, exc: PlatformError) -> None:
        self._release(row)
        self._halt(StopReason.CAMPAIGN_FATAL, f"({exc.code}) {exc.title}".strip())

    def _on_sender_fatal(self, row: ClaimedRow, exc: PlatformError) -> None:
        self._release(row)
        self._halt(StopReason.SENDER_FATAL, f"sender {self.sender.name!r}: ({exc.code}) {exc.title}".strip())

    def _on_unknown(self, row: ClaimedRow, exc: PlatformError) -> None:
        self._outcome(row, OutcomeKind.UNKNOWN, error_code=exc.code, error_title=exc.title or str(exc))

    # ------------------------------------------------------------ helpers
    async def _watch_stop(self) -> None:
        await self.stop.wait()
        self._halt(StopReason.SIGNAL, "stopped by a signal: run again to resume")

    async def _control_loop(self) -> None:
        """Poll the campaign's state (pause/cancel from another shell) and renew the leases."""
        renew_every_s = self.dispatch.lease_s / 3
        last_renew = time.monotonic()
        while not self.halted:
            await self._until_halted(asyncio.sleep(self.dispatch.control_poll_s))
            ref = await asyncio.to_thread(self._reload)
            if ref.state == CampaignState.PAUSED:
                self._halt(StopReason.PAUSED, f"paused ({ref.pause_reason or 'no reason given'})")
            elif ref.state == CampaignState.CANCELLED:
                self._halt(StopReason.CANCELLED)
            if time.monotonic() - last_renew >= renew_every_s:
                await self._in_db(self._renew_leases)
                last_renew = time.monotonic()

    def _reload(self) -> control.CampaignRef:
        with self.engine.connect() as conn:
            return control.reload(conn, self.campaign.id)

    def _renew_leases(self) -> None:
        now = self.now()
        with write_transaction(self.engine) as conn:
            ledger.renew_leases(conn, owner=self.owner, until=now + timedelta(seconds=self.dispatch.lease_s))

    async def _progress_loop(self) -> None:
        if self.on_progress is None:
            return
        while not self.halted:
            self.on_progress(self.progress())
            await self._until_halted(asyncio.sleep(0.5))
        self.on_progress(self.progress())

    def progress(self) -> Progress:
        """The current progress snapshot."""
        s = self.stats
        done = s.accepted + s.failed + s.unknown
        return Progress(
            campaign=self.campaign.name,
            accepted=s.accepted,
            failed=s.failed,
            unknown=s.unknown,
            deferred=s.requeued,
            remaining=max(0, self._remaining_at_start - done),
            rate_per_s=s.recent_rate_per_s(time.time()),
            target_rate_per_s=self.pace.target_rate_per_s,
            elapsed_s=time.monotonic() - s.started_s,
        )

    # ----------------------------------------------------------- shutdown
    async def _shutdown(self, *, grace_s: float) -> None:
        """Give unsent claims back, let in-flight requests finish (bounded), write every result."""
        if self._claiming is not None:
            self._ready.extend(await asyncio.shield(self._claiming))
            self._claiming = None
        while self._ready:
            self._release(self._ready.popleft())
        late = set(self._in_flight)
        if late and grace_s > 0:
            _, late = await asyncio.wait(late, timeout=grace_s)
        if late:
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.writer.close()

    def _finish(self) -> RunReport:
        reason = self._reason or StopReason.ERROR
        now = self.now()
        with write_transaction(self.engine) as conn:
            self._record_campaign_state(conn, reason, now)
            self._record_run(conn, reason, now)
            counts = ledger.counts_by_state(conn, campaign_id=self.campaign.id)
        s = self.stats
        return RunReport(
            campaign=self.campaign.name,
            reason=reason,
            message=self._message,
            tier=self.tier,
            accepted=s.accepted,
            failed=s.failed,
            unknown=s.unknown,
            requeued=s.requeued,
            throttled=s.throttled,
            busiest_second=s.busiest_second,
            elapsed_s=time.monotonic() - s.started_s,
            recovered_unknown=self._recovered,
            resume_after=self._resume_after,
            counts=counts,
        )

    def _record_campaign_state(self, conn: Any, reason: StopReason, now: datetime) -> None:
        cid = self.campaign.id
        if reason is StopReason.COMPLETED:
            control.set_state(conn, cid, state=CampaignState.COMPLETED, now=now, finished_at=now)
        elif reason in (StopReason.BUDGET, StopReason.WAITING, StopReason.SIGNAL):
            resume_after = self._resume_after or now
            control.set_state(conn, cid, state=CampaignState.WAITING, now=now, resume_after=resume_after)
        elif reason in (StopReason.CAMPAIGN_FATAL, StopReason.SENDER_FATAL, StopReason.ERROR):
            control.set_state(
                conn, cid, state=CampaignState.PAUSED, now=now, pause_reason=self._message[:500]
            )
        # PAUSED and CANCELLED: another shell set the state; leave it as it is.

    def _record_run(self, conn: Any, reason: StopReason, now: datetime) -> None:
        if self._run_id is None:
            return
        s = self.stats
        conn.execute(
            sa.update(CAMPAIGN_RUN)
            .where(CAMPAIGN_RUN.c.id == self._run_id)
            .values(
                finished_at=now,
                outcome=f"{reason.name.lower()}: {self._message}"[:200],
                accepted=s.accepted,
                failed=s.failed,
                unknown=s.unknown,
                throttled=s.throttled,
                busiest_second=s.busiest_second,
            )
        )


def _describe_tier(tier: TierChoice) -> str:
    size = "unlimited" if tier.limit is None else f"{tier.limit:,} unique recipients per window"
    if tier.source.startswith("fallback"):
        return f"messaging tier {tier.name} ({size}): {tier.source}"
    return f"messaging tier {tier.name} ({size}, from the {tier.source})"


Handler = Callable[[Dispatcher, ClaimedRow, PlatformError], None]

#: Most specific first: the first class that matches handles the error.
_ERROR_HANDLERS: tuple[tuple[type[PlatformError], Handler], ...] = (
    (ThrottledError, Dispatcher._on_throttled),
    (PairRateLimitedError, Dispatcher._on_pair_rate),
    (MaintenanceError, Dispatcher._on_maintenance),
    (TransientError, Dispatcher._on_transient),
    (OptedOutError, Dispatcher._on_opted_out),
    (MarketingLimitError, Dispatcher._on_marketing_limit),
    (RecipientError, Dispatcher._fail),
    (CampaignFatalError, Dispatcher._on_campaign_fatal),
    (SenderFatalError, Dispatcher._on_sender_fatal),
    (OutcomeUnknownError, Dispatcher._on_unknown),
)


@dataclass(frozen=True)
class RunPreview:
    """What `campaigns run --dry-run` says a run would do now, without sending or writing anything."""

    campaign: str
    state: str
    due: int
    later: int
    next_due_at: datetime | None
    tier: TierChoice
    budget_remaining: int | None
    would_send: int
    rate_per_s: float
    counts: dict[str, int]

    @property
    def eta_s(self) -> float:
        return self.would_send / self.rate_per_s if self.rate_per_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The preview as JSON-ready data."""
        return {
            "campaign": self.campaign,
            "state": self.state,
            "due": self.due,
            "later": self.later,
            "next_due_at": self.next_due_at.isoformat() if self.next_due_at else None,
            "tier": {"name": self.tier.name, "limit": self.tier.limit, "source": self.tier.source},
            "budget_remaining": self.budget_remaining,
            "would_send": self.would_send,
            "rate_per_s": self.rate_per_s,
            "eta_s": round(self.eta_s, 1),
            "counts": self.counts,
        }


async def preview_run(
    *, engine: Engine, settings: Settings, campaign: control.CampaignRef, provider: Provider | None
) -> RunPreview:
    """A dry run: the queue, the tier budget and how long sending would take (reads only).

    `would_send` counts every due row against the budget, so it can only be too low (recipients
    already counted or in a service window cost nothing).
    """
    sender = settings.sender(campaign.sender_name)
    tier = await resolve_tier(settings=settings, sender=sender, provider=provider)
    budget = TierBudget(
        portfolio=sender.portfolio, limit=tier.limit, window_s=settings.limits.tier_window_h * 3600
    )
    now = utcnow()
    with engine.connect() as conn:
        queue = ledger.queue_state(conn, campaign_id=campaign.id, now=now)
        remaining = budget.remaining(conn, now)
        counts = ledger.counts_by_state(conn, campaign_id=campaign.id)
    would_send = queue.due if remaining is None else min(queue.due, remaining)
    return RunPreview(
        campaign=campaign.name,
        state=campaign.state,
        due=queue.due,
        later=queue.later,
        next_due_at=queue.next_due_at,
        tier=tier,
        budget_remaining=remaining,
        would_send=would_send,
        rate_per_s=settings.sender_rate_per_s(sender),
        counts=counts,
    )

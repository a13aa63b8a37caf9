"""The dispatcher: sends one planned campaign at exactly the sender's rate, at most once per row.

::

    claim (write txn, committed) ──► ready rows ──► pair check ──► in-flight slot ──► rate limiter
          ▲                                                                              │
          │                                                                  send task (one request)
    ledger (the queue) ◄── writer task (batched Core UPDATEs) ◄── outcome ◄──────────────┘

- **Claims** lease the next due `planned` rows (tier budget permitting) as `claimed`: nothing about
  the wire; topped up when fewer than half a batch is waiting. A killed run's claimed rows go back to
  `planned` once its lease expires (`scheduler.sending.ledger.recover_expired`).
- **Marks**: just ahead of their permits, claimed rows are marked `sending` in small group commits
  (the permits due in the next 0.1 s, `scheduler.sending.claims`), durable before any of their
  requests is written; so after a `kill -9` at most ``requests in flight + rate x 0.1 s`` rows are
  `sending`, then `unknown`.
- **Sends** start when an in-flight slot is free and the sender's limiter allows (GCRA + hard cap
  over the trailing second, slowed down by the adaptive throttle on 130429).
- **Outcomes** go to the one writer task; errors are handled by class
  (`scheduler.sending.outcome_actions`).
- **Control**: the campaign's state is polled, so `campaigns pause` from another shell stops the run
  within `control_poll_s`; the `stop` event (SIGINT/SIGTERM) stops claiming, lets in-flight requests
  finish within `shutdown_grace_s`, writes every result and gives unsent claims back.
- Every helper task is named and supervised: if one dies, the run stops instead of running half-alive.

The run's bookkeeping at its start and end is in `scheduler.sending.run_records`, how it ends and is
told in `scheduler.sending.run_report`, the dry run in `scheduler.sending.preview`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.caps import CapRule, rule_for
from campaigns.content.media import refresh_media_of
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import (
    DatabaseUnavailableError,
    OutcomeUnknownError,
    PlatformError,
    UserError,
)
from campaigns.core.models import CampaignState
from campaigns.core.settings import Settings
from scheduler.providers.base import Provider
from scheduler.sending import caps, leases, ledger, run_records
from scheduler.sending.budget import TierBudget, TierChoice, claim_within_budget, resolve_tier
from scheduler.sending.claims import ClaimAhead, mark_group_size
from scheduler.sending.halt import Halt
from scheduler.sending.in_flight import InFlight
from scheduler.sending.journal import Journal, journal_key
from scheduler.sending.ledger import ClaimedRow
from scheduler.sending.ledger_outcomes import OutcomeKind
from scheduler.sending.outage import DatabaseWait
from scheduler.sending.outcome_actions import OutcomeActions
from scheduler.sending.pace import Permit, SenderPace, make_pace
from scheduler.sending.pairs import PairSpacer
from scheduler.sending.route import SendRoute
from scheduler.sending.run_database import RunDatabase
from scheduler.sending.run_report import (
    Progress,
    RunEnd,
    RunReport,
    RunStats,
    StopReason,
    describe_recovery,
    describe_tier,
)
from scheduler.sending.writer import ResultWriter

log = logging.getLogger(__name__)


#: A claim holds at most this many seconds of sending at the current rate ("what it can send soon").
CLAIM_AHEAD_S = 2.0
#: A permit due sooner than this is simply awaited; a longer wait is raced against a halt.
SHORT_WAIT_S = 0.05


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
        #: The run's one database thread; database trouble is waited out (`scheduler.sending.run_database`).
        self.db = RunDatabase(
            engine,
            now=now,
            wait=DatabaseWait(
                outage_wait_s=settings.database.outage_wait_s,
                describe_held=self._held,
                on_give_up=lambda exc: self.halt(StopReason.DATABASE, str(exc)),
                give_up_early=lambda: self.halt.end is not None and self.halt.end.reason is StopReason.SIGNAL,
            ),
        )
        self.writer = ResultWriter(
            engine,
            batch_rows=self.dispatch.write_batch_rows,
            batch_ms=self.dispatch.write_batch_ms,
            executor=self.db.executor,
            wait=self.db.wait,
            journal=Journal(settings.database.journal_directory(), journal_key(settings.database.url)),
        )
        self.stats = RunStats()
        self.budget: TierBudget | None = None
        #: The frequency cap its recipients are held to (`campaigns.caps`); None = no cap.
        self.cap: CapRule | None = None
        self.tier: TierChoice | None = None
        self.claims = ClaimAhead(self._claim_rows, self._mark_rows)
        #: Never more sends in flight than the provider has connections (`InFlight`).
        self.sends = InFlight(limit=min(self.dispatch.max_in_flight, provider.pool_limit))
        self.halt = Halt(on_halt=self.sends.wake)
        #: When each claimed-but-unsent row was claimed (limited tiers only): a release gives its count back.
        self._claimed_at: dict[int, datetime] = {}
        #: Which endpoint the sends go to (the Marketing Messages API, with its Cloud API fallback).
        self.route = SendRoute.for_campaign(
            provider, via=campaign.via, product_policy=campaign.product_policy, sender_api=self.sender.api
        )
        self.outcomes = OutcomeActions(
            campaign_id=campaign.id,
            sender=self.sender,
            limits=self.limits,
            writer=self.writer,
            stats=self.stats,
            pace=self.pace,
            pairs=self.pairs,
            permits=self.sends.permits,
            claimed_at=self._claimed_at,
            halt=self.halt,
            now=now,
            route=self.route,
            warmup_s=(settings.marketing.warmup_retry_s, settings.marketing.warmup_retry_max_s),
        )
        self._run_id: int | None = None
        self._recovery = run_records.Recovery(recovered_unknown=0, remaining=0)

    async def _claim_rows(self, limit: int, sending: bool) -> list[ClaimedRow]:
        """A claim (marked `sending` too if asked), or none when the run gave up on the database."""
        try:
            return await self.db.call(self._claim, limit, sending)
        except DatabaseUnavailableError:
            return []

    async def _mark_rows(self, rows: list[ClaimedRow]) -> list[ClaimedRow]:
        """Rows marked `sending` (committed), or none when the run gave up on the database.

        Rows left unmarked stay `claimed` under this run's lease: released at its end, or given
        back to the queue when the lease expires.
        """
        try:
            return await self.db.call(self._mark, rows)
        except DatabaseUnavailableError:
            return []

    def _held(self) -> str:
        """What the run holds while the database does not answer (for the outage log lines)."""
        return (
            f"{self.writer.held} results ({self.writer.journaled} journaled), "
            f"{len(self.sends)} requests in flight, sending paused"
        )

    # ----------------------------------------------------------------- run
    async def run(self) -> RunReport:
        """Send the campaign; return how it ended (never raises for platform errors)."""
        try:
            await self._prepare()
        except BaseException:
            self.db.shutdown()
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
            self.halt(StopReason.SIGNAL, "forced stop: requests in flight are unknown")
            await asyncio.shield(self._forced_stop([pump, *helpers]))
            raise
        finally:
            for task in [pump, *helpers]:
                task.cancel()
        try:
            return await self._finish()
        finally:
            self.db.shutdown()

    async def _forced_stop(self, tasks: list[asyncio.Task[None]]) -> None:
        """A second Ctrl-C: stop at once, but still write every result and the campaign's state."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown(grace_s=0)
        self.last_report = await self._finish()
        self.db.shutdown()

    async def _supervise(self, pump: asyncio.Task[None], helpers: list[asyncio.Task[None]]) -> None:
        """Wait for the send loop; a helper that dies halts the run (never half-alive)."""
        pending: set[asyncio.Task[None]] = {pump, *helpers}
        while pump in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {pump}:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    log.error("task %s died", task.get_name(), exc_info=exc)
                    self.halt(StopReason.ERROR, f"task {task.get_name()} died: {exc!r}")
        if not pump.cancelled() and (exc := pump.exception()) is not None:
            log.error("the send loop failed", exc_info=exc)
            self.halt(StopReason.ERROR, f"the send loop failed: {exc!r}")

    @property
    def halted(self) -> bool:
        return self.halt.is_set

    # ------------------------------------------------------------ prepare
    async def _prepare(self) -> None:
        ref = self.campaign
        _refuse_if_stopped(ref)
        self._recovery = await self._recover()
        if repointed := await asyncio.to_thread(
            refresh_media_of, self.engine, settings=self.settings, campaign_id=ref.id
        ):
            self.announce(f"header media re-uploaded (close to expiring): {repointed} planned rows use it")
        self.tier = await resolve_tier(settings=self.settings, sender=self.sender, provider=self.provider)
        self.announce(describe_tier(self.tier))
        if recovered := self._recovery.recovered_unknown:
            self.announce(describe_recovery(recovered, campaign=ref.name))
        self.budget = TierBudget(
            portfolio=self.sender.portfolio,
            limit=self.tier.limit,
            window_s=self.limits.tier_window_h * 3600,
            clock=self.now,
        )
        self.cap = rule_for(ref, self.settings)
        if self.cap is not None:
            self.announce(self.cap.describe())
        self._run_id = await self.db.in_txn(
            run_records.start_run, campaign_id=ref.id, owner=self.owner, lease_s=self.dispatch.lease_s
        )

    async def _recover(self) -> run_records.Recovery:
        """Recovery at start; beside another run's live lease, wait until it expires (the holder died)
        or is renewed (the holder lives: refused, exit 75). Never more than one lease long.
        """
        seen: datetime | None = None
        while True:
            try:
                return await self.db.in_txn(run_records.recover_and_sweep, campaign=self.campaign)
            except run_records.RunLeaseHeld as held:
                if (seen is not None and held.until != seen) or self.stop.is_set():
                    raise
                if seen is None:
                    self.announce(f"{held}: waiting until its lease expires or is renewed")
                seen = held.until
                await asyncio.sleep(min(1.0, max(0.05, held.left_s + 0.05)))

    # --------------------------------------------------------------- pump
    async def _pump(self) -> None:
        """Claim rows and start their sends until the run halts."""
        while not self.halted:
            group = mark_group_size(self.pace.rate_per_s)
            row = await self.claims.next_row(batch=self._claim_size(), group=group, halted=self.halted)
            if row is None:
                await self._when_idle()
                continue
            await self._start_send(row)

    def _claim_size(self) -> int:
        """One claim batch, but never more than the sender can send in CLAIM_AHEAD_S."""
        ahead = math.ceil(self.pace.rate_per_s * CLAIM_AHEAD_S)
        return max(1, min(self.dispatch.claim_batch, ahead))

    def _claim(self, limit: int, sending: bool = False) -> list[ClaimedRow]:
        assert self.budget is not None
        now = self.now()
        with write_transaction(self.engine) as conn:
            if self.cap is not None:  # check-and-claim one claim at a time per portfolio
                leases.lock_portfolio(conn, self.cap.portfolio)
                caps.hold_capped(conn, self.cap, campaign_id=self.campaign.id, now=now, limit=limit)
            rows = claim_within_budget(
                conn,
                budget=self.budget,
                campaign_id=self.campaign.id,
                owner=self.owner,
                limit=limit,
                now=now,
                lease_s=self.dispatch.lease_s,
                lease_from=leases.db_now(conn),
                gate=caps.claimable(self.cap, now),
                sending=sending,
            )
        if not self.budget.unlimited:
            self._claimed_at.update((row.id, now) for row in rows)
        return rows

    def _mark(self, rows: list[ClaimedRow]) -> list[ClaimedRow]:
        """Mark claimed rows `sending` in one commit; those whose lease this run lost are dropped."""
        with write_transaction(self.engine) as conn:
            marked = ledger.mark_sending(
                conn, owner=self.owner, message_ids=[r.id for r in rows], now=self.now()
            )
        if len(marked) < len(rows):
            log.warning(
                "%d claimed rows were no longer this run's (lease lost): not sent", len(rows) - len(marked)
            )
            for row in rows:
                if row.id not in marked:
                    self._claimed_at.pop(row.id, None)
        return [row for row in rows if row.id in marked]

    async def _start_send(self, row: ClaimedRow) -> None:
        wait_s = self.pairs.wait_s(row.phone, time.monotonic())
        if wait_s > 0:
            self._claimed_at.pop(row.id, None)  # it stays counted: claimed again later, it costs nothing
            self.outcomes.requeue(row, after_s=wait_s, refund=True)
            return
        if not await self.sends.take_slot(lambda: self.halted):
            self.outcomes.release(row)
            return
        permit = await self._permit()
        if permit is None:
            self.sends.give_slot()
            self.outcomes.release(row)
            return
        self.pairs.mark(row.phone, time.monotonic())
        self.stats.count_start(time.time())
        self._claimed_at.pop(row.id, None)
        self.sends.start(row, permit, self._send(row))

    async def _permit(self) -> Permit | None:
        """The sender's permit for one request, or None if the run halts while waiting for it."""
        if self.pace.wait_s() < SHORT_WAIT_S:  # the common case at full speed: no task, no race
            return await self.pace.acquire()
        acquiring = asyncio.ensure_future(self.pace.acquire())
        if not await self.halt.unless_halted(acquiring):
            return None
        return acquiring.result()

    # ---------------------------------------------------------------- idle
    async def _when_idle(self) -> None:
        """Nothing to claim now: finish, wait for budget or for rows due later, or claim again."""
        await self._drain_in_flight()
        await self.writer.flush()
        assert self.budget is not None
        decision = await self.db.in_txn(
            run_records.idle_decision, campaign_id=self.campaign.id, budget=self.budget
        )
        if decision is None:
            await asyncio.sleep(0.05)
        elif isinstance(decision, float):
            await self.halt.unless_halted(asyncio.sleep(decision))
        else:
            self.halt(decision.reason, decision.message, resume_after=decision.resume_after)

    async def _drain_in_flight(self) -> None:
        if self.sends:
            await self.halt.unless_halted(asyncio.wait(self.sends.tasks()))

    # ---------------------------------------------------------------- send
    async def _send(self, row: ClaimedRow) -> None:
        try:
            result, via = await self.route.send(row)
        except asyncio.CancelledError:
            self.outcomes.record(
                row, OutcomeKind.UNKNOWN, error_title="in flight when the run was forced to stop"
            )
            raise
        except PlatformError as exc:
            if not isinstance(exc, OutcomeUnknownError):
                self.sends.landed(row, self.pace.clock.now())
            self.outcomes.on_error(row, exc)
        except Exception as exc:  # a defect, not an answer: the request may have gone out
            log.exception("unexpected error sending message %s", row.id)
            self.outcomes.record(row, OutcomeKind.UNKNOWN, error_title=f"{type(exc).__name__}: {exc}")
            self.halt(StopReason.ERROR, f"unexpected error while sending: {type(exc).__name__}: {exc}")
        else:
            self.sends.landed(row, self.pace.clock.now())
            self.outcomes.accept(row, wamid=result.wamid, message_status=result.message_status, via=via)

    # ------------------------------------------------------------ helpers
    async def _watch_stop(self) -> None:
        await self.stop.wait()
        self.halt(StopReason.SIGNAL, "stopped by a signal: run again to resume")

    async def _control_loop(self) -> None:
        """Poll the campaign's state (pause/cancel from another shell) and renew the leases."""
        renew_every_s = self.dispatch.lease_s / 3
        last_renew = time.monotonic()
        while not self.halted:
            await self.halt.unless_halted(asyncio.sleep(self.dispatch.control_poll_s))
            ref = await self.db.wait.run(lambda: asyncio.to_thread(self._reload), what="poll", read_only=True)
            if ref.state == CampaignState.PAUSED:
                self.halt(StopReason.PAUSED, f"paused ({ref.pause_reason or 'no reason given'})")
            elif ref.state == CampaignState.CANCELLED:
                self.halt(StopReason.CANCELLED)
            if time.monotonic() - last_renew >= renew_every_s:
                await self.db.in_txn(
                    run_records.renew_leases, owner=self.owner, lease_s=self.dispatch.lease_s
                )
                last_renew = time.monotonic()

    def _reload(self) -> control.CampaignRef:
        with self.engine.connect() as conn:
            return control.reload(conn, self.campaign.id)

    async def _progress_loop(self) -> None:
        if self.on_progress is None:
            return
        while not self.halted:
            self.on_progress(self.progress())
            await self.halt.unless_halted(asyncio.sleep(0.5))
        self.on_progress(self.progress())

    def progress(self) -> Progress:
        """The current progress snapshot."""
        return Progress.of(
            self.stats,
            campaign=self.campaign.name,
            remaining_at_start=self._recovery.remaining,
            target_rate_per_s=self.pace.target_rate_per_s,
        )

    # ----------------------------------------------------------- shutdown
    async def _shutdown(self, *, grace_s: float) -> None:
        """Give unsent claims back, let in-flight requests finish (bounded), write every result."""
        for row in await self.claims.unsent():
            self.outcomes.release(row)
        await self.sends.settle(grace_s=grace_s)
        await self.writer.close()

    async def _finish(self) -> RunReport:
        """Record how the run ended (campaign state, run row) and report it."""
        end = self.halt.end or RunEnd(StopReason.ERROR, "")
        counts = await self.db.in_txn(
            run_records.record_end,
            campaign_id=self.campaign.id,
            run_id=self._run_id,
            end=end,
            stats=self.stats,
        )
        return RunReport.of(
            self.stats,
            end,
            campaign=self.campaign.name,
            tier=self.tier,
            recovered_unknown=self._recovery.recovered_unknown,
            counts=counts,
        )


def _refuse_if_stopped(ref: control.CampaignRef) -> None:
    """A cancelled campaign never runs again; a paused one runs once a person resumes it."""
    if ref.state == CampaignState.CANCELLED:
        raise UserError(f"campaign {ref.name!r} is cancelled")
    if ref.state == CampaignState.PAUSED:
        reason = f" ({ref.pause_reason})" if ref.pause_reason else ""
        raise UserError(
            f"campaign {ref.name!r} is paused{reason}: run `wacamp campaigns resume {ref.name}` first"
        )

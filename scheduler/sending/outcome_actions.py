"""What a run does with each row once its fate is known: record it, requeue it, release it, fail it.

What a platform error calls for is not decided here: `campaigns.outcomes` (the one outcome policy)
turns it into one action, and `apply` does that action to the row, one case per kind. Every outcome
goes to the run's one writer task, never straight to the database, and is counted in the run's
`RunStats`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, assert_never

from campaigns import outcome_descriptions, outcomes
from campaigns.core.exceptions import PlatformError
from campaigns.core.settings_sections import LimitsSettings, SenderSettings
from scheduler.sending.ledger import ClaimedRow
from scheduler.sending.ledger_outcomes import Outcome, OutcomeKind
from scheduler.sending.pace import Permit, SenderPace
from scheduler.sending.pairs import PairSpacer
from scheduler.sending.route import SendRoute
from scheduler.sending.run_report import RunStats, StopReason
from scheduler.sending.writer import ContactAction, ResultWriter, ThrottleNote, TierRefund


class OutcomeActions:
    """The outcome of each claimed row of one run, and what a platform error does to the run.

    It shares the run's bookkeeping: `permits` (in-flight rows' send permits, read to tell the
    throttle when a throttled request started) and `claimed_at` (when each claimed-but-unsent row
    of a limited tier was claimed: a release gives its count back). `halt` stops the run.
    """

    def __init__(
        self,
        *,
        campaign_id: int,
        sender: SenderSettings,
        limits: LimitsSettings,
        writer: ResultWriter,
        stats: RunStats,
        pace: SenderPace,
        pairs: PairSpacer,
        permits: Mapping[int, Permit],
        claimed_at: dict[int, datetime],
        halt: Callable[[StopReason, str], None],
        now: Callable[[], datetime],
        route: SendRoute | None = None,
        warmup_s: tuple[float, float] = outcomes.WARMUP_S,
    ) -> None:
        self.campaign_id = campaign_id
        self.sender = sender
        self.limits = limits
        self.writer = writer
        self.stats = stats
        self.pace = pace
        self.pairs = pairs
        self.permits = permits
        self.claimed_at = claimed_at
        self.halt = halt
        self.now = now
        #: The run's send path (Marketing Messages API → Cloud API fallback), if it has one to switch.
        self.route = route
        self.warmup_s = warmup_s

    # ------------------------------------------------------------- actions
    def record(self, row: ClaimedRow, kind: OutcomeKind, **fields: Any) -> None:
        """Hand the row's outcome to the writer (an `unknown` one is counted here)."""
        if kind is OutcomeKind.UNKNOWN:
            self.stats.unknown += 1
        self.writer.put(Outcome(kind=kind, message_id=row.id, at=self.now(), **fields))

    def accept(
        self, row: ClaimedRow, *, wamid: str | None, message_status: str | None, via: str | None = None
    ) -> None:
        """The platform took the message (`via`: the path that took it)."""
        self.stats.accepted += 1
        self.record(row, OutcomeKind.ACCEPTED, wamid=wamid, message_status=message_status, via=via)

    def requeue(
        self, row: ClaimedRow, *, after_s: float, refund: bool, exc: PlatformError | None = None
    ) -> None:
        """Back to the queue, due again in `after_s` (`refund`: this attempt does not count)."""
        self.stats.requeued += 1
        self.record(
            row,
            OutcomeKind.REQUEUE,
            next_attempt_at=self.now() + timedelta(seconds=after_s),
            refund_attempt=refund,
            error_code=None if exc is None else exc.code,
            error_title=None if exc is None else exc.title,
        )

    def release(self, row: ClaimedRow) -> None:
        """Give an unsent claim back; its recipient's tier count too, if this claim counted it."""
        self.stats.released += 1
        self.record(row, OutcomeKind.RELEASE)
        claimed_at = self.claimed_at.pop(row.id, None)
        if claimed_at is not None:
            self.writer.put(
                TierRefund(portfolio=self.sender.portfolio, phone=row.phone, counted_at=claimed_at)
            )

    def fail(self, row: ClaimedRow, exc: PlatformError) -> None:
        """The row failed for good."""
        self.stats.failed += 1
        self.record(row, OutcomeKind.FAILED, error_code=exc.code, error_title=exc.title or str(exc))

    # ------------------------------------------------------ error handling
    def on_error(self, row: ClaimedRow, exc: PlatformError) -> None:
        """Ask the outcome policy what `exc` calls for, then do it."""
        action = outcomes.for_send_error(
            exc,
            limits=self.limits,
            attempt=row.attempts,
            count_pair_strike=lambda: self.pairs.strike(row.phone),
            cloud_fallback=self.route is not None and self.route.can_fall_back,
            warmup_s=self.warmup_s,
        )
        self.apply(row, exc, action)

    def apply(self, row: ClaimedRow, exc: PlatformError, action: outcomes.Action) -> None:
        """Do what the policy decided, to this row (and the sender, contact or run it concerns)."""
        match action:
            case outcomes.SlowSender():
                self._slow_sender(row, exc, action)
            case outcomes.Requeue():
                self._requeue(row, exc, action)
            case outcomes.PauseSender():
                self.pace.pause(action.pause_s)
                self.requeue(row, after_s=action.pause_s, refund=True, exc=exc)
            case outcomes.DeferRecipient():
                self.fail(row, exc)
                until = action.until(self.now())
                self.writer.put(ContactAction.marketing_limited(row.contact_id, until=until))
            case outcomes.SuppressContact():
                self.fail(row, exc)
                self.writer.put(ContactAction.opted_out(row.contact_id, code=exc.code, title=exc.title))
            case outcomes.FailRow():
                self.fail(row, exc)
            case outcomes.StopCampaign():
                self.release(row)
                self.halt(
                    StopReason.CAMPAIGN_FATAL,
                    outcome_descriptions.stop_reason(action, code=exc.code, title=exc.title),
                )
            case outcomes.StopSender():
                self.release(row)
                message = f"sender {self.sender.name!r}: ({exc.code}) {exc.title}".strip()
                self.halt(StopReason.SENDER_FATAL, message)
            case outcomes.FallBackToCloud():
                assert self.route is not None, "only a run with a route can fall back"
                self.route.fall_back()
                self.requeue(row, after_s=0.0, refund=True, exc=exc)
            case outcomes.RecordUnknown():
                title = exc.title or str(exc)
                self.record(row, OutcomeKind.UNKNOWN, error_code=exc.code, error_title=title)
            case _:
                assert_never(action)

    def _slow_sender(self, row: ClaimedRow, exc: PlatformError, action: outcomes.SlowSender) -> None:
        """Throttled: the sender slows down once per platform window, the row goes back (attempt refunded)."""
        self.stats.throttled += 1
        permit = self.permits.get(row.id)
        started_at_s = -math.inf if permit is None else permit.start_s
        self.pace.throttled(started_at_s=started_at_s, retry_after_s=action.retry_after_s)
        self.writer.put(
            ThrottleNote(
                sender_name=self.sender.name,
                campaign_id=self.campaign_id,
                code=exc.code,
                retry_after_s=action.retry_after_s,
                at=self.now(),
            )
        )
        self.requeue(row, after_s=action.requeue_after_s, refund=True, exc=exc)

    def _requeue(self, row: ClaimedRow, exc: PlatformError, action: outcomes.Requeue) -> None:
        """Back to the queue; a 131056 also holds the recipient in this engine's pair spacing."""
        if action.hold_recipient:
            self.pairs.hold(row.phone, time.monotonic() + action.after_s)
        self.requeue(row, after_s=action.after_s, refund=action.refund_attempt, exc=exc)

"""What a run does with each row once its fate is known: record it, requeue it, release it, fail it.

A platform error is handled by its class (`_ERROR_HANDLERS`, most specific first); an error no
handler matches fails the row. Every outcome goes to the run's one writer task, never straight to
the database, and is counted in the run's `RunStats`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from campaigns.core.exceptions import (
    CampaignFatalError,
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
)
from campaigns.core.settings import LimitsSettings, SenderSettings
from scheduler.sending import backoff
from scheduler.sending.ledger import ClaimedRow, Outcome, OutcomeKind
from scheduler.sending.pace import Permit, SenderPace
from scheduler.sending.pairs import PairSpacer
from scheduler.sending.run_report import RunStats, StopReason
from scheduler.sending.writer import ContactAction, ResultWriter, ThrottleNote, TierRefund

#: Throttled rows without a Retry-After go back to the queue for this long (the sender slows down anyway).
THROTTLE_REQUEUE_S = 1.0


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

    # ------------------------------------------------------------- actions
    def record(self, row: ClaimedRow, kind: OutcomeKind, **fields: Any) -> None:
        """Hand the row's outcome to the writer (an `unknown` one is counted here)."""
        if kind is OutcomeKind.UNKNOWN:
            self.stats.unknown += 1
        self.writer.put(Outcome(kind=kind, message_id=row.id, at=self.now(), **fields))

    def accept(self, row: ClaimedRow, *, wamid: str | None, message_status: str | None) -> None:
        """The platform took the message."""
        self.stats.accepted += 1
        self.record(row, OutcomeKind.ACCEPTED, wamid=wamid, message_status=message_status)

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
        """Handle a platform error by its class (`_ERROR_HANDLERS`); an unlisted one fails the row."""
        for cls, handler in _ERROR_HANDLERS:
            if isinstance(exc, cls):
                handler(self, row, exc)
                return
        self.fail(row, exc)

    def _on_throttled(self, row: ClaimedRow, exc: PlatformError) -> None:
        retry_after_s = getattr(exc, "retry_after_s", None)
        self.stats.throttled += 1
        permit = self.permits.get(row.id)
        started_at_s = -math.inf if permit is None else permit.start_s
        self.pace.throttled(started_at_s=started_at_s, retry_after_s=retry_after_s)
        self.writer.put(
            ThrottleNote(
                sender_name=self.sender.name,
                campaign_id=self.campaign_id,
                code=exc.code,
                retry_after_s=retry_after_s,
                at=self.now(),
            )
        )
        self.requeue(row, after_s=retry_after_s or THROTTLE_REQUEUE_S, refund=True, exc=exc)

    def _on_pair_rate(self, row: ClaimedRow, exc: PlatformError) -> None:
        wait_s = backoff.pair_rate_delay_s(attempt=self.pairs.strike(row.phone), limits=self.limits)
        if wait_s is None:
            self.fail(row, exc)
            return
        self.pairs.hold(row.phone, time.monotonic() + wait_s)
        self.requeue(row, after_s=wait_s, refund=True, exc=exc)

    def _on_maintenance(self, row: ClaimedRow, exc: PlatformError) -> None:
        wait_s = backoff.maintenance_delay_s(attempt=max(1, row.attempts), limits=self.limits)
        self.pace.pause(wait_s)
        self.requeue(row, after_s=wait_s, refund=True, exc=exc)

    def _on_transient(self, row: ClaimedRow, exc: PlatformError) -> None:
        wait_s = backoff.transient_delay_s(attempt=row.attempts, limits=self.limits)
        if wait_s is None:
            self.fail(row, exc)
            return
        self.requeue(row, after_s=wait_s, refund=False, exc=exc)

    def _on_opted_out(self, row: ClaimedRow, exc: PlatformError) -> None:
        self.fail(row, exc)
        self.writer.put(ContactAction(row.contact_id, suppress_reason=f"({exc.code}) {exc.title}"[:200]))

    def _on_marketing_limit(self, row: ClaimedRow, exc: PlatformError) -> None:
        self.fail(row, exc)
        until = self.now() + timedelta(hours=self.limits.marketing_defer_h)
        self.writer.put(ContactAction(row.contact_id, defer_until=until))

    def _on_campaign_fatal(self, row: ClaimedRow, exc: PlatformError) -> None:
        self.release(row)
        self.halt(StopReason.CAMPAIGN_FATAL, f"({exc.code}) {exc.title}".strip())

    def _on_sender_fatal(self, row: ClaimedRow, exc: PlatformError) -> None:
        self.release(row)
        self.halt(StopReason.SENDER_FATAL, f"sender {self.sender.name!r}: ({exc.code}) {exc.title}".strip())

    def _on_unknown(self, row: ClaimedRow, exc: PlatformError) -> None:
        self.record(row, OutcomeKind.UNKNOWN, error_code=exc.code, error_title=exc.title or str(exc))


Handler = Callable[[OutcomeActions, ClaimedRow, PlatformError], None]

#: Most specific first: the first class that matches handles the error.
_ERROR_HANDLERS: tuple[tuple[type[PlatformError], Handler], ...] = (
    (ThrottledError, OutcomeActions._on_throttled),
    (PairRateLimitedError, OutcomeActions._on_pair_rate),
    (MaintenanceError, OutcomeActions._on_maintenance),
    (TransientError, OutcomeActions._on_transient),
    (OptedOutError, OutcomeActions._on_opted_out),
    (MarketingLimitError, OutcomeActions._on_marketing_limit),
    (RecipientError, OutcomeActions.fail),
    (CampaignFatalError, OutcomeActions._on_campaign_fatal),
    (SenderFatalError, OutcomeActions._on_sender_fatal),
    (OutcomeUnknownError, OutcomeActions._on_unknown),
)

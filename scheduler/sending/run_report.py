"""How a run ends and is told: the stop reason and its exit code, the counters, progress and the report."""

from __future__ import annotations

import enum
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from campaigns.core.exit_codes import ExitCode
from scheduler.sending.budget import TierChoice


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
    DATABASE = "database unavailable"
    ERROR = "error"


#: OK completed, LATER (75) stopped early but resumable, FAILED (1) stopped by an error.
EXIT_CODES: dict[StopReason, ExitCode] = {
    StopReason.COMPLETED: ExitCode.OK,
    StopReason.BUDGET: ExitCode.LATER,
    StopReason.WAITING: ExitCode.LATER,
    StopReason.PAUSED: ExitCode.LATER,
    StopReason.SIGNAL: ExitCode.LATER,
    StopReason.DATABASE: ExitCode.LATER,
    StopReason.CANCELLED: ExitCode.FAILED,
    StopReason.CAMPAIGN_FATAL: ExitCode.FAILED,
    StopReason.SENDER_FATAL: ExitCode.FAILED,
    StopReason.ERROR: ExitCode.FAILED,
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

    @property
    def done(self) -> int:
        """Rows with an outcome of their own: accepted, failed or unknown."""
        return self.accepted + self.failed + self.unknown

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_s

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

    @classmethod
    def of(
        cls, stats: RunStats, *, campaign: str, remaining_at_start: int, target_rate_per_s: float
    ) -> Progress:
        """The snapshot of a run's counters now."""
        return cls(
            campaign=campaign,
            accepted=stats.accepted,
            failed=stats.failed,
            unknown=stats.unknown,
            deferred=stats.requeued,
            remaining=max(0, remaining_at_start - stats.done),
            rate_per_s=stats.recent_rate_per_s(time.time()),
            target_rate_per_s=target_rate_per_s,
            elapsed_s=stats.elapsed_s,
        )

    @property
    def eta_s(self) -> float | None:
        rate = self.rate_per_s or self.target_rate_per_s
        return self.remaining / rate if rate > 0 else None


@dataclass(frozen=True)
class RunEnd:
    """Why a run stopped, in words, and when it may go on (`resume_after`, for waiting campaigns)."""

    reason: StopReason
    message: str
    resume_after: datetime | None = None


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

    @classmethod
    def of(
        cls,
        stats: RunStats,
        end: RunEnd,
        *,
        campaign: str,
        tier: TierChoice | None,
        recovered_unknown: int,
        counts: dict[str, int],
    ) -> RunReport:
        """The report of a run that ended as `end` with these counters."""
        return cls(
            campaign=campaign,
            reason=end.reason,
            message=end.message,
            tier=tier,
            accepted=stats.accepted,
            failed=stats.failed,
            unknown=stats.unknown,
            requeued=stats.requeued,
            throttled=stats.throttled,
            busiest_second=stats.busiest_second,
            elapsed_s=stats.elapsed_s,
            recovered_unknown=recovered_unknown,
            resume_after=end.resume_after,
            counts=counts,
        )

    @property
    def exit_code(self) -> ExitCode:
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


def describe_tier(tier: TierChoice) -> str:
    """The line announcing the messaging tier a run uses and where it came from."""
    size = "unlimited" if tier.limit is None else f"{tier.limit:,} unique recipients per window"
    if tier.source.startswith("fallback"):
        return f"messaging tier {tier.name} ({size}): {tier.source}"
    return f"messaging tier {tier.name} ({size}, from the {tier.source})"


def describe_recovery(recovered: int, *, campaign: str) -> str:
    """The line announcing rows a previous run left in flight, now `unknown`, and what settles them."""
    return (
        f"{recovered} rows were in flight when a previous run stopped: they are `unknown` "
        f"now (status webhooks settle them; `wacamp campaigns resolve {campaign} --resend-unknown` "
        "resends the rest)"
    )

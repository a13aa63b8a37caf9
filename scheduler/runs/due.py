"""Run every campaign that is due, oldest first, until nothing is due or a deadline comes.

Which campaigns are due is `scheduler.runs.due_campaigns`'; the schedule rules applied before and after
each pass (deadline expiry, campaign window, recipients' own windows, the pass's deadline) are
`scheduler.runs.pass_rules`'; the pass itself is the dispatcher's (`Runner`). Here: lanes, passes side
by side, the run's summary and exit code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Connection, Engine

from campaigns import control
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import DatabaseUnavailableError
from campaigns.core.exit_codes import ExitCode
from campaigns.core.settings import Settings
from campaigns.rollout.review import GUARDRAIL_PREFIX, Reviewer
from campaigns.templates.drift import category_drift
from scheduler.runs.due_campaigns import DueCampaign, count_unfinished, find_due
from scheduler.runs.pass_rules import Planner, after_pass, prepare_pass

log = logging.getLogger(__name__)


#: A run gives one campaign at most this many passes (a window that opens and closes, a budget
#: that frees up); more means something keeps handing it back at once, and it waits for the next run.
MAX_PASSES_PER_RUN = 50

WallClock = Callable[[], datetime]


@dataclass(frozen=True)
class PassOutcome:
    """What the dispatcher said about one pass: a short outcome word and what it sent."""

    outcome: str
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    message: str = ""
    error: bool = False
    sender: str = ""


class Runner(Protocol):
    """One dispatcher pass over a campaign: send until done, stopped, or `deadline` (then resumable).

    Raises (or returns ``error=True``) only when this campaign failed in this run; the run goes on
    with the others.
    """

    async def __call__(
        self, campaign_id: int, *, stop_event: asyncio.Event, deadline: datetime | None
    ) -> PassOutcome:
        """Run one pass."""
        ...


LaneOf = Callable[["DueCampaign"], str]


class PassGate(Protocol):
    """Who may send for a sender now (`scheduler.sending.leases.SenderLeases`: one worker per sender).

    `hold` yields the pass's stop event (set when `stop_event` is, or when the sender must stop), or
    None when this process may not send for `sender` now (the pass is then skipped as `sender busy`).
    """

    def hold(
        self, sender: str, stop_event: asyncio.Event
    ) -> AbstractAsyncContextManager[asyncio.Event | None]:
        """Hold `sender` for one pass."""
        ...


#: The outcome of a pass the gate declined: another worker sends for that sender.
SENDER_BUSY = "sender busy"
#: The outcome of a pass that gave up on the database: the run starts no other pass and ends 75.
DATABASE_UNAVAILABLE = "database unavailable"


@dataclass(frozen=True)
class PassResult:
    """What one pass over one campaign did."""

    campaign_id: int
    name: str
    outcome: str
    error: str | None = None
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    sender: str = ""


@dataclass
class DueSummary:
    """The whole run: every pass, whether the deadline stopped it, and what is left for later."""

    passes: list[PassResult] = field(default_factory=list)
    stopped_by: str | None = None  # "deadline" | "signal" | "database" | None
    remaining: int = 0
    #: One line per campaign run whose template changed category since it was created (category drift).
    warnings: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for p in self.passes if p.error is not None)

    @property
    def guardrail_pauses(self) -> list[PassResult]:
        """The passes whose rollout review paused their campaign (a guardrail crossed)."""
        return [p for p in self.passes if p.outcome.startswith(GUARDRAIL_PREFIX)]

    def totals(self) -> dict[str, int]:
        """Accepted, failed and unknown over every pass, and the number of campaigns touched."""
        return {
            "campaigns": len({p.campaign_id for p in self.passes}),
            "passes": len(self.passes),
            "accepted": sum(p.accepted for p in self.passes),
            "failed": sum(p.failed for p in self.passes),
            "unknown": sum(p.unknown for p in self.passes),
            "errors": self.errors,
        }

    def as_dict(self) -> dict[str, object]:
        """The summary as JSON-ready data (the one line logged at the end of each run)."""
        return {
            "outcome": self.outcome,
            "exit_code": self.exit_code(),
            "stopped_by": self.stopped_by,
            "remaining_campaigns": self.remaining,
            **self.totals(),
            "paused_by_guardrail": [f"{p.name}: {p.outcome}" for p in self.guardrail_pauses],
            "warnings": self.warnings,
            "runs": [
                {"campaign": p.name, "outcome": p.outcome, "accepted": p.accepted, "error": p.error}
                for p in self.passes
            ],
        }

    @property
    def outcome(self) -> str:
        """``error`` if any campaign failed, ``pending`` if work remains for a later run, else ``done``."""
        if self.errors:
            return "error"
        return "pending" if self.remaining or self.stopped_by else "done"

    def exit_code(self) -> ExitCode:
        """FAILED (1) when a campaign failed, LATER (75) when work remains for a later run, else OK (0)."""
        return {"error": ExitCode.FAILED, "pending": ExitCode.LATER, "done": ExitCode.OK}[self.outcome]


def by_sender(campaign: DueCampaign) -> str:
    """One lane per sender: senders send side by side, each at its own rate."""
    return campaign.sender


def lanes_for(engine: Engine, settings: Settings) -> LaneOf:
    """Lanes for a database: one per sender on SQLite and on PostgreSQL.

    The tier budget's check-and-count is atomic on both: SQLite's claims are BEGIN IMMEDIATE write
    transactions, one at a time; PostgreSQL's budgeted claims take the portfolio's advisory lock
    (`scheduler.sending.leases.lock_portfolio`), so the senders of one portfolio may claim side by side.
    """
    del engine, settings
    return by_sender


def _drift_warnings(conn: Connection, campaign_ids: set[int]) -> list[str]:
    """`campaign: warning` for each campaign run whose template's category drifted."""
    warnings = []
    for campaign_id in sorted(campaign_ids):
        campaign = control.find_campaign(conn, campaign_id)
        if (drift := category_drift(conn, campaign)) is not None:
            warnings.append(f"{campaign.name}: {drift.warning}")
    return warnings


async def run_due(
    engine: Engine,
    *,
    runner: Runner,
    stop_event: asyncio.Event,
    until: datetime | None = None,
    clock: WallClock = utcnow,
    planner: Planner | None = None,
    lane_of: LaneOf = by_sender,
    gate: PassGate | None = None,
    reviewer: Reviewer | None = None,
) -> DueSummary:
    """Give every due campaign passes, oldest first, until none is due, `until`, or `stop_event`.

    Lanes work side by side: at most one campaign per lane at a time, the campaigns of one lane one
    after another, the one due the longest first. A lane is a sender by default (each sender has its
    own limiter); see `lanes_for`. The caller holds the send lock (`scheduler.sending.locks.exclusive_lock`).
    A campaign whose pass fails is logged, counted as an error and left alone for the rest of this
    run; the others go on. With a `gate` (scale-out), a pass runs only while the gate holds its sender;
    a campaign whose sender the gate declines is left for the next run.
    """
    summary = DueSummary()
    passes: Counter[int] = Counter()
    lanes: dict[asyncio.Task[PassResult], DueCampaign] = {}
    context = _PassContext(
        engine=engine,
        runner=runner,
        stop_event=stop_event,
        until=until,
        clock=clock,
        planner=planner,
        gate=gate,
        reviewer=reviewer,
    )
    while True:
        summary.stopped_by = _stopping(stop_event, until, clock()) or _database_gone(summary)
        if summary.stopped_by is None:
            busy = lanes.values()
            for campaign in _next_candidates(engine, now=clock(), passes=passes, busy=busy, lane_of=lane_of):
                passes[campaign.id] += 1
                lanes[asyncio.create_task(_one_pass(campaign, context), name=f"pass-{campaign.name}")] = (
                    campaign
                )
        if not lanes:
            break
        done, _ = await asyncio.wait(lanes, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            campaign = lanes.pop(task)
            summary.passes.append(task.result())
            if summary.passes[-1].error is not None or summary.passes[-1].outcome == SENDER_BUSY:
                passes[campaign.id] = MAX_PASSES_PER_RUN
    with engine.connect() as conn:
        summary.remaining = count_unfinished(conn, now=clock())
        summary.warnings = _drift_warnings(conn, {p.campaign_id for p in summary.passes})
    return summary


def _database_gone(summary: DueSummary) -> str | None:
    """A pass gave up on the database (it did not answer for outage_wait_s): no new pass (exit 75)."""
    return "database" if any(p.outcome == DATABASE_UNAVAILABLE for p in summary.passes) else None


def _stopping(stop_event: asyncio.Event, until: datetime | None, now: datetime) -> str | None:
    if stop_event.is_set():
        return "signal"
    if until is not None and now >= until:
        return "deadline"
    return None


def _next_candidates(
    engine: Engine, *, now: datetime, passes: Counter[int], busy: Iterable[DueCampaign], lane_of: LaneOf
) -> list[DueCampaign]:
    """The oldest due campaign of each lane that has none running here (and passes left)."""
    busy_ids = {campaign.id for campaign in busy}
    busy_lanes = {lane_of(campaign) for campaign in busy}
    with engine.connect() as conn:
        due = find_due(conn, now=now)
    chosen: list[DueCampaign] = []
    for campaign in due:
        if campaign.id in busy_ids or lane_of(campaign) in busy_lanes:
            continue
        if passes[campaign.id] < MAX_PASSES_PER_RUN:
            chosen.append(campaign)
            busy_lanes.add(lane_of(campaign))
    return chosen


@dataclass(frozen=True)
class _PassContext:
    engine: Engine
    runner: Runner
    stop_event: asyncio.Event
    until: datetime | None
    clock: WallClock
    planner: Planner | None
    gate: PassGate | None = None
    reviewer: Reviewer | None = None


async def _one_pass(campaign: DueCampaign, ctx: _PassContext) -> PassResult:
    """The pass, inside the gate when there is one (its stop event then stops the pass)."""
    if ctx.gate is None:
        return await _gated_pass(campaign, ctx)
    async with ctx.gate.hold(campaign.sender, ctx.stop_event) as pass_stop:
        if pass_stop is None:
            return PassResult(campaign.id, campaign.name, SENDER_BUSY, sender=campaign.sender)
        return await _gated_pass(campaign, dataclasses.replace(ctx, stop_event=pass_stop))


async def _gated_pass(campaign: DueCampaign, ctx: _PassContext) -> PassResult:
    """Schedule rules (in a thread: they may read many rows), then the dispatcher's pass."""
    engine = ctx.engine
    try:
        plan = await asyncio.to_thread(
            prepare_pass,
            engine,
            campaign.id,
            now=ctx.clock(),
            until=ctx.until,
            planner=ctx.planner,
            reviewer=ctx.reviewer,
        )
        if not plan.run:
            return PassResult(campaign.id, campaign.name, plan.outcome, sender=campaign.sender)
        log.info("campaign pass starts", extra={"campaign": campaign.name, "pass_deadline": plan.deadline})
        done = await ctx.runner(campaign.id, stop_event=ctx.stop_event, deadline=plan.deadline)
        await asyncio.to_thread(after_pass, engine, campaign.id, now=ctx.clock())
    except DatabaseUnavailableError as exc:  # not this campaign's failure: the run stops resumably (75)
        log.warning("campaign pass stopped: %s", exc, extra={"campaign": campaign.name})
        return PassResult(campaign.id, campaign.name, DATABASE_UNAVAILABLE, sender=campaign.sender)
    except Exception as exc:
        log.exception("campaign pass failed", extra={"campaign": campaign.name})
        failure = f"{type(exc).__name__}: {exc}"
        return PassResult(campaign.id, campaign.name, "error", error=failure, sender=campaign.sender)
    counts = {"accepted": done.accepted, "failed": done.failed, "unknown": done.unknown}
    log.info("campaign pass ended", extra={"campaign": campaign.name, "outcome": done.outcome, **counts})
    error = (done.message or done.outcome) if done.error else None
    return PassResult(
        campaign.id, campaign.name, done.outcome, error=error, sender=done.sender or campaign.sender, **counts
    )

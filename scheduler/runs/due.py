"""Run every campaign that is due, oldest first, until nothing is due or a deadline comes.

A campaign is due when

- it is ``draft`` or ``planned`` with a ``scheduled_at`` that has passed (a draft is planned first, so
  the list is read when the campaign is due; a campaign without a schedule is run by a person with
  ``campaigns run``, never by ``run-due``);
- it is ``waiting`` (tier budget, send window, a run cut short) and its ``resume_after`` has passed
  or is unset;
- it is ``running`` but nobody runs it: no row of it is in flight under a live lease (a run that was
  killed; the dispatcher turns its stale in-flight rows into ``unknown`` when it starts).

Before each pass the schedule rules are applied here (deadline expiry, campaign window, recipients'
own windows); the pass itself is the dispatcher's (`Runner`). The pass gets a deadline that is the
earliest of the run's own (``--until``), the campaign window's closing, the campaign's deadline and
the next change of a recipient-local window, so the dispatcher never sends outside a window.
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
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns import control
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import UTCDateTime, utcnow
from campaigns.core.exceptions import DatabaseUnavailableError
from campaigns.core.exit_codes import ExitCode
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, CampaignState
from campaigns.core.settings import Settings
from campaigns.rollout.review import GUARDRAIL_PREFIX, Reviewer, Step
from campaigns.schedule import (
    SendWindow,
    apply_recipient_windows,
    campaign_gate,
    expire_past_deadline,
    zone,
)
from campaigns.templates.drift import category_drift
from scheduler.sending import ledger

log = logging.getLogger(__name__)

c = CAMPAIGN.c
m = MESSAGE.c

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


#: Writes a draft campaign's ledger (`campaigns.planning.planner.plan_campaign`) when it comes due.
Planner = Callable[[int], object]


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
class DueCampaign:
    """A campaign `run-due` will give a pass to, and since when it is due (the ordering key)."""

    id: int
    name: str
    state: str
    due_since: datetime
    sender: str = "default"


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


def _live_lease(now: datetime) -> sa.ColumnElement[bool]:
    in_flight = sa.select(m.id).where(
        m.campaign_id == c.id, m.state.in_(ledger.HELD), m.lease_expires_at > now
    )
    return in_flight.exists()


def _scheduled_and_due(now: datetime) -> sa.ColumnElement[bool]:
    not_started = c.state.in_([CampaignState.DRAFT, CampaignState.PLANNED])
    return sa.and_(not_started, c.scheduled_at.is_not(None), c.scheduled_at <= now)


def _due_filter(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        _scheduled_and_due(now),
        sa.and_(c.state == CampaignState.WAITING, sa.or_(c.resume_after.is_(None), c.resume_after <= now)),
        sa.and_(c.state == CampaignState.RUNNING, ~_live_lease(now)),
    )


def find_due(conn: Connection, *, now: datetime) -> list[DueCampaign]:
    """Every due campaign, the one due the longest first (ties by id)."""
    due_since = sa.type_coerce(sa.func.coalesce(c.scheduled_at, c.created_at), UTCDateTime())
    columns = (c.id, c.name, c.state, due_since.label("due_since"), c.sender_name)
    rows = conn.execute(sa.select(*columns).where(_due_filter(now)).order_by(due_since, c.id)).all()
    return [
        DueCampaign(id=r.id, name=r.name, state=r.state, due_since=r.due_since, sender=r.sender_name)
        for r in rows
    ]


def count_unfinished(conn: Connection, *, now: datetime) -> int:
    """Campaigns with work a later run must do: waiting, running, or planned and already due."""
    query = sa.select(sa.func.count()).where(
        sa.or_(
            c.state.in_([CampaignState.WAITING, CampaignState.RUNNING]),
            _scheduled_and_due(now),
        )
    )
    return int(conn.scalar(query) or 0)


#: The states a due campaign is in; run-due leaves alone one that a person paused or cancelled meanwhile.
DUE_STATES = frozenset(
    {CampaignState.DRAFT, CampaignState.PLANNED, CampaignState.WAITING, CampaignState.RUNNING}
)
_WAITING = frozenset({CampaignState.WAITING})


def load_campaign(engine: Engine, campaign_id: int) -> Campaign:
    """The campaign row as a (detached) model."""
    return control.find_campaign(engine, campaign_id)


def _change_state(
    engine: Engine,
    campaign_id: int,
    target: CampaignState,
    *,
    now: datetime,
    only_from: frozenset[CampaignState] = DUE_STATES,
    **values: Any,
) -> None:
    with write_transaction(engine) as conn:
        control.change_state(conn, campaign_id, target, now=now, only_from=only_from, **values)


def _finish_expired(engine: Engine, campaign: Campaign, *, now: datetime) -> None:
    """The deadline passed: planned rows are skipped; the campaign is over once nothing is in flight."""
    assert campaign.id is not None
    expired = expire_past_deadline(engine, campaign.id, now=now)
    with engine.connect() as conn:
        in_flight = conn.scalar(
            sa.select(sa.func.count()).where(m.campaign_id == campaign.id, m.state.in_(ledger.HELD))
        )
    if not in_flight:
        _change_state(engine, campaign.id, CampaignState.COMPLETED, now=now, finished_at=now)
    log.info("campaign deadline passed", extra={"campaign": campaign.name, "expired": expired})


@dataclass(frozen=True)
class PassPlan:
    """Whether to run a pass now and until when (None = no deadline)."""

    run: bool
    deadline: datetime | None = None
    outcome: str = ""


def prepare_pass(
    engine: Engine,
    campaign_id: int,
    *,
    now: datetime,
    until: datetime | None,
    planner: Planner | None = None,
    reviewer: Reviewer | None = None,
) -> PassPlan:
    """Apply deadline, campaign window and recipient windows; say whether and until when to send.

    A draft campaign is planned (its ledger written) here, when it comes due (even if its window is
    closed then: it waits planned, and the list it got is the one of its due time).
    """
    campaign = load_campaign(engine, campaign_id)
    gate = campaign_gate(campaign, now=now)
    if not gate.open_now and gate.until is None:
        _finish_expired(engine, campaign, now=now)
        return PassPlan(run=False, outcome="expired")
    if campaign.state == CampaignState.DRAFT:
        if planner is None:
            raise RuntimeError(f"campaign {campaign.name!r} is a draft and no planner was given")
        planner(campaign_id)
        campaign = load_campaign(engine, campaign_id)
    if not gate.open_now:
        _change_state(engine, campaign_id, CampaignState.WAITING, now=now, resume_after=gate.until)
        log.info("send window closed", extra={"campaign": campaign.name, "opens_at": gate.until})
        return PassPlan(run=False, outcome="window closed")
    if reviewer is not None:  # a staged rollout: a stage under review waits, is released, or pauses
        review = reviewer.before_pass(engine, campaign_id, now=now)
        if review.step is not Step.SEND:
            return PassPlan(run=False, outcome=review.outcome)
        if review.outcome:
            log.info(review.outcome, extra={"campaign": campaign.name})
        if review.replan and planner is not None:  # an A/B test decided: the rest, with the winner
            planner(campaign_id)
    recheck_at = apply_recipient_windows(engine, campaign, now=now)
    return PassPlan(run=True, deadline=_earliest(until, gate.until, recheck_at, campaign.deadline))


def after_pass(engine: Engine, campaign_id: int, *, now: datetime) -> None:
    """A pass stopped because its campaign window closed: wait until the window opens again."""
    campaign = load_campaign(engine, campaign_id)
    window = SendWindow.of(campaign.window_start, campaign.window_end)
    if campaign.state != CampaignState.WAITING or window is None or campaign.recipient_local_time:
        return
    tz = zone(campaign.timezone or "UTC")
    opening = window.next_open(now, tz)
    if opening > now and (campaign.resume_after is None or campaign.resume_after < opening):
        _change_state(
            engine, campaign_id, CampaignState.WAITING, now=now, resume_after=opening, only_from=_WAITING
        )


def _drift_warnings(conn: Connection, campaign_ids: set[int]) -> list[str]:
    """`campaign: warning` for each campaign run whose template's category drifted."""
    warnings = []
    for campaign_id in sorted(campaign_ids):
        campaign = control.find_campaign(conn, campaign_id)
        if (drift := category_drift(conn, campaign)) is not None:
            warnings.append(f"{campaign.name}: {drift.warning}")
    return warnings


def _earliest(*instants: datetime | None) -> datetime | None:
    present = [at for at in instants if at is not None]
    return min(present) if present else None


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

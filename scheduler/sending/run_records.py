"""A run's bookkeeping SQL outside the claim → send loop, each function inside the caller's write transaction.

- At the start: close the runs of this campaign that died (refuse to run beside a live one), give the
  rows dead runs held back (`claimed` to `planned`, `sending` to `unknown`), sweep suppressed and
  deferred contacts (`recover_and_sweep`), then mark the campaign running and open its `CampaignRun`
  row with its lease (`start_run`).
- While it runs: renew the run's lease and those of its held rows, together (`renew_leases`).

Liveness is read from the database only: a run is alive while its `CampaignRun.lease_expires_at`, on
the database's clock, is in the future. Never from a pid (zombies answer, containers reuse pids).
- When nothing is claimable: whether to claim again, wait for rows due soon, or stop (`idle_decision`).
- At the end: the campaign's state and the `CampaignRun` row (`record_end`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns import control
from campaigns.core.exceptions import LockedError
from campaigns.core.models import CAMPAIGN_RUN_TABLE as CAMPAIGN_RUN
from campaigns.core.models import CampaignState
from campaigns.rollout.review import stage_end
from scheduler.sending import ledger
from scheduler.sending.budget import TierBudget
from scheduler.sending.leases import db_now
from scheduler.sending.run_report import RunEnd, RunStats, StopReason

log = logging.getLogger(__name__)

runs = CAMPAIGN_RUN.c

#: Rows due within this many seconds are waited for in the run; later ones end it as `waiting`.
WAIT_IN_RUN_MAX_S = 120.0

#: What `idle_decision` says: None, claim again now; seconds, sleep then claim; a `RunEnd`, stop.
IdleDecision = float | RunEnd | None


class RunLeaseHeld(LockedError):
    """Another run of the campaign holds a live lease: alive, or killed less than a lease ago."""

    def __init__(self, message: str, *, until: datetime, left_s: float) -> None:
        super().__init__(message)
        #: When the lease expires unless its holder renews it (the database's clock).
        self.until = until
        #: Seconds left until then.
        self.left_s = left_s


@dataclass(frozen=True)
class Recovery:
    """What a run found at its start: rows a dead run left in flight (now `unknown`) and rows to send."""

    recovered_unknown: int
    remaining: int


def recover_and_sweep(conn: Connection, *, campaign: control.CampaignRef, now: datetime) -> Recovery:
    """Close crashed runs, take back what dead runs held, sweep suppressed and deferred contacts."""
    dead = close_crashed_runs(conn, campaign=campaign, now=now)
    recovered = ledger.Recovered()
    while True:
        batch = ledger.recover_expired(conn, now=db_now(conn), campaign_id=campaign.id, dead_owners=dead)
        recovered += batch
        if batch.returned + batch.unknown < 5000:
            break
    if recovered.returned:
        log.info("%d claimed rows of a stopped run went back to the queue (never sent)", recovered.returned)
    queue = _sweep_and_count(conn, campaign_id=campaign.id, now=now)
    return Recovery(recovered_unknown=recovered.unknown, remaining=queue.due + queue.later)


def _sweep_and_count(conn: Connection, *, campaign_id: int, now: datetime) -> ledger.QueueState:
    ledger.skip_suppressed(conn, campaign_id=campaign_id, now=now)
    ledger.defer_marketing_limited(conn, campaign_id=campaign_id, now=now)
    return ledger.queue_state(conn, campaign_id=campaign_id, now=now)


def close_crashed_runs(conn: Connection, *, campaign: control.CampaignRef, now: datetime) -> list[str]:
    """Refuse to run beside a live run of this campaign; close the runs whose lease expired.

    Returns the owners of the runs it closed: the rows they still hold are theirs no longer.
    """
    clock = db_now(conn)
    open_runs = conn.execute(
        sa.select(runs.id, runs.worker, runs.lease_expires_at).where(
            runs.campaign_id == campaign.id, runs.finished_at.is_(None)
        )
    ).all()
    live = [r for r in open_runs if r.lease_expires_at is not None and r.lease_expires_at >= clock]
    if live:
        until = live[0].lease_expires_at
        raise RunLeaseHeld(
            f"campaign {campaign.name!r} is being sent by another run ({live[0].worker}, its lease runs "
            f"until {until:%H:%M:%S} UTC): stop it first, or `wacamp campaigns pause {campaign.name}`; "
            "a run that was killed frees it by then",
            until=until,
            left_s=(until - clock).total_seconds(),
        )
    dead = [r for r in open_runs if r not in live]
    if dead:
        conn.execute(
            sa.update(CAMPAIGN_RUN)
            .where(runs.id.in_([r.id for r in dead]))
            .values(finished_at=now, outcome="crashed: its lease expired (the process stopped while sending)")
        )
    return [r.worker for r in dead]


def start_run(conn: Connection, *, campaign_id: int, owner: str, lease_s: float, now: datetime) -> int:
    """Mark the campaign running and open its `CampaignRun` row with its lease; return the row's id."""
    control.change_state(
        conn,
        campaign_id,
        CampaignState.RUNNING,
        now=now,
        started_at=sa.func.coalesce(control.c.started_at, now),
    )
    run_id: int = conn.execute(
        sa.insert(CAMPAIGN_RUN)
        .values(
            campaign_id=campaign_id,
            worker=owner,
            started_at=now,
            lease_expires_at=db_now(conn) + timedelta(seconds=lease_s),
        )
        .returning(CAMPAIGN_RUN.c.id)
    ).scalar_one()
    return run_id


def renew_leases(conn: Connection, *, owner: str, lease_s: float, now: datetime) -> None:
    """Extend the lease of `owner`'s open run and of the rows it holds: `lease_s` from the database's now."""
    del now
    until = db_now(conn) + timedelta(seconds=lease_s)
    conn.execute(
        sa.update(CAMPAIGN_RUN)
        .where(runs.worker == owner, runs.finished_at.is_(None))
        .values(lease_expires_at=until)
    )
    ledger.renew_leases(conn, owner=owner, until=until)


def idle_decision(conn: Connection, *, campaign_id: int, budget: TierBudget, now: datetime) -> IdleDecision:
    """Nothing claimable: None, claim again now; seconds, sleep then claim; a `RunEnd`, stop for it."""
    queue = _sweep_and_count(conn, campaign_id=campaign_id, now=now)
    remaining = budget.remaining(conn, now)
    frees_at = budget.capacity_frees_at(conn, now)
    if queue.due and remaining == 0:
        when = f" until {frees_at:%Y-%m-%d %H:%M} UTC" if frees_at else ""
        message = f"tier {budget.limit} unique recipients per window spent: {queue.due} rows wait{when}"
        return RunEnd(StopReason.BUDGET, message, frees_at)
    if queue.due:
        return None
    if queue.later and queue.next_due_at is not None:
        wait_s = (queue.next_due_at - now).total_seconds()
        if wait_s <= WAIT_IN_RUN_MAX_S:
            return max(0.05, wait_s)
        message = (
            f"{queue.later} rows are deferred: the first is due at {queue.next_due_at:%Y-%m-%d %H:%M} UTC"
        )
        return RunEnd(StopReason.WAITING, message, queue.next_due_at)
    stage_wait = stage_end(conn, campaign_id, now=now)  # a staged rollout: later stages wait for review
    if stage_wait is not None:
        return RunEnd(StopReason.WAITING, stage_wait.message, stage_wait.until)
    if ledger.queue_state(conn, campaign_id=campaign_id, now=now).due:
        return None  # an empty stage was skipped: the next one is released
    return RunEnd(StopReason.COMPLETED, "every row has an outcome")


def record_end(
    conn: Connection, *, campaign_id: int, run_id: int | None, end: RunEnd, stats: RunStats, now: datetime
) -> dict[str, int]:
    """Record how the run ended (the campaign's state, its `CampaignRun` row); return the rows by state."""
    record_campaign_state(conn, campaign_id=campaign_id, end=end, now=now)
    if run_id is not None:
        record_run(conn, run_id=run_id, end=end, stats=stats, now=now)
    return ledger.counts_by_state(conn, campaign_id=campaign_id)


#: The states a run's end may move a campaign from: not paused, not cancelled (resumed meanwhile: planned).
_NOT_STOPPED_BY_OTHERS = frozenset({CampaignState.RUNNING, CampaignState.PLANNED, CampaignState.WAITING})


def record_campaign_state(conn: Connection, *, campaign_id: int, end: RunEnd, now: datetime) -> None:
    """The campaign's state after a run that ended as `end`.

    A campaign paused or cancelled meanwhile (by a person or the platform; the run then ended as
    PAUSED or CANCELLED, or had just ended otherwise) stays as another shell set it.
    """
    reason, movable = end.reason, _NOT_STOPPED_BY_OTHERS
    if reason is StopReason.COMPLETED:
        control.change_state(
            conn, campaign_id, CampaignState.COMPLETED, now=now, finished_at=now, only_from=movable
        )
    elif reason in (StopReason.BUDGET, StopReason.WAITING, StopReason.SIGNAL, StopReason.DATABASE):
        resume_after = end.resume_after or now
        control.change_state(
            conn, campaign_id, CampaignState.WAITING, now=now, resume_after=resume_after, only_from=movable
        )
    elif reason in (StopReason.CAMPAIGN_FATAL, StopReason.SENDER_FATAL, StopReason.ERROR):
        control.change_state(
            conn,
            campaign_id,
            CampaignState.PAUSED,
            now=now,
            pause_reason=end.message[:500],
            only_from=movable,
        )


def record_run(conn: Connection, *, run_id: int, end: RunEnd, stats: RunStats, now: datetime) -> None:
    """Close the run's `CampaignRun` row with its outcome and counters."""
    conn.execute(
        sa.update(CAMPAIGN_RUN)
        .where(CAMPAIGN_RUN.c.id == run_id)
        .values(
            finished_at=now,
            lease_expires_at=None,
            outcome=f"{end.reason.name.lower()}: {end.message}"[:200],
            accepted=stats.accepted,
            failed=stats.failed,
            unknown=stats.unknown,
            throttled=stats.throttled,
            busiest_second=stats.busiest_second,
        )
    )

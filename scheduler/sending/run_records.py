"""A run's bookkeeping SQL outside the claim → send loop, each function inside the caller's write transaction.

- At the start: close the runs of this campaign that died (refuse to run beside a live one), turn rows
  left in flight by dead processes into `unknown`, sweep suppressed and deferred contacts
  (`recover_and_sweep`), then mark the campaign running and open its `CampaignRun` row (`start_run`).
- While it runs: renew the leases of its claimed rows (`renew_leases`).
- When nothing is claimable: whether to claim again, wait for rows due soon, or stop (`idle_decision`).
- At the end: the campaign's state and the `CampaignRun` row (`record_end`).
"""

from __future__ import annotations

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
from scheduler.sending.run_report import RunEnd, RunStats, StopReason

#: Rows due within this many seconds are waited for in the run; later ones end it as `waiting`.
WAIT_IN_RUN_MAX_S = 120.0

#: What `idle_decision` says: None, claim again now; seconds, sleep then claim; a `RunEnd`, stop.
IdleDecision = float | RunEnd | None


@dataclass(frozen=True)
class Recovery:
    """What a run found at its start: rows a dead run left in flight (now `unknown`) and rows to send."""

    recovered_unknown: int
    remaining: int


def recover_and_sweep(conn: Connection, *, campaign: control.CampaignRef, now: datetime) -> Recovery:
    """Close crashed runs, recover dead processes' in-flight rows, sweep suppressed and deferred contacts."""
    close_crashed_runs(conn, campaign=campaign, now=now)
    owners = ledger.stale_owners(conn, campaign_id=campaign.id)
    dead = [owner for owner in owners if not ledger.owner_is_alive(owner)]
    recovered = ledger.recover_in_flight(conn, campaign_id=campaign.id, now=now, dead_owners=dead)
    queue = _sweep_and_count(conn, campaign_id=campaign.id, now=now)
    return Recovery(recovered_unknown=recovered, remaining=queue.due + queue.later)


def _sweep_and_count(conn: Connection, *, campaign_id: int, now: datetime) -> ledger.QueueState:
    ledger.skip_suppressed(conn, campaign_id=campaign_id, now=now)
    ledger.defer_marketing_limited(conn, campaign_id=campaign_id, now=now)
    return ledger.queue_state(conn, campaign_id=campaign_id, now=now)


def close_crashed_runs(conn: Connection, *, campaign: control.CampaignRef, now: datetime) -> None:
    """Refuse to run beside a live run of this campaign on this host; close the runs that died."""
    runs = CAMPAIGN_RUN.c
    open_runs = conn.execute(
        sa.select(runs.id, runs.worker).where(runs.campaign_id == campaign.id, runs.finished_at.is_(None))
    ).all()
    for run_id, worker in open_runs:
        pid = ledger.live_elsewhere_on_this_host(worker)
        if pid is not None:
            raise LockedError(
                f"campaign {campaign.name!r} is being sent by another process (pid {pid}): "
                f"stop it first, or `wacamp campaigns pause {campaign.name}`"
            )
        if not ledger.owner_is_alive(worker):
            conn.execute(
                sa.update(CAMPAIGN_RUN)
                .where(runs.id == run_id)
                .values(finished_at=now, outcome="crashed: the process died while sending")
            )


def start_run(conn: Connection, *, campaign_id: int, owner: str, now: datetime) -> int:
    """Mark the campaign running and open its `CampaignRun` row; return the row's id."""
    control.change_state(
        conn,
        campaign_id,
        CampaignState.RUNNING,
        now=now,
        started_at=sa.func.coalesce(control.c.started_at, now),
    )
    run_id: int = conn.execute(
        sa.insert(CAMPAIGN_RUN)
        .values(campaign_id=campaign_id, worker=owner, started_at=now)
        .returning(CAMPAIGN_RUN.c.id)
    ).scalar_one()
    return run_id


def renew_leases(conn: Connection, *, owner: str, lease_s: float, now: datetime) -> None:
    """Extend the leases of the rows `owner` has claimed to `lease_s` from now."""
    ledger.renew_leases(conn, owner=owner, until=now + timedelta(seconds=lease_s))


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
            outcome=f"{end.reason.name.lower()}: {end.message}"[:200],
            accepted=stats.accepted,
            failed=stats.failed,
            unknown=stats.unknown,
            throttled=stats.throttled,
            busiest_second=stats.busiest_second,
        )
    )

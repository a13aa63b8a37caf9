"""Which campaigns are due, and what the schedule rules do to their ledger before a pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CampaignState, MessageState
from campaigns.schedule import EXPIRED, apply_recipient_windows, expire_past_deadline
from scheduler.runs.due import PassOutcome, run_due
from scheduler.runs.due_campaigns import find_due
from scheduler.runs.pass_rules import after_pass, prepare_pass
from tests.scheduling_seed import MESSAGE, campaign_row, rows_of, seed_campaign

NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # 12:00 in Rome, 06:00 in New York
HOUR = timedelta(hours=1)


def due_names(engine: Engine, now: datetime = NOW) -> list[str]:
    with engine.connect() as conn:
        return [campaign.name for campaign in find_due(conn, now=now)]


def test_a_campaign_scheduled_in_the_past_is_due_and_one_in_the_future_is_not(engine: Engine) -> None:
    seed_campaign(engine, name="past", scheduled_at=NOW - HOUR)
    seed_campaign(engine, name="future", scheduled_at=NOW + HOUR)
    seed_campaign(engine, name="unscheduled")
    assert due_names(engine) == ["past"]


def test_due_campaigns_come_oldest_first(engine: Engine) -> None:
    seed_campaign(engine, name="newer", scheduled_at=NOW - HOUR)
    seed_campaign(engine, name="older", scheduled_at=NOW - 3 * HOUR)
    seed_campaign(engine, name="resumed", state="waiting", resume_after=NOW - HOUR, now=NOW - 2 * HOUR)
    assert due_names(engine) == ["older", "resumed", "newer"]


def test_a_waiting_campaign_is_due_once_its_resume_time_has_passed(engine: Engine) -> None:
    seed_campaign(engine, name="later", state="waiting", resume_after=NOW + HOUR)
    seed_campaign(engine, name="now", state="waiting", resume_after=NOW)
    seed_campaign(engine, name="whenever", state="waiting")
    assert sorted(due_names(engine)) == ["now", "whenever"]


def test_a_running_campaign_is_due_only_when_nobody_holds_a_live_lease_on_it(engine: Engine) -> None:
    alive = seed_campaign(engine, name="alive", phones=["+393471000001"], state="running")
    seed_campaign(engine, name="crashed", phones=["+393471000002"], state="running")
    with engine.begin() as conn:
        conn.execute(
            sa.update(MESSAGE)
            .where(MESSAGE.c.campaign_id == alive)
            .values(state="sending", lease_owner="x", lease_expires_at=NOW + HOUR)
        )
    assert due_names(engine) == ["crashed"]


def test_paused_completed_and_cancelled_campaigns_are_never_due(engine: Engine) -> None:
    for state in ("paused", "completed", "cancelled"):
        seed_campaign(engine, name=state, state=state, scheduled_at=NOW - HOUR)
    assert due_names(engine) == []


def test_a_scheduled_draft_is_due_so_its_list_is_read_when_its_time_comes(engine: Engine) -> None:
    seed_campaign(engine, name="scheduled-draft", state="draft", scheduled_at=NOW - HOUR)
    seed_campaign(engine, name="plain-draft", state="draft")
    assert due_names(engine) == ["scheduled-draft"]


def test_rows_still_planned_at_the_deadline_end_skipped_expired_without_blocking_content(
    engine: Engine,
) -> None:
    campaign_id = seed_campaign(
        engine, name="late", phones=["+393471000001", "+393471000002"], deadline=NOW - HOUR
    )
    with engine.begin() as conn:
        first = min(row.id for row in rows_of(engine, campaign_id))
        conn.execute(
            sa.update(MESSAGE).where(MESSAGE.c.id == first).values(state="accepted", wamid="wamid.1")
        )
    assert expire_past_deadline(engine, campaign_id, now=NOW) == 1
    accepted, expired = rows_of(engine, campaign_id)
    assert (accepted.state, accepted.dedup_hash is not None) == ("accepted", True)
    assert (expired.state, expired.skip_reason, expired.dedup_hash) == ("skipped", EXPIRED, None)


def test_nothing_expires_before_the_deadline(engine: Engine) -> None:
    campaign_id = seed_campaign(engine, name="early", phones=["+393471000001"], deadline=NOW + HOUR)
    assert expire_past_deadline(engine, campaign_id, now=NOW) == 0
    assert rows_of(engine, campaign_id)[0].state == "planned"


def test_recipients_outside_their_own_window_wait_for_it_and_the_others_stay_claimable(
    engine: Engine,
) -> None:
    campaign_id = seed_campaign(
        engine,
        name="local",
        phones=["+393471000001", "+12015550123"],
        window_start="09:00",
        window_end="20:00",
        recipient_local_time=True,
    )
    campaign = _campaign(engine, campaign_id)
    recheck = apply_recipient_windows(engine, campaign, now=NOW)
    rome, new_york = rows_of(engine, campaign_id)
    assert rome.next_attempt_at is None
    assert new_york.next_attempt_at == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)  # 09:00 EDT
    assert recheck == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)


def test_a_retry_time_later_than_the_window_opening_is_kept(engine: Engine) -> None:
    campaign_id = seed_campaign(
        engine,
        name="retry",
        phones=["+12015550123"],
        window_start="09:00",
        window_end="20:00",
        recipient_local_time=True,
    )
    retry_at = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(sa.update(MESSAGE).values(next_attempt_at=retry_at))
    apply_recipient_windows(engine, _campaign(engine, campaign_id), now=NOW, batch_rows=1)
    assert rows_of(engine, campaign_id)[0].next_attempt_at == retry_at


def test_a_campaign_whose_window_is_closed_waits_until_it_opens_in_its_own_zone(engine: Engine) -> None:
    campaign_id = seed_campaign(
        engine, name="evening", timezone="Europe/Rome", window_start="20:00", window_end="22:00"
    )
    plan = prepare_pass(engine, campaign_id, now=NOW, until=None)
    row = campaign_row(engine, campaign_id)
    assert not plan.run
    assert (row.state, row.resume_after) == ("waiting", datetime(2026, 6, 1, 18, 0, tzinfo=UTC))


def test_a_pass_ends_when_the_campaign_window_closes_or_the_run_must_stop_whichever_first(
    engine: Engine,
) -> None:
    campaign_id = seed_campaign(
        engine, name="day", timezone="Europe/Rome", window_start="09:00", window_end="13:00"
    )
    window_close = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    assert prepare_pass(engine, campaign_id, now=NOW, until=None).deadline == window_close
    assert prepare_pass(engine, campaign_id, now=NOW, until=NOW + HOUR / 2).deadline == NOW + HOUR / 2


def test_a_campaign_past_its_deadline_is_completed_without_a_pass(engine: Engine) -> None:
    campaign_id = seed_campaign(engine, name="over", phones=["+393471000001"], deadline=NOW - HOUR)
    assert not prepare_pass(engine, campaign_id, now=NOW, until=None).run
    assert campaign_row(engine, campaign_id).state == CampaignState.COMPLETED
    assert rows_of(engine, campaign_id)[0].state == MessageState.SKIPPED


class CompletingRunner:
    """Stands in for the dispatcher at its boundary: records the passes and completes each campaign."""

    def __init__(self, engine: Engine, *, fail: set[int] | None = None) -> None:
        self.engine = engine
        self.fail = fail or set()
        self.calls: list[tuple[int, datetime | None]] = []

    async def __call__(
        self, campaign_id: int, *, stop_event: asyncio.Event, deadline: datetime | None
    ) -> PassOutcome:
        self.calls.append((campaign_id, deadline))
        if campaign_id in self.fail:
            raise RuntimeError("boom")
        with self.engine.begin() as conn:
            conn.execute(sa.update(CAMPAIGN).where(CAMPAIGN.c.id == campaign_id).values(state="completed"))
        return PassOutcome("completed")


async def test_run_due_gives_each_due_campaign_a_pass_and_one_failure_does_not_stop_the_others(
    engine: Engine,
) -> None:
    bad = seed_campaign(engine, name="bad", scheduled_at=NOW - 2 * HOUR)
    good = seed_campaign(engine, name="good", scheduled_at=NOW - HOUR)
    seed_campaign(engine, name="future", scheduled_at=NOW + HOUR)
    runner = CompletingRunner(engine, fail={bad})
    summary = await run_due(engine, runner=runner, stop_event=asyncio.Event(), clock=lambda: NOW)
    assert [call[0] for call in runner.calls] == [bad, good]
    assert [(p.name, p.outcome) for p in summary.passes] == [("bad", "error"), ("good", "completed")]
    assert summary.exit_code() == 1


async def test_run_due_stops_at_its_deadline_without_starting_a_pass(engine: Engine) -> None:
    seed_campaign(engine, name="due", scheduled_at=NOW - HOUR)
    runner = CompletingRunner(engine)
    summary = await run_due(engine, runner=runner, stop_event=asyncio.Event(), until=NOW, clock=lambda: NOW)
    assert runner.calls == []
    assert (summary.stopped_by, summary.exit_code()) == ("deadline", 75)


async def test_run_due_with_nothing_due_exits_zero_even_with_campaigns_scheduled_later(
    engine: Engine,
) -> None:
    seed_campaign(engine, name="future", scheduled_at=NOW + HOUR)
    summary = await run_due(
        engine, runner=CompletingRunner(engine), stop_event=asyncio.Event(), clock=lambda: NOW
    )
    assert (summary.passes, summary.exit_code()) == ([], 0)


def _campaign(engine: Engine, campaign_id: int):  # type: ignore[no-untyped-def]
    from scheduler.runs.pass_rules import load_campaign

    return load_campaign(engine, campaign_id)


def test_on_the_rome_dst_night_an_overnight_window_pass_ends_at_six_local_time(engine: Engine) -> None:
    campaign_id = seed_campaign(
        engine, name="night", timezone="Europe/Rome", window_start="22:00", window_end="06:00"
    )
    plan = prepare_pass(engine, campaign_id, now=datetime(2026, 3, 28, 21, 30, tzinfo=UTC), until=None)
    assert plan.run
    assert plan.deadline == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)  # 06:00 CEST, 6.5 h later, not 7.5


def test_after_the_window_closes_the_campaign_waits_for_the_next_local_opening(engine: Engine) -> None:
    campaign_id = seed_campaign(
        engine,
        name="night",
        state="waiting",
        timezone="Europe/Rome",
        window_start="22:00",
        window_end="06:00",
    )
    after_pass(engine, campaign_id, now=datetime(2026, 3, 29, 4, 0, 5, tzinfo=UTC))
    assert campaign_row(engine, campaign_id).resume_after == datetime(
        2026, 3, 29, 20, 0, tzinfo=UTC
    )  # 22:00 CEST


def test_a_due_draft_whose_window_is_closed_is_planned_first_then_waits(engine: Engine) -> None:
    campaign_id = seed_campaign(
        engine, name="draft", state="draft", scheduled_at=NOW - HOUR, window_start="20:00", window_end="22:00"
    )
    planned: list[int] = []

    def planner(cid: int) -> None:
        planned.append(cid)
        with engine.begin() as conn:
            conn.execute(sa.update(CAMPAIGN).where(CAMPAIGN.c.id == cid).values(state="planned"))

    plan = prepare_pass(engine, campaign_id, now=NOW, until=None, planner=planner)
    assert (plan.run, planned) == (False, [campaign_id])
    row = campaign_row(engine, campaign_id)
    assert (row.state, row.resume_after) == ("waiting", datetime(2026, 6, 1, 20, 0, tzinfo=UTC))

"""Campaign control on a real database (SQLite, and PostgreSQL when WACAMP_TEST_POSTGRES_URL is set).

Every state change goes through `campaigns.control.change_state`: the table is enforced by the write
itself, so pause, resume, cancel and a run's start refuse what it refuses, even when the caller read a
stale state, and a run's end never overwrites a pause or cancel made meanwhile.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.control import ALLOWED, IllegalTransition, change_state, find_campaign, ledger_counts
from campaigns.core.db import write_transaction
from campaigns.core.exceptions import NotFoundError
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import CampaignState
from campaigns.definitions import cancel_campaign
from scheduler.sending.run_records import record_campaign_state, start_run
from scheduler.sending.run_report import RunEnd, StopReason
from tests.scheduling_seed import seed_campaign

S = CampaignState
NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
ALL_PAIRS = list(itertools.product(S, S))


def state_of(engine: Engine, campaign_id: int) -> str:
    return find_campaign(engine, campaign_id).state


def set_state_directly(engine: Engine, campaign_id: int, state: CampaignState) -> None:
    """Put a campaign in a state by plain SQL (a test's setup, not a transition)."""
    with engine.begin() as conn:
        conn.execute(sa.update(CAMPAIGN).where(CAMPAIGN.c.id == campaign_id).values(state=state.value))


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, CampaignState]]:
    """Every call of the real `change_state`, recorded (campaign id, target) and passed on."""
    calls: list[tuple[int, CampaignState]] = []
    real = control.change_state

    def recording(conn: sa.Connection, campaign_id: int, target: CampaignState, **kwargs: object) -> bool:
        calls.append((campaign_id, target))
        return real(conn, campaign_id, target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(control, "change_state", recording)
    monkeypatch.setattr("campaigns.definitions.change_state", recording)
    return calls


def test_every_pair_is_written_or_refused_as_the_table_says(engine: Engine) -> None:
    campaign_id = seed_campaign(engine, name="spring")
    refused = []
    for current, target in ALL_PAIRS:
        set_state_directly(engine, campaign_id, current)
        try:
            with write_transaction(engine) as conn:
                change_state(conn, campaign_id, target, now=NOW)
        except IllegalTransition as error:
            refused.append((current, target))
            assert str(error) == f"campaign 'spring' is {current}: it cannot become {target}"
            assert state_of(engine, campaign_id) == current
        else:
            assert state_of(engine, campaign_id) == target
    assert set(refused) == {(a, b) for a, b in ALL_PAIRS if b not in ALLOWED[a]}


def test_only_from_leaves_a_campaign_in_another_state_as_it_is(engine: Engine) -> None:
    campaign_id = seed_campaign(engine, name="spring", state="paused", pause_reason="wrong coupon")
    with write_transaction(engine) as conn:
        changed = change_state(conn, campaign_id, S.COMPLETED, now=NOW, only_from={S.RUNNING})
    campaign = find_campaign(engine, campaign_id)
    assert (changed, campaign.state, campaign.pause_reason) == (False, "paused", "wrong coupon")


def test_a_change_sets_or_clears_pause_reason_and_resume_after_and_writes_other_columns(
    engine: Engine,
) -> None:
    campaign_id = seed_campaign(engine, name="spring", state="running", pause_reason="old")
    with write_transaction(engine) as conn:
        change_state(conn, campaign_id, S.WAITING, now=NOW, resume_after=NOW, finished_at=NOW)
    campaign = find_campaign(engine, campaign_id)
    assert (campaign.state, campaign.pause_reason, campaign.resume_after) == ("waiting", None, NOW)
    assert (campaign.finished_at, campaign.updated_at) == (NOW, NOW)


def test_pause_resume_and_cancel_go_through_change_state(
    engine: Engine, spy: list[tuple[int, CampaignState]]
) -> None:
    campaign_id = seed_campaign(engine, name="spring", phones=["+393471000001", "+393471000002"])
    assert control.pause(engine, "spring", reason="wrong coupon").state == "paused"
    assert control.pause(engine, "spring").pause_reason == "wrong coupon"  # already paused: unchanged
    assert control.resume(engine, str(campaign_id)).state == "planned"
    assert cancel_campaign(engine, find_campaign(engine, "spring")) == 2
    assert spy == [(campaign_id, S.PAUSED), (campaign_id, S.PLANNED), (campaign_id, S.CANCELLED)]
    assert state_of(engine, campaign_id) == "cancelled"
    assert ledger_counts(engine, campaign_id).skipped_by_reason == {"cancelled": 2}


def test_resuming_a_campaign_paused_before_it_was_planned_returns_it_to_draft(engine: Engine) -> None:
    seed_campaign(engine, name="spring", state=S.DRAFT.value, phones=[])
    control.pause(engine, "spring")
    # planned with no ledger would "complete" at the next run having sent nothing: back to draft instead
    assert control.resume(engine, "spring").state == "draft"


@pytest.mark.parametrize("state", [S.COMPLETED, S.CANCELLED])
def test_pause_refuses_a_finished_campaign(engine: Engine, state: CampaignState) -> None:
    seed_campaign(engine, name="spring", state=state.value)
    with pytest.raises(IllegalTransition, match=f"is {state}: only a planned, running or waiting one pauses"):
        control.pause(engine, "spring")


@pytest.mark.parametrize("state", [S.DRAFT, S.PLANNED, S.RUNNING, S.COMPLETED, S.CANCELLED])
def test_resume_refuses_a_campaign_that_is_not_paused_or_waiting(
    engine: Engine, state: CampaignState
) -> None:
    seed_campaign(engine, name="spring", state=state.value)
    with pytest.raises(IllegalTransition, match=f"is {state}, not paused or waiting: nothing to resume"):
        control.resume(engine, "spring")
    assert find_campaign(engine, "spring").state == state


def test_cancel_checks_the_stored_state_not_the_caller_s_stale_copy(engine: Engine) -> None:
    campaign_id = seed_campaign(engine, name="spring", phones=["+393471000001"])
    stale = find_campaign(engine, "spring")
    set_state_directly(engine, campaign_id, S.COMPLETED)
    with pytest.raises(IllegalTransition, match="campaign 'spring' is already completed"):
        cancel_campaign(engine, stale)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(MESSAGE.c.state).where(MESSAGE.c.campaign_id == campaign_id)).all()
    assert [state for (state,) in rows] == ["planned"]  # the refusal rolled the whole cancel back


def test_a_campaign_is_found_by_name_or_by_id_as_int_or_digits(engine: Engine) -> None:
    campaign_id = seed_campaign(engine, name="spring")
    assert find_campaign(engine, "spring").id == campaign_id
    assert find_campaign(engine, campaign_id).name == "spring"
    with engine.connect() as conn:
        assert find_campaign(conn, f" {campaign_id} ").name == "spring"
    with pytest.raises(NotFoundError, match="no campaign named 'autumn'"):
        find_campaign(engine, "autumn")
    with pytest.raises(NotFoundError, match=f"no campaign with id {campaign_id + 1}"):
        find_campaign(engine, campaign_id + 1)


def test_change_state_of_a_missing_campaign_is_not_found(engine: Engine) -> None:
    with write_transaction(engine) as conn, pytest.raises(NotFoundError):
        change_state(conn, 12345, S.PAUSED, now=NOW)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [(StopReason.COMPLETED, "completed"), (StopReason.BUDGET, "waiting"), (StopReason.ERROR, "paused")],
)
def test_a_run_s_end_moves_a_running_campaign(engine: Engine, reason: StopReason, expected: str) -> None:
    campaign_id = seed_campaign(engine, name="spring", state="running")
    with write_transaction(engine) as conn:
        record_campaign_state(conn, campaign_id=campaign_id, end=RunEnd(reason, "why"), now=NOW)
    assert state_of(engine, campaign_id) == expected


@pytest.mark.parametrize("reason", [StopReason.COMPLETED, StopReason.BUDGET, StopReason.ERROR])
@pytest.mark.parametrize("meanwhile", [S.PAUSED, S.CANCELLED])
def test_a_run_s_end_leaves_a_campaign_paused_or_cancelled_meanwhile_as_it_is(
    engine: Engine, reason: StopReason, meanwhile: CampaignState
) -> None:
    campaign_id = seed_campaign(engine, name="spring", state="running")
    with write_transaction(engine) as conn:
        control.change_state(conn, campaign_id, meanwhile, now=NOW, pause_reason="wrong coupon")
        record_campaign_state(conn, campaign_id=campaign_id, end=RunEnd(reason, "why"), now=NOW)
    campaign = find_campaign(engine, campaign_id)
    assert (campaign.state, campaign.pause_reason) == (meanwhile, "wrong coupon")


def test_a_run_cannot_start_on_a_campaign_paused_after_it_was_read(engine: Engine) -> None:
    campaign_id = seed_campaign(engine, name="spring", state="paused")
    with write_transaction(engine) as conn, pytest.raises(IllegalTransition, match="cannot become running"):
        start_run(conn, campaign_id=campaign_id, owner="host:1", lease_s=60, now=NOW)
    assert state_of(engine, campaign_id) == "paused"

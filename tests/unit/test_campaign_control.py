"""The campaign state transition table: every (from, to) pair, allowed or refused, checked one by one."""

from __future__ import annotations

import itertools

import pytest

from campaigns.control import ALLOWED, IllegalTransition, may_move, sources_of
from campaigns.core.exceptions import UserError
from campaigns.core.models import CampaignState

S = CampaignState

#: Written out by hand from what the code does (see the comment above `ALLOWED`), not derived from it.
EXPECTED_LEGAL = {
    (S.DRAFT, S.PLANNED),  # the planner wrote the ledger
    (S.DRAFT, S.PAUSED),  # pause
    (S.DRAFT, S.CANCELLED),  # cancel
    (S.DRAFT, S.COMPLETED),  # run-due: the deadline passed before it was planned
    (S.PLANNED, S.RUNNING),  # a run starts
    (S.PLANNED, S.WAITING),  # run-due: the send window is closed
    (S.PLANNED, S.PAUSED),  # pause, or a template paused by the platform
    (S.PLANNED, S.CANCELLED),
    (S.PLANNED, S.COMPLETED),  # run-due: the deadline passed
    (S.RUNNING, S.RUNNING),  # a run starts again after a crashed one
    (S.RUNNING, S.WAITING),  # a run cut short: tier budget, signal, pass deadline
    (S.RUNNING, S.PAUSED),  # pause, the platform, a campaign or sender error
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.COMPLETED),  # every row has an outcome
    (S.WAITING, S.PLANNED),  # resume
    (S.WAITING, S.RUNNING),
    (S.WAITING, S.WAITING),  # the window closed again; resume_after moves
    (S.WAITING, S.PAUSED),
    (S.WAITING, S.CANCELLED),
    (S.WAITING, S.COMPLETED),
    (S.PAUSED, S.PLANNED),  # resume
    (S.PAUSED, S.DRAFT),  # resume of a campaign paused before it was planned
    (S.PAUSED, S.CANCELLED),
    (S.COMPLETED, S.PLANNED),  # resolve --resend-unknown
    (S.COMPLETED, S.RUNNING),  # `campaigns run` on a finished campaign
}

ALL_PAIRS = list(itertools.product(S, S))


def test_the_table_has_an_entry_for_every_state() -> None:
    assert set(ALLOWED) == set(S)


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_each_pair_is_allowed_exactly_when_the_code_makes_that_move(
    current: CampaignState, target: CampaignState
) -> None:
    assert may_move(current, target) is ((current, target) in EXPECTED_LEGAL)


def test_the_state_is_accepted_as_the_text_stored_in_the_database() -> None:
    assert may_move("paused", S.PLANNED)
    assert not may_move("paused", S.RUNNING)


def test_a_cancelled_campaign_never_moves_again() -> None:
    assert all(not may_move(S.CANCELLED, target) for target in S)


def test_only_a_resumed_never_planned_campaign_moves_back_to_draft() -> None:
    assert sources_of(S.DRAFT) == frozenset({S.PAUSED})


@pytest.mark.parametrize("target", list(S))
def test_sources_of_a_state_are_the_states_the_table_lets_move_there(target: CampaignState) -> None:
    assert sources_of(target) == {current for current, to in EXPECTED_LEGAL if to == target}


def test_a_refused_move_says_which_campaign_where_it_is_and_where_it_was_asked_to_go() -> None:
    error = IllegalTransition(name="spring", current="cancelled", target=S.RUNNING)
    assert isinstance(error, UserError) and error.exit_code == 1
    assert str(error) == "campaign 'spring' is cancelled: it cannot become running"


def test_a_refused_move_may_carry_the_command_s_own_wording() -> None:
    error = IllegalTransition(
        name="spring", current="completed", target=S.CANCELLED, refusal="campaign {name!r} is already {state}"
    )
    assert str(error) == "campaign 'spring' is already completed"

"""Rollout stages (spec, deterministic spread-out membership) and the guardrails' judgement (pure)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from campaigns.core.settings_loading import load_settings
from campaigns.rollout.guardrails import StageFacts, Verdict, judge
from campaigns.rollout.stages import Rollout, RolloutError, new_rollout, parse_guardrails, parse_stages

SETTINGS, _ = load_settings(environ={})


def test_stages_are_cumulative_shares_or_counts_of_the_audience() -> None:
    assert parse_stages("2%,10%,100%", audience=1000) == (0.02, 0.1, 1.0)
    assert parse_stages("100, 500, all", audience=1000) == (0.1, 0.5, 1.0)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("100%", "two stages or more"),
        ("10%,5%,100%", "further than the one before"),
        ("2%,10%", "last stage must be 100%"),
        ("2%,ten,100%", "'ten' is neither a percentage nor a count"),
        ("0%,100%", "more than zero"),
        ("2%,,100%", "two stages or more"),
    ],
)
def test_a_bad_stage_spec_is_refused_naming_the_problem(text: str, says: str) -> None:
    with pytest.raises(RolloutError, match=says):
        parse_stages(text, audience=100)


def test_guardrail_overrides_name_a_known_guardrail_and_a_number() -> None:
    assert parse_guardrails(["max_optout_rate=0.05"]) == {"max_optout_rate": 0.05}
    with pytest.raises(RolloutError, match="NAME one of"):
        parse_guardrails(["max_bananas=1"])
    with pytest.raises(RolloutError, match="not a number"):
        parse_guardrails(["max_optout_rate=lots"])


def test_membership_is_a_stable_function_of_seed_and_contact_spread_over_the_audience() -> None:
    rollout = new_rollout("2%,10%,100%", audience=20000, wait_s=60, guardrails={}, seed="abc")
    stages = [rollout.stage_of(contact_id) for contact_id in range(1, 20001)]
    again = Rollout.of(rollout.as_json())
    assert stages == [again.stage_of(contact_id) for contact_id in range(1, 20001)]
    counts = Counter(stages)
    assert 300 <= counts[0] <= 500 and 1400 <= counts[1] <= 1800  # 2 % and 8 % of 20 000
    first_stage = [i for i, stage in enumerate(stages) if stage == 0]
    assert first_stage[0] < 1000 and first_stage[-1] > 19000  # not the first rows of the list
    other_seed = replace(rollout, seed="xyz")
    assert stages != [other_seed.stage_of(contact_id) for contact_id in range(1, 20001)]


def _facts(**kw: object) -> StageFacts:
    base: dict[str, object] = {
        "stage": 0,
        "members": 100,
        "sends": 100,
        "heard": 100,
        "failed": 0,
        "marketing_limited": 0,
        "optouts": 0,
        "read": 50,
        "last_send_at": datetime(2026, 12, 1, tzinfo=UTC),
        "template_status": "APPROVED",
        "sender_quality": "GREEN",
        "sender_tier": "TIER_2K",
    }
    return StageFacts(**{**base, **kw})  # type: ignore[arg-type]


ROLLOUT = Rollout(
    shares=(0.1, 1.0), wait_s=60, seed="s", baseline={"quality_rating": "GREEN", "messaging_tier": "TIER_2K"}
)


def _judge(facts: StageFacts, rollout: Rollout = ROLLOUT) -> tuple[Verdict, str]:
    judgement = judge(facts, rollout, settings=SETTINGS.rollout, limits=SETTINGS.limits)
    return judgement.verdict, judgement.summary()


def test_a_healthy_stage_is_green() -> None:
    assert _judge(_facts())[0] is Verdict.GREEN


@pytest.mark.parametrize(
    ("facts", "says"),
    [
        ({"optouts": 3}, "opt-out rate 3.0% > 2.0% (3 of 100)"),
        ({"failed": 11}, "failure rate 11.0% > 10.0% (11 of 100)"),
        ({"failed": 11, "marketing_limited": 11}, "131049 share 11.0% > 10.0%"),
        ({"template_status": "PAUSED"}, "template PAUSED"),
        ({"sender_quality": "YELLOW"}, "sender quality GREEN → YELLOW"),
        ({"sender_tier": "TIER_250"}, "limit TIER_2K → TIER_250"),
    ],
)
def test_each_guardrail_turns_the_stage_red_with_its_figures(facts: dict[str, object], says: str) -> None:
    verdict, summary = _judge(_facts(**facts))
    assert verdict is Verdict.RED
    assert says in summary


def test_a_campaign_override_moves_the_threshold() -> None:
    lenient = replace(ROLLOUT, guardrails={"max_optout_rate": 0.05})
    assert _judge(_facts(optouts=3), lenient)[0] is Verdict.GREEN
    off = replace(ROLLOUT, guardrails={"template_downgrade": 0})
    assert _judge(_facts(template_status="PAUSED"), off)[0] is Verdict.GREEN


def test_too_few_webhooks_cannot_be_judged_but_a_downgrade_is_red_at_once() -> None:
    assert _judge(_facts(heard=50))[0] is Verdict.TOO_FEW
    assert _judge(_facts(heard=50, template_status="DISABLED"))[0] is Verdict.RED


def test_a_sender_unknown_when_the_rollout_began_is_no_downgrade_once_it_is_read() -> None:
    unknown = replace(ROLLOUT, baseline={"quality_rating": None, "messaging_tier": None})
    assert _judge(_facts(sender_quality="YELLOW", sender_tier="TIER_250"), unknown)[0] is Verdict.GREEN
    assert _judge(_facts(sender_quality=None, sender_tier=None))[0] is Verdict.GREEN

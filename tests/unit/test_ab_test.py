"""A/B variants: the options, the deterministic split, the two-proportion z-test and the decision (pure)."""

from __future__ import annotations

from collections import Counter

import pytest

from campaigns.rollout.ab_test import Proportion, decide, z_test
from campaigns.rollout.stages import RolloutError
from campaigns.rollout.variants import (
    ABTest,
    Variant,
    check_metric,
    parse_split,
    parse_variants,
    with_params,
)

AB = ABTest(
    variants=(Variant("a", "spring_sale", "it"), Variant("b", "spring_sale", "en")),
    weights=(0.5, 0.5),
    metric="read",
    alpha=0.05,
    default="a",
    seed="spring",
    test_share=0.1,
)


def test_a_z_test_gives_the_textbook_numbers() -> None:
    test = z_test(Proportion("a", 50, 100), Proportion("b", 60, 100), alpha=0.05)
    assert test.difference == pytest.approx(0.10)
    assert test.z == pytest.approx(1.4213, abs=1e-4)
    assert test.p_value == pytest.approx(0.1552, abs=1e-4)
    assert (test.ci_low, test.ci_high) == (pytest.approx(-0.0372, abs=1e-4), pytest.approx(0.2372, abs=1e-4))


def test_no_trials_is_no_evidence() -> None:
    assert z_test(Proportion("a", 0, 0), Proportion("b", 5, 10), alpha=0.05).p_value == 1.0


def test_the_best_variant_wins_only_when_it_beats_the_default_significantly() -> None:
    clear = decide([Proportion("a", 60, 200), Proportion("b", 120, 200)], AB)
    assert (clear.winner, clear.significant, clear.best, clear.compared_with) == ("b", True, "b", "a")
    assert clear.test.p_value < 1e-6
    assert "variant b wins" in clear.summary()
    close = decide([Proportion("a", 50, 100), Proportion("b", 60, 100)], AB)
    assert (close.winner, close.significant) == ("a", False)
    assert "not significant, the default a is sent" in close.summary()
    default_best = decide([Proportion("a", 120, 200), Proportion("b", 60, 200)], AB)
    assert (default_best.winner, default_best.significant) == ("a", False)


def test_the_split_is_a_stable_draw_in_the_given_shares() -> None:
    drawn = [AB.drawn(contact) for contact in range(1, 10001)]
    assert drawn == [ABTest.of(AB.as_json()).drawn(contact) for contact in range(1, 10001)]
    assert 4800 <= Counter(drawn)["a"] <= 5200
    uneven = ABTest.of({**AB.as_json(), "weights": [0.7, 0.3]})
    assert 6800 <= Counter(uneven.drawn(c) for c in range(1, 10001))["a"] <= 7200


def test_the_rest_of_a_test_waits_for_the_decision_then_gets_the_winner() -> None:
    assert AB.variant_for(7, 0) in ("a", "b")
    assert AB.variant_for(7, 1) is None
    decided = ABTest.of({**AB.as_json(), "decision": {"winner": "b"}})
    assert decided.variant_for(7, 1) == "b"
    assert ABTest.of({**AB.as_json(), "test_share": None}).variant_for(7, 1) == AB.drawn(7)


def test_variant_options_are_checked_with_a_clear_message() -> None:
    variants = parse_variants(["a:spring_sale", "b:new_collection:en"], language="it")
    assert [(v.name, v.template, v.language) for v in variants] == [
        ("a", "spring_sale", "it"),
        ("b", "new_collection", "en"),
    ]
    assert with_params(variants, ["b:2=SPRING20"])[1].params == {"body.2": "SPRING20"}
    assert parse_split("70/30", 2) == (0.7, 0.3)
    assert check_metric("button:BUY") == "button:BUY"
    for call, says in [
        (lambda: parse_variants(["a:spring_sale"], language="it"), "two variants or more"),
        (lambda: parse_variants(["a:x", "a:y"], language="it"), "each with its own name"),
        (lambda: parse_variants(["a-1:x", "b:y"], language="it"), "NAME:TEMPLATE"),
        (lambda: with_params(variants, ["c:2=X"]), "VARIANT one of"),
        (lambda: parse_split("50/30/20", 2), "give 2 positive numbers"),
        (lambda: check_metric("clicks"), "read, replied, delivered or button"),
    ]:
        with pytest.raises(RolloutError, match=says):
            call()

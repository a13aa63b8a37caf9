"""Pair spacing: one recipient never gets two requests closer than the spacing."""

from __future__ import annotations

import itertools

from hypothesis import example, given
from hypothesis import strategies as st

from scheduler.sending.pairs import PairSpacer


def test_a_recipient_waits_out_the_spacing_while_others_go_on() -> None:
    pairs = PairSpacer(spacing_s=6.0, retry_base_s=4.0)
    pairs.mark("+1", 100.0)
    assert pairs.wait_s("+1", 101.0) == 5.0
    assert pairs.wait_s("+2", 101.0) == 0.0
    assert pairs.wait_s("+1", 106.0) == 0.0


def test_memory_holds_only_the_recipients_of_the_last_spacing_window() -> None:
    pairs = PairSpacer(spacing_s=6.0, retry_base_s=4.0)
    for i in range(10_000):
        pairs.mark(f"+{i}", i * 0.01)  # 100 per second for 100 s
    pairs.wait_s("+0", 100.0)
    assert len(pairs) <= 6 * 100 + 1


def test_pair_rate_errors_wait_four_to_the_power_of_the_attempt() -> None:
    pairs = PairSpacer(spacing_s=6.0, retry_base_s=4.0)
    assert [pairs.penalty_s("+1") for _ in range(4)] == [1.0, 4.0, 16.0, 64.0]
    assert pairs.penalty_s("+2") == 1.0


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 3)), max_size=300))
@example(plan=[("a", 2.952375964796169), ("a", 3.0), ("a", 3.0)])  # float rounding once let this through
def test_sending_only_when_no_wait_is_left_never_sends_twice_to_one_recipient_within_the_spacing(
    plan: list[tuple[str, float]],
) -> None:
    pairs = PairSpacer(spacing_s=6.0, retry_base_s=4.0)
    now = 0.0
    sent: dict[str, list[float]] = {}
    for phone, step in plan:
        now += step
        if pairs.wait_s(phone, now) > 0:
            continue  # the dispatcher requeues the row for later
        pairs.mark(phone, now)
        sent.setdefault(phone, []).append(now)
    for times in sent.values():
        assert all(b - a >= 6.0 for a, b in itertools.pairwise(times))

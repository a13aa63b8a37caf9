"""The sandbox counts acceptances per phone number: one sandbox can check several senders' rates."""

from __future__ import annotations

import json

from sandbox.state import SandboxState


def test_acceptances_are_counted_per_phone_number_per_window_and_in_the_trailing_second() -> None:
    state = SandboxState(clock=lambda: 100.0)
    accepted = [("a", 100.1), ("a", 100.5), ("b", 100.6), ("a", 101.05), ("a", 101.2), ("b", 103.0)]
    for n, (phone, at) in enumerate(accepted):
        state.record_accept(
            phone_number_id=phone, wa_id=str(n), content_key=str(n), template_key=None, now=at
        )
    stats = state.snapshot()
    assert stats.accepted_per_window_by_phone == {"a": {0: 2, 1: 2}, "b": {0: 1, 3: 1}}
    # a: 100.5, 101.05, 101.2 fall within one trailing second although no aligned window holds 3.
    assert stats.max_accepted_trailing_1s_by_phone == {"a": 3, "b": 1}
    assert stats.max_accepted_trailing_1s == 3
    data = json.loads(json.dumps(stats.to_json()))
    assert data["accepted_per_window_by_phone"]["a"] == {"0": 2, "1": 2}
    assert data["max_accepted_trailing_1s_by_phone"] == {"a": 3, "b": 1}

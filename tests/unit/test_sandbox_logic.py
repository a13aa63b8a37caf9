"""The sandbox's pure logic: body and template rules, limits with an injected clock, status plans, draws."""

from __future__ import annotations

import json
import random

import pytest

from sandbox.config import FaultSettings, SandboxConfig, WebhookTiming
from sandbox.errors import Problem, cloud_error_body
from sandbox.faults import FaultPlan, Flake
from sandbox.outcomes import share_hit
from sandbox.rules import OutgoingMessage, check_parameters, lookup_template, parse_message
from sandbox.samples import sample_templates
from sandbox.state import LAST_WAMIDS, SandboxState, WebhookCounts
from sandbox.templates import TemplateBook
from sandbox.webhooks import AcceptedMessage, plan_statuses, sign


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def parsed(body: dict[str, object]) -> OutgoingMessage:
    message = parse_message(json.dumps(body).encode())
    assert isinstance(message, OutgoingMessage)
    return message


def spring(components: list[dict[str, object]]) -> dict[str, object]:
    return {
        "messaging_product": "whatsapp",
        "to": "+393471234567",
        "type": "template",
        "template": {"name": "spring_sale", "language": {"code": "it"}, "components": components},
    }


def test_the_same_content_to_the_same_recipient_has_the_same_key_whatever_the_key_order() -> None:
    a = parsed(
        spring(
            [{"type": "body", "parameters": [{"type": "text", "text": "M"}, {"type": "text", "text": "5"}]}]
        )
    )
    b = parsed(
        spring(
            [{"parameters": [{"text": "M", "type": "text"}, {"type": "text", "text": "5"}], "type": "body"}]
        )
    )
    c = parsed(
        spring(
            [{"type": "body", "parameters": [{"type": "text", "text": "N"}, {"type": "text", "text": "5"}]}]
        )
    )
    assert a.content_key == b.content_key != c.content_key


def test_a_biz_opaque_callback_data_over_512_characters_is_refused_with_100() -> None:
    body = spring([])
    body["biz_opaque_callback_data"] = "x" * 513
    problem = parse_message(json.dumps(body).encode())
    assert isinstance(problem, Problem)
    assert (problem.code, "biz_opaque_callback_data" in problem.details) == (100, True)


def test_a_text_parameter_where_the_header_wants_an_image_is_a_format_error_132012() -> None:
    book = TemplateBook(sample_templates())
    body = spring([])
    body["template"] = {
        "name": "new_collection",
        "language": {"code": "it"},
        "components": [
            {"type": "header", "parameters": [{"type": "text", "text": "no"}]},
            {"type": "body", "parameters": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
    }
    message = parsed(body)
    spec = lookup_template(book, message)
    assert not isinstance(spec, Problem)
    problem = check_parameters(spec, message)
    assert problem is not None and problem.code == 132012


def test_a_button_index_beyond_the_templates_buttons_is_refused_with_100() -> None:
    book = TemplateBook(sample_templates())
    params = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    message = parsed(spring([{"type": "body", "parameters": params}, {"type": "button", "index": "3"}]))
    spec = lookup_template(book, message)
    assert not isinstance(spec, Problem)
    problem = check_parameters(spec, message)
    assert problem is not None and problem.code == 100


def test_the_trailing_second_limit_counts_acceptances_and_forgets_them_after_one_second() -> None:
    clock = FakeClock()
    state = SandboxState(clock=clock)
    for n in range(3):
        state.record_accept(
            phone_number_id="p", wa_id=f"{n}", content_key=f"{n}", template_key=None, now=clock.now
        )
    assert state.over_rate("p", clock.now + 0.999, mps=3)
    assert not state.over_rate("other-phone", clock.now, mps=3)
    assert not state.over_rate("p", clock.now + 1.0, mps=3)
    assert not state.over_rate("p", clock.now, mps=0), "mps 0 turns the limit off"


def test_the_pair_limit_holds_a_recipient_for_the_spacing_only() -> None:
    clock = FakeClock()
    state = SandboxState(clock=clock)
    state.record_accept(phone_number_id="p", wa_id="39", content_key="k", template_key=None, now=clock.now)
    assert state.too_soon("39", clock.now + 5.9, spacing_s=6.0)
    assert not state.too_soon("39", clock.now + 6.0, spacing_s=6.0)
    assert not state.too_soon("40", clock.now, spacing_s=6.0)


def test_the_pair_limit_forgets_recipients_once_their_spacing_has_passed() -> None:
    clock = FakeClock()
    state = SandboxState(clock=clock)
    for n in range(100):
        state.record_accept(
            phone_number_id="p", wa_id=f"{n}", content_key=f"{n}", template_key=None, now=clock.now
        )
    state.record_accept(
        phone_number_id="p", wa_id="late", content_key="x", template_key=None, now=clock.now + 5
    )
    assert not state.too_soon("0", clock.now + 6.0, spacing_s=6.0)
    assert state.pair_tracked == 1
    assert state.too_soon("late", clock.now + 6.0, spacing_s=6.0)


def test_only_the_most_recent_message_ids_per_recipient_are_kept() -> None:
    state = SandboxState(clock=FakeClock())
    for n in range(LAST_WAMIDS + 5):
        state.remember_wamid(f"{n}", f"wamid.{n}")
    assert len(state.last_wamid) == LAST_WAMIDS
    assert "0" not in state.last_wamid
    assert state.last_wamid[f"{LAST_WAMIDS + 4}"] == f"wamid.{LAST_WAMIDS + 4}"


def test_windows_are_whole_seconds_since_the_start() -> None:
    clock = FakeClock()
    state = SandboxState(clock=clock)
    for offset in (0.1, 0.9, 1.2, 3.5):
        state.note_request(clock.now + offset)
    assert state.snapshot().requests_per_window == {0: 2, 1: 1, 3: 1}


def message(failure: tuple[int, str] | None = None) -> AcceptedMessage:
    return AcceptedMessage("wamid.1", "39", "wacamp:1", "MARKETING", 1_700_000_000.0, failure)


@pytest.mark.parametrize("seed", range(20))
def test_a_plan_never_emits_a_status_before_sent_and_timestamps_follow_events(seed: int) -> None:
    timing = WebhookTiming(duplicate_share=0.3, out_of_order_share=0.3, skip_delivered_share=0.2)
    plan = plan_statuses(message(), timing=timing, rng=random.Random(seed), counts=WebhookCounts())
    assert plan[0].status["status"] == "sent"
    assert [p.emit_after_s for p in plan] == sorted(p.emit_after_s for p in plan)
    assert all(p.status["pricing"]["pricing_model"] == "PMP" for p in plan)


def test_a_failed_message_gets_one_failed_status_with_its_error_and_no_pricing() -> None:
    counts = WebhookCounts()
    plan = plan_statuses(message((131026, "x")), timing=WebhookTiming(), rng=random.Random(1), counts=counts)
    [only] = plan
    assert only.status["status"] == "failed"
    assert only.status["errors"][0]["code"] == 131026
    assert "pricing" not in only.status
    assert counts.final_planned == {"failed": 1}


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_bytes() -> None:
    # Computed independently: hmac.new(b"secret", b"{}", hashlib.sha256).hexdigest()
    assert sign(b"{}", "secret") == "sha256=77325902caca812dc259733aacd046b73817372c777b8d95b402647474516e13"


def test_share_hit_picks_about_the_share_and_is_stable_for_a_seed() -> None:
    keys = [str(n) for n in range(10_000)]
    hits = [k for k in keys if share_hit(seed=1, salt="s", key=k, share=0.1)]
    assert 800 < len(hits) < 1200
    assert hits == [k for k in keys if share_hit(seed=1, salt="s", key=k, share=0.1)]
    assert hits != [k for k in keys if share_hit(seed=2, salt="s", key=k, share=0.1)]


def test_one_storm_rages_in_every_period_starting_with_one_at_the_start() -> None:
    config = SandboxConfig(
        faults=("throttle-storm",), fault_settings=FaultSettings(storm_every_s=5, storm_length_s=1)
    )
    plan = FaultPlan(config, started_at=100.0)
    ticks = [100.0 + n * 0.01 for n in range(3000)]  # 30 s in 10 ms steps
    assert plan.storming(100.0) and plan.storming(100.99) and not plan.storming(101.0)
    for period in range(6):
        stormy = [t for t in ticks if 100.0 + 5 * period <= t < 100.0 + 5 * (period + 1) and plan.storming(t)]
        assert 99 <= len(stormy) <= 101, f"period {period}: {len(stormy)} ticks of storm"
        assert stormy[-1] - stormy[0] < 1.0


def test_storms_are_not_at_the_same_phase_in_every_period() -> None:
    config = SandboxConfig(
        faults=("throttle-storm",), fault_settings=FaultSettings(storm_every_s=2, storm_length_s=0.5)
    )
    plan = FaultPlan(config, started_at=0.0)
    retries_at_fixed_interval = [0.1 + 2.0 * n for n in range(20)]
    hits = [plan.storming(t) for t in retries_at_fixed_interval]
    assert hits[0] is True
    assert not all(hits)


def test_faults_that_are_off_never_fire() -> None:
    plan = FaultPlan(SandboxConfig(), started_at=0.0)
    assert not plan.storming(0.0)
    assert plan.flake("39:0") is Flake.NONE
    assert plan.latency_s("39:0") == 0.0
    assert not plan.pauses_now(10**6)


def test_cloud_error_bodies_carry_the_rate_limit_subcode_only_for_130429() -> None:
    throttled = json.loads(cloud_error_body(Problem(130429, "d")))["error"]
    pair = json.loads(cloud_error_body(Problem(131056, "d")))["error"]
    assert throttled["error_subcode"] == 2494055
    assert "error_subcode" not in pair


def test_an_unknown_fault_name_is_refused() -> None:
    with pytest.raises(ValueError, match="gremlins"):
        SandboxConfig(faults=("gremlins",))

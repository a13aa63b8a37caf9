"""The one outcome policy: every platform answer, the limits and the attempt count → one action."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaigns import outcome_causes, outcomes
from campaigns.core import exceptions as exc
from campaigns.core.settings_loading import load_settings
from campaigns.core.settings_sections import LimitsSettings
from campaigns.outcome_causes import Cause, cause_of_code
from campaigns.outcome_delays import maintenance_delay_s, pair_rate_delay_s, transient_delay_s
from campaigns.outcome_descriptions import describe, describe_cause
from campaigns.outcomes import (
    ActionKind,
    DeferRecipient,
    FailRow,
    PauseSender,
    Requeue,
    SlowSender,
    StopCampaign,
    StopSender,
    SuppressContact,
    decide,
    for_failed_status,
    for_send_error,
)
from campaigns.report.error_catalog import TABLE_BEGIN, TABLE_END, error_info, outcome_table

A = ActionKind
REPO = Path(__file__).resolve().parents[2]
PLATFORM_DOC = Path("/work/shared/docs/platform.md")

#: platform.md's table "Error codes and what the engine does", code by code: the action the doc asks for.
PLATFORM_TABLE: dict[int, ActionKind] = {
    **dict.fromkeys((130429, 80007, 4), A.SLOW_SENDER),
    131056: A.REQUEUE,
    **dict.fromkeys((131000, 131016, 1, 2), A.REQUEUE),
    131057: A.PAUSE_SENDER,
    131049: A.DEFER_RECIPIENT,
    131050: A.SUPPRESS_CONTACT,
    **dict.fromkeys((131026, 130472, 131051, 100, 132000, 132005, 132012), A.FAIL_ROW),
    **dict.fromkeys((132001, 132007, 132015, 132016), A.STOP_CAMPAIGN),
    **dict.fromkeys((131048, 131064, 368, 130497, 131031), A.STOP_CAMPAIGN),
    **dict.fromkeys((0, 190, 10, *range(200, 300), 133010, 131042), A.STOP_SENDER),
}


def limits_with(**env: str) -> LimitsSettings:
    settings, _ = load_settings(environ={f"WACAMP_LIMITS__{k.upper()}": v for k, v in env.items()})
    return settings.limits


@pytest.fixture
def limits() -> LimitsSettings:
    return limits_with()


def first_answer(code: int, limits: LimitsSettings) -> outcomes.Action:
    return for_send_error(exc.classify_platform_error(code=code, http_status=400), limits=limits, attempt=1)


# ------------------------------------------------------------------ every code of platform.md


@pytest.mark.parametrize("code", sorted(PLATFORM_TABLE))
def test_every_platform_code_gets_the_action_the_platform_doc_asks_for(
    code: int, limits: LimitsSettings
) -> None:
    assert first_answer(code, limits).kind is PLATFORM_TABLE[code]


@pytest.mark.skipif(not PLATFORM_DOC.is_file(), reason="the shared platform brief is not on this machine")
def test_the_table_above_covers_every_code_of_the_platform_doc() -> None:
    text = PLATFORM_DOC.read_text(encoding="utf-8")
    table = text[text.index("## Error codes") : text.index("## Webhooks")]
    found: set[int] = set()
    for line in table.splitlines():
        if not line.startswith("| ") or line.startswith("| codes"):
            continue
        cell = line.split("|")[1]
        for low, high in re.findall(r"\b(\d+)[–-](\d+)\b", cell):
            found |= set(range(int(low), int(high) + 1))
        found |= {int(n) for n in re.findall(r"(?<![\d–-])(\d+)(?![\d–-]|xx)", cell.replace("HTTP 429", ""))}
    assert found and found == set(PLATFORM_TABLE)


def test_every_known_code_belongs_to_exactly_one_cause() -> None:
    seen: dict[int, Cause] = {}
    for cause, codes in outcome_causes.CODES.items():
        for code in codes:
            assert code not in seen, f"{code} is both {seen[code]} and {cause}"
            seen[code] = cause
    assert set(PLATFORM_TABLE) <= outcome_causes.KNOWN_CODES


def test_the_policy_agrees_with_the_exception_classes_the_providers_raise(limits: LimitsSettings) -> None:
    for code in sorted(outcome_causes.KNOWN_CODES):
        by_class = for_send_error(exc.classify_platform_error(code=code), limits=limits, attempt=1)
        by_code = decide(cause_of_code(code), limits=limits, attempt=1)
        assert (by_class.kind, by_class.cause) == (by_code.kind, by_code.cause), code


# ---------------------------------------------------------------- unknown codes, bare statuses


@pytest.mark.parametrize(
    ("code", "http_status", "cause"),
    [
        (999_999, 400, Cause.RECIPIENT),
        (999_999, None, Cause.RECIPIENT),
        (999_999, 429, Cause.THROTTLED),
        (999_999, 503, Cause.TRANSIENT),
        (None, 429, Cause.THROTTLED),
        (None, 500, Cause.TRANSIENT),
        (None, 400, Cause.RECIPIENT),
        (None, None, Cause.RECIPIENT),
        (131049, 429, Cause.MARKETING_LIMIT),  # the code wins over the status
        (130429, 400, Cause.THROTTLED),
    ],
)
def test_codes_win_and_the_status_only_breaks_ties(
    code: int | None, http_status: int | None, cause: Cause, limits: LimitsSettings
) -> None:
    assert cause_of_code(code, http_status) is cause
    error = exc.classify_platform_error(code=code, http_status=http_status)
    assert outcome_causes.cause_of_error(error) is cause


def test_an_unknown_code_is_a_permanent_failure_never_a_retry(limits: LimitsSettings) -> None:
    assert first_answer(424242, limits) == FailRow(Cause.RECIPIENT)


def test_a_bare_platform_error_is_classified_by_its_code(limits: LimitsSettings) -> None:
    action = for_send_error(exc.PlatformError(code=131016), limits=limits, attempt=1)
    assert action.kind is A.REQUEUE and action.cause is Cause.TRANSIENT


# -------------------------------------------------------------------------- transport errors


def test_connection_refused_before_the_request_is_transient(limits: LimitsSettings) -> None:
    action = for_send_error(exc.TransientError("connection refused"), limits=limits, attempt=1)
    assert isinstance(action, Requeue) and not action.refund_attempt and not action.hold_recipient


def test_no_answer_after_the_request_went_out_is_recorded_unknown(limits: LimitsSettings) -> None:
    action = for_send_error(exc.OutcomeUnknownError("read timeout"), limits=limits, attempt=1)
    assert action == outcomes.RecordUnknown(Cause.OUTCOME_UNKNOWN)


# ------------------------------------------------------------------------------------ throttle


def test_throttled_honours_retry_after_and_refunds(limits: LimitsSettings) -> None:
    action = for_send_error(exc.ThrottledError(retry_after_s=7, code=130429), limits=limits, attempt=3)
    assert action == SlowSender(Cause.THROTTLED, retry_after_s=7, requeue_after_s=7)


@pytest.mark.parametrize("retry_after_s", [None, 0.0, -3.0])
def test_throttled_without_a_usable_retry_after_waits_the_requeue_second(
    retry_after_s: float | None, limits: LimitsSettings
) -> None:
    action = for_send_error(exc.ThrottledError(retry_after_s=retry_after_s), limits=limits, attempt=1)
    assert isinstance(action, SlowSender) and action.requeue_after_s == outcomes.THROTTLE_REQUEUE_S == 1.0


def test_throttling_never_gives_up(limits: LimitsSettings) -> None:
    assert decide(Cause.THROTTLED, limits=limits, attempt=10_000).kind is A.SLOW_SENDER


# ------------------------------------------------------------------------- attempts and limits


def test_transient_errors_back_off_then_fail_once_max_attempts_are_spent(limits: LimitsSettings) -> None:
    for attempt in range(1, limits.max_attempts):
        action = decide(Cause.TRANSIENT, limits=limits, attempt=attempt)
        floor_s = limits.backoff_base_s * 2 ** (attempt - 1)
        assert isinstance(action, Requeue) and floor_s <= action.after_s <= floor_s + limits.backoff_base_s
    spent = decide(Cause.TRANSIENT, limits=limits, attempt=limits.max_attempts)
    assert spent == FailRow(Cause.TRANSIENT, attempts_spent=limits.max_attempts)


def test_a_higher_max_attempts_retries_longer() -> None:
    limits = limits_with(max_attempts="8")
    assert decide(Cause.TRANSIENT, limits=limits, attempt=7).kind is A.REQUEUE
    assert decide(Cause.TRANSIENT, limits=limits_with(max_attempts="2"), attempt=2).kind is A.FAIL_ROW


def test_pair_rate_counts_the_recipients_strikes_not_the_rows_attempts(limits: LimitsSettings) -> None:
    strikes = iter([3])
    action = for_send_error(
        exc.PairRateLimitedError(code=131056),
        limits=limits,
        attempt=1,
        count_pair_strike=lambda: next(strikes),
    )
    assert action == Requeue(Cause.PAIR_RATE, after_s=16.0, refund_attempt=True, hold_recipient=True)


def test_the_strike_counter_is_called_only_for_the_pair_rate(limits: LimitsSettings) -> None:
    def never() -> int:
        raise AssertionError("counted a strike for another error")

    for code in sorted(outcome_causes.KNOWN_CODES - outcome_causes.CODES[Cause.PAIR_RATE]):
        for_send_error(
            exc.classify_platform_error(code=code), limits=limits, attempt=1, count_pair_strike=never
        )


def test_pair_rate_waits_base_to_the_x_then_fails(limits: LimitsSettings) -> None:
    waits = [decide(Cause.PAIR_RATE, limits=limits, attempt=n) for n in (1, 2, 3, 4)]
    assert [w.after_s for w in waits if isinstance(w, Requeue)] == [1.0, 4.0, 16.0, 64.0]
    assert decide(Cause.PAIR_RATE, limits=limits, attempt=limits.max_attempts).kind is A.FAIL_ROW
    faster = limits_with(pair_retry_base_s="2")
    assert decide(Cause.PAIR_RATE, limits=faster, attempt=4) == Requeue(
        Cause.PAIR_RATE, after_s=8.0, refund_attempt=True, hold_recipient=True
    )


def test_maintenance_pauses_the_sender_for_the_configured_time_whatever_the_attempt() -> None:
    limits = limits_with(maintenance_retry_s="90")
    assert {decide(Cause.MAINTENANCE, limits=limits, attempt=n) for n in (0, 1, 7, 50)} == {
        PauseSender(Cause.MAINTENANCE, pause_s=90.0)
    }


def test_the_marketing_limit_defers_for_the_configured_hours() -> None:
    action = first_answer(131049, limits_with(marketing_defer_h="6"))
    assert action == DeferRecipient(Cause.MARKETING_LIMIT, defer_h=6.0)
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert action.until(now) == now + timedelta(hours=6)


def test_fatal_answers_stop_the_campaign_or_the_sender(limits: LimitsSettings) -> None:
    assert first_answer(132015, limits) == StopCampaign(Cause.TEMPLATE_UNUSABLE)
    assert first_answer(131031, limits) == StopCampaign(Cause.ACCOUNT_RESTRICTED)
    assert first_answer(190, limits) == StopSender(Cause.SENDER_BLOCKED)
    assert first_answer(131050, limits) == SuppressContact(Cause.OPTED_OUT)


# ------------------------------------------------------------------------ failed status webhooks


@pytest.mark.parametrize("code", [*sorted(PLATFORM_TABLE), 999_999, None])
def test_a_failed_status_only_fails_the_row_except_for_contact_effects(
    code: int | None, limits: LimitsSettings
) -> None:
    action = for_failed_status(code, limits=limits)
    expected = {131049: A.DEFER_RECIPIENT, 131050: A.SUPPRESS_CONTACT}.get(code or -1, A.FAIL_ROW)
    assert action.kind is expected
    assert action.cause is cause_of_code(code)


def test_a_failed_status_defers_for_the_configured_hours() -> None:
    assert for_failed_status(131049, limits=limits_with(marketing_defer_h="6")) == DeferRecipient(
        Cause.MARKETING_LIMIT, defer_h=6.0
    )


# ------------------------------------------------------------------ follow-ups and descriptions


def test_retryable_codes_are_the_ones_a_later_send_may_reach() -> None:
    retryable = outcome_causes.retryable_codes()
    assert retryable == {130429, 80007, 4, 131056, 131057, 131000, 131016, 1, 2, 131049}


def test_every_action_has_a_description(limits: LimitsSettings) -> None:
    for cause in Cause:
        for attempt in (1, limits.max_attempts):
            assert describe(decide(cause, limits=limits, attempt=attempt))
        assert describe_cause(cause, limits=limits)
    assert describe(SlowSender(Cause.THROTTLED, retry_after_s=7, requeue_after_s=7)).endswith(
        "after Retry-After 7 s; not a failure"
    )


def test_the_report_says_the_configured_deferral_not_a_fixed_24_hours() -> None:
    assert (
        "deferred that recipient 6 h" in error_info(131049, limits=limits_with(marketing_defer_h="6")).action
    )
    assert "at most 60 s" in error_info(131000, limits=limits_with()).action
    assert "after 3 attempts" in error_info(131000, limits=limits_with(max_attempts="3")).action
    assert error_info(None, limits=limits_with()).action == "recorded as failed"


def test_the_running_doc_table_is_the_policys() -> None:
    text = (REPO / "docs" / "running.md").read_text(encoding="utf-8")
    start = text.index(TABLE_BEGIN)
    end = text.index(TABLE_END) + len(TABLE_END)
    assert text[start:end] == outcome_table(limits_with()), "run scripts/outcome_table.py"


# ------------------------------------------------------------------------------ delay arithmetic


def test_transient_delays_never_exceed_the_maximum() -> None:
    limits = limits_with(max_attempts="40")
    assert {transient_delay_s(attempt=30, limits=limits) for _ in range(20)} == {limits.backoff_max_s}


def test_transient_delays_are_jittered(limits: LimitsSettings) -> None:
    assert len({transient_delay_s(attempt=2, limits=limits) for _ in range(50)}) > 1


def test_delay_helpers_give_up_at_max_attempts(limits: LimitsSettings) -> None:
    assert transient_delay_s(attempt=limits.max_attempts, limits=limits) is None
    assert pair_rate_delay_s(attempt=limits.max_attempts, limits=limits) is None
    assert maintenance_delay_s(attempt=50, limits=limits) == limits.maintenance_retry_s


def test_attempts_count_from_one(limits: LimitsSettings) -> None:
    with pytest.raises(ValueError, match="from 1"):
        maintenance_delay_s(attempt=0, limits=limits)

"""Start times, send windows and recipients' time zones, with an injected `now`."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from campaigns.core.models import Campaign
from campaigns.schedule import (
    ScheduleError,
    ScheduleRequest,
    SendWindow,
    campaign_gate,
    choose_zone,
    parse_duration_s,
    parse_until,
    parse_when,
    plan_windows,
    recipient_zone_name,
    resolve_schedule,
)

ROME = ZoneInfo("Europe/Rome")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- WHEN ---------------------------------------------------------------------------------------


def test_a_plain_time_is_read_as_wall_clock_in_the_given_zone() -> None:
    assert parse_when("2026-12-01 09:00", tz_name="Europe/Rome") == utc(2026, 12, 1, 8, 0)


def test_a_plain_time_without_a_zone_is_utc() -> None:
    assert parse_when("2026-12-01 09:00") == utc(2026, 12, 1, 9, 0)


def test_an_iso_time_with_an_offset_ignores_the_zone_option() -> None:
    assert parse_when("2026-12-01T09:00:00+05:30", tz_name="Europe/Rome") == utc(2026, 12, 1, 3, 30)
    assert parse_when("2026-12-01T09:00Z", tz_name="Europe/Rome") == utc(2026, 12, 1, 9, 0)


def test_a_date_alone_means_local_midnight() -> None:
    assert parse_when("2026-07-01", tz_name="Europe/Rome") == utc(2026, 6, 30, 22, 0)


def test_a_time_skipped_by_the_spring_forward_means_the_moment_the_clock_jumps() -> None:
    # 02:30 does not exist in Rome on 2026-03-29: the clock goes from 02:00 CET to 03:00 CEST.
    at = parse_when("2026-03-29 02:30", tz_name="Europe/Rome")
    assert at == utc(2026, 3, 29, 1, 0)
    assert at.astimezone(ROME).strftime("%H:%M %Z") == "03:00 CEST"


def test_a_time_repeated_by_the_fall_back_means_its_first_occurrence() -> None:
    assert parse_when("2026-10-25 02:30", tz_name="Europe/Rome") == utc(2026, 10, 25, 0, 30)


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01 09:00", "01/12/2026 09:00", ""])
def test_an_unreadable_time_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ScheduleError, match="ISO 8601"):
        parse_when(text)


def test_an_unknown_zone_is_refused_by_name() -> None:
    with pytest.raises(ScheduleError, match="Europe/Atlantis"):
        parse_when("2026-12-01 09:00", tz_name="Europe/Atlantis")


# --- windows ------------------------------------------------------------------------------------


def test_a_window_is_half_open() -> None:
    window = SendWindow.parse("09:00-20:00")
    assert window.contains(time(9, 0))
    assert window.contains(time(19, 59))
    assert not window.contains(time(20, 0))
    assert not window.contains(time(8, 59))


def test_a_window_across_midnight_holds_both_evening_and_early_morning() -> None:
    window = SendWindow.parse("22:00-06:00")
    assert window.crosses_midnight
    assert window.contains(time(23, 30))
    assert window.contains(time(0, 0))
    assert window.contains(time(5, 59))
    assert not window.contains(time(6, 0))
    assert not window.contains(time(12, 0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("09:00", "HH:MM-HH:MM"),
        ("9-20", "not a time"),
        ("09:00-24:00", "not a time"),
        ("09:60-20:00", "not a time"),
        ("09:00-09:00", "the same"),
    ],
)
def test_a_malformed_window_is_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        SendWindow.parse(text)


def test_a_window_prints_back_as_it_was_written() -> None:
    assert str(SendWindow.parse("7:05-22:00")) == "07:05-22:00"


def test_next_opening_across_the_spring_forward_night_is_local_nine_not_utc_plus_a_day() -> None:
    window = SendWindow.parse("09:00-20:00")
    now = utc(2026, 3, 28, 21, 0)  # 22:00 CET on Saturday
    opening = window.next_open(now, ROME)
    assert opening == utc(2026, 3, 29, 7, 0)  # 09:00 CEST on Sunday
    assert opening.astimezone(ROME).strftime("%H:%M") == "09:00"


def test_an_overnight_window_is_an_hour_shorter_on_the_spring_forward_night() -> None:
    window = SendWindow.parse("22:00-06:00")
    now = utc(2026, 3, 28, 12, 0)
    opening = window.next_open(now, ROME)
    closing = window.next_close(opening, ROME)
    assert opening == utc(2026, 3, 28, 21, 0)
    assert closing == utc(2026, 3, 29, 4, 0)
    assert (closing - opening).total_seconds() == 7 * 3600


def test_an_overnight_window_is_an_hour_longer_on_the_fall_back_night() -> None:
    window = SendWindow.parse("22:00-06:00")
    opening = window.next_open(utc(2026, 10, 24, 12, 0), ROME)
    closing = window.next_close(opening, ROME)
    assert (closing - opening).total_seconds() == 9 * 3600


def test_a_window_that_opens_inside_the_dst_gap_opens_right_after_it() -> None:
    window = SendWindow.parse("02:30-05:00")
    opening = window.next_open(utc(2026, 3, 29, 0, 0), ROME)  # 01:00 CET
    assert opening == utc(2026, 3, 29, 1, 0)  # 03:00 CEST, the gap's end, already inside
    assert window.is_open(opening, ROME)


def test_an_open_window_opens_now() -> None:
    now = utc(2026, 6, 1, 10, 0)
    assert SendWindow.parse("09:00-20:00").next_open(now, ROME) == now


# --- recipients' zones ----------------------------------------------------------------------------


def test_an_italian_number_lives_in_rome() -> None:
    assert recipient_zone_name("+393471234567", default_tz="UTC") == "Europe/Rome"


def test_a_geographic_us_number_gets_its_own_zone() -> None:
    assert recipient_zone_name("+12015550123", default_tz="Europe/Rome") == "America/New_York"


def test_a_number_without_zone_data_falls_back_to_the_campaign_zone() -> None:
    assert recipient_zone_name("+447700900123", default_tz="Europe/Rome") == "Europe/Rome"
    assert recipient_zone_name("not a number", default_tz="Asia/Tokyo") == "Asia/Tokyo"


def test_among_several_zones_the_campaign_zone_wins_when_it_is_one_of_them() -> None:
    assert recipient_zone_name("+79161234567", default_tz="Europe/Moscow") == "Europe/Moscow"


def test_among_several_zones_the_median_offset_is_chosen_the_same_way_every_time() -> None:
    zones = ("Asia/Tokyo", "Europe/London", "America/New_York")
    assert choose_zone(zones, default_tz="UTC") == "Europe/London"
    assert choose_zone(tuple(reversed(zones)), default_tz="UTC") == "Europe/London"
    # Two zones with one offset: the lower median, then the name.
    assert choose_zone(("Europe/Vatican", "Europe/Rome"), default_tz="UTC") == "Europe/Rome"


def test_recipients_outside_their_window_are_held_until_it_opens_and_a_recheck_is_due_first() -> None:
    window = SendWindow.parse("09:00-20:00")
    now = utc(2026, 6, 1, 10, 0)  # 12:00 in Rome, 06:00 in New York
    plan = plan_windows(
        [(1, "+393471234567"), (2, "+12015550123"), (3, "+12015550124")],
        window=window,
        default_tz="UTC",
        now=now,
    )
    assert plan.held == {utc(2026, 6, 1, 13, 0): [2, 3]}
    assert plan.recheck_at == utc(2026, 6, 1, 13, 0)  # New York opens before Rome closes (18:00 UTC)


def test_when_every_recipient_is_inside_the_window_the_recheck_is_the_first_closing() -> None:
    window = SendWindow.parse("09:00-20:00")
    now = utc(2026, 6, 1, 15, 0)  # 17:00 Rome, 11:00 New York
    plan = plan_windows([(1, "+393471234567"), (2, "+12015550123")], window=window, default_tz="UTC", now=now)
    assert plan.held == {}
    assert plan.recheck_at == utc(2026, 6, 1, 18, 0)


# --- the campaign gate ---------------------------------------------------------------------------


def campaign(**fields: object) -> Campaign:
    base: dict[str, object] = {"name": "c", "list_id": 1, "template_name": "t", "language": "it"}
    return Campaign(**{**base, **fields})


def test_a_campaign_without_window_or_deadline_is_always_open() -> None:
    assert campaign_gate(campaign(), now=utc(2026, 6, 1, 3, 0)).open_now


def test_a_campaign_window_closed_now_waits_for_its_opening_in_the_campaign_zone() -> None:
    gate = campaign_gate(
        campaign(timezone="Europe/Rome", window_start="09:00", window_end="20:00"), now=utc(2026, 6, 1, 19, 0)
    )
    assert not gate.open_now
    assert gate.until == utc(2026, 6, 2, 7, 0)


def test_an_open_campaign_window_is_open_until_it_closes_or_the_deadline_whichever_first() -> None:
    deadline = utc(2026, 6, 1, 12, 0)
    gate = campaign_gate(
        campaign(timezone="Europe/Rome", window_start="09:00", window_end="20:00", deadline=deadline),
        now=utc(2026, 6, 1, 10, 0),
    )
    assert gate.open_now
    assert gate.until == deadline


def test_a_campaign_past_its_deadline_is_closed_for_good() -> None:
    gate = campaign_gate(campaign(deadline=utc(2026, 6, 1, 0, 0)), now=utc(2026, 6, 1, 0, 0))
    assert gate == type(gate)(open_now=False, until=None)


def test_recipient_local_windows_leave_the_campaign_gate_open_until_the_deadline() -> None:
    gate = campaign_gate(
        campaign(window_start="09:00", window_end="20:00", recipient_local_time=True),
        now=utc(2026, 6, 1, 2, 0),
    )
    assert gate.open_now
    assert gate.until is None


# --- resolving a schedule request ----------------------------------------------------------------


def test_a_schedule_reads_its_times_in_the_tz_option_and_keeps_the_window_as_written() -> None:
    resolved = resolve_schedule(
        ScheduleRequest(at="2026-12-01 09:00", tz="Europe/Rome", window="22:00-06:00", deadline="2026-12-03"),
    )
    assert resolved.scheduled_at == utc(2026, 12, 1, 8, 0)
    assert resolved.deadline == utc(2026, 12, 2, 23, 0)
    assert resolved.column_values()["window_start"] == "22:00"
    assert resolved.column_values()["window_end"] == "06:00"
    assert resolved.timezone == "Europe/Rome"


def test_without_tz_a_schedule_uses_the_campaign_zone() -> None:
    resolved = resolve_schedule(ScheduleRequest(at="2026-12-01 09:00"), campaign_tz="Asia/Tokyo")
    assert resolved.scheduled_at == utc(2026, 12, 1, 0, 0)


def test_a_deadline_before_the_start_is_refused() -> None:
    with pytest.raises(ScheduleError, match="not after"):
        resolve_schedule(ScheduleRequest(at="2026-12-01 09:00", deadline="2026-12-01 08:00"))


def test_recipient_local_time_without_a_window_is_refused() -> None:
    with pytest.raises(ScheduleError, match="needs a --window"):
        resolve_schedule(ScheduleRequest(at="2026-12-01 09:00", recipient_local_time=True))


@pytest.mark.parametrize(
    ("text", "seconds"), [("6h", 21600), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("120", 120)]
)
def test_durations_read_hours_minutes_and_seconds(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "6 hours", "0", "h"])
def test_an_unreadable_or_empty_duration_is_refused(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_duration_s(text)


def test_until_a_time_of_day_is_its_next_occurrence_in_the_zone() -> None:
    now = utc(2026, 3, 28, 22, 0)  # 23:00 CET, the spring-forward night follows
    assert parse_until("06:00", tz_name="Europe/Rome", now=now) == utc(2026, 3, 29, 4, 0)  # 06:00 CEST
    assert parse_until("23:30", tz_name="Europe/Rome", now=now) == utc(2026, 3, 28, 22, 30)


def test_until_also_takes_a_full_time() -> None:
    assert parse_until("2026-12-01T06:00Z", tz_name="Europe/Rome", now=utc(2026, 1, 1)) == utc(
        2026, 12, 1, 6, 0
    )

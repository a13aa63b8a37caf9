"""What `campaigns run` prints: the progress line and durations."""

from __future__ import annotations

import click
import pytest

from scheduler.sending.run_report import Progress
from wacamp.cli.run_cmd import format_duration_s, parse_duration_s, progress_line


def test_the_progress_line_says_sent_failed_deferred_rate_and_eta() -> None:
    progress = Progress(
        campaign="spring",
        accepted=1200,
        failed=3,
        unknown=0,
        deferred=41,
        remaining=4800,
        rate_per_s=80.0,
        target_rate_per_s=80.0,
        elapsed_s=15.0,
    )
    line = progress_line(progress)
    assert (
        line == "spring: 1,200 sent · 3 failed · 41 deferred · 4,800 left · 80.0/s (target 80/s) · ETA 1:00"
    )


def test_unknown_rows_appear_in_the_progress_line_only_when_there_are_some() -> None:
    progress = Progress("c", 1, 0, 2, 0, 0, 0.0, 80.0, 1.0)
    assert "2 unknown" in progress_line(progress)


@pytest.mark.parametrize(("seconds", "text"), [(None, "—"), (0, "0:00"), (59.6, "1:00"), (3725, "1:02:05")])
def test_durations_read_as_clock_times(seconds: float | None, text: str) -> None:
    assert format_duration_s(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)]
)
def test_older_than_accepts_seconds_minutes_hours_and_days(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


def test_a_duration_without_a_number_is_refused() -> None:
    with pytest.raises(click.BadParameter):
        parse_duration_s("an hour")

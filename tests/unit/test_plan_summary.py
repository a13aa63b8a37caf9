"""Pieces of the plan summary: durations for people, country codes from number prefixes."""

from __future__ import annotations

import pytest

from campaigns.planning.summary import country_code_of_prefix, format_duration


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (12.4, "12s"), (250, "4m 10s"), (3 * 3600 + 12 * 60 + 5, "3h 12m")]
)
def test_durations_are_written_for_people(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("prefix", "code"),
    [("+393", 39), ("+1555", 1), ("+4915", 49), ("+3712", 371), ("+999", None), ("", None)],
)
def test_the_calling_code_is_read_from_the_first_digits(prefix: str, code: int | None) -> None:
    assert country_code_of_prefix(prefix) == code

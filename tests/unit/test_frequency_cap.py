"""Reading a frequency cap (`2/7d`, `none`) and a cap policy, from settings and from `campaigns create`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from campaigns.caps import checked_override, rule_for
from campaigns.core.exceptions import ConfigError
from campaigns.core.frequency_cap import parse_cap
from campaigns.core.settings_loading import load_settings


@pytest.mark.parametrize(
    ("text", "count", "window_s", "canonical"),
    [
        ("2/7d", 2, 7 * 86400, "2/7d"),
        (" 1 / 30d ", 1, 30 * 86400, "1/30d"),
        ("3/36h", 3, 36 * 3600, "3/36h"),
        ("5/90m", 5, 90 * 60, "5/90m"),
    ],
)
def test_a_cap_reads_count_and_window(text: str, count: int, window_s: int, canonical: str) -> None:
    cap = parse_cap(text)
    assert cap is not None
    assert (cap.count, cap.window_s, cap.text) == (count, window_s, canonical)


@pytest.mark.parametrize("text", ["none", "None", " NONE "])
def test_none_is_no_cap(text: str) -> None:
    assert parse_cap(text) is None


@pytest.mark.parametrize(
    "text", ["2 per week", "2/7", "/7d", "2/7w", "0/7d", "2/0d", "-1/7d", "", "2/7d; drop"]
)
def test_anything_else_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"frequency cap .*(COUNT/WINDOW|at least 1)"):
        parse_cap(text)


def test_settings_refuse_a_bad_cap_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"limits\.marketing_cap: frequency cap '2 a week'"):
        load_settings(environ={"WACAMP_LIMITS__MARKETING_CAP": "2 a week"})
    with pytest.raises(ConfigError, match=r"limits\.cap_policy"):
        load_settings(environ={"WACAMP_LIMITS__CAP_POLICY": "sometimes"})


def test_settings_store_the_canonical_cap() -> None:
    settings, _ = load_settings(environ={"WACAMP_LIMITS__UTILITY_CAP": "4 / 2d"})
    assert (settings.limits.marketing_cap, settings.limits.utility_cap) == ("none", "4/2d")


def test_a_campaign_override_is_stored_canonical_or_its_problem_listed() -> None:
    problems: list[str] = []
    assert checked_override(" 1/30d", "skip", problems) == ("1/30d", "skip")
    assert checked_override("none", None, problems) == ("none", None)
    assert checked_override(None, None, problems) == (None, None)
    assert problems == []
    assert checked_override("1 a month", None, problems) == (None, None)
    assert checked_override(None, "later", problems) == (None, None)
    assert problems == [
        "frequency cap '1 a month' is not COUNT/WINDOW like 2/7d, 1/30d or 3/36h, or none",
        "cap policy 'later' is not one of wait, skip",
    ]


@dataclass
class FakeCampaign:
    category: str = "MARKETING"
    sender_name: str = "default"
    frequency_cap: str | None = None
    cap_policy: str | None = None


def test_the_rule_is_the_campaigns_own_else_the_configured_one_of_its_category() -> None:
    settings, _ = load_settings(
        environ={"WACAMP_LIMITS__MARKETING_CAP": "2/7d", "WACAMP_LIMITS__CAP_POLICY": "skip"}
    )
    configured = rule_for(FakeCampaign(), settings)
    assert configured is not None
    assert (configured.cap.text, configured.policy, configured.category) == ("2/7d", "skip", "MARKETING")
    assert configured.senders == ("default",)
    own = rule_for(FakeCampaign(frequency_cap="1/30d", cap_policy="wait"), settings)
    assert own is not None and (own.cap.text, own.policy) == ("1/30d", "wait")
    assert rule_for(FakeCampaign(frequency_cap="none"), settings) is None
    assert rule_for(FakeCampaign(category="UTILITY"), settings) is None  # utility_cap is none
    assert rule_for(FakeCampaign(category="AUTHENTICATION"), settings) is None

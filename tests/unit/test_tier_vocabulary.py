"""The messaging tier vocabulary of today (TIER_2K, the portfolio-level limit), older names still read."""

from __future__ import annotations

import pytest

from campaigns.core.exceptions import ConfigError
from campaigns.core.settings_loading import load_settings


def test_the_shipped_tiers_are_todays_and_the_old_names_are_still_read() -> None:
    limits = load_settings(environ={})[0].limits
    assert list(limits.tiers) == ["TIER_250", "TIER_2K", "TIER_10K", "TIER_100K"]
    assert [limits.tier_limit(t) for t in ("TIER_2K", "TIER_1K", "TIER_50", "TIER_UNLIMITED", "3000")] == [
        2000,
        1000,
        50,
        None,
        3000,
    ]
    assert all(limits.knows_tier(t) for t in ("TIER_1K", "TIER_50", "TIER_2K", "TIER_UNLIMITED", "750"))
    assert not limits.knows_tier("TIER_HUGE")
    with pytest.raises(ConfigError, match="unknown messaging tier 'TIER_HUGE'"):
        limits.tier_limit("TIER_HUGE")


def test_an_old_tier_name_in_the_configuration_is_accepted() -> None:
    settings = load_settings(environ={"WACAMP_MESSAGING_TIER": "TIER_1K"})[0]
    assert settings.limits.tier_limit(settings.limits.messaging_tier) == 1000

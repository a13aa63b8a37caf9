"""The sandbox's per-template reactions: parsing `--template-behaviour`, and who replies, by seed."""

from __future__ import annotations

import subprocess

import pytest

from sandbox.config import SandboxConfig
from sandbox.propensity import Propensity, replies_to, timing_for
from tests.conftest import wacamp_executable


def test_a_behaviour_is_parsed_and_a_bad_one_is_refused_naming_the_form() -> None:
    assert Propensity.parse("spring_sale/en:read=0.6,optout=0.1") == (
        "spring_sale/en",
        Propensity(read_share=0.6, optout_share=0.1),
    )
    for bad in ("spring_sale:clicks=1", "spring_sale:read=lots", "spring_sale:read=2", ":read=0.1"):
        with pytest.raises(ValueError, match="NAME"):
            Propensity.parse(bad)


def test_language_specific_behaviour_wins_and_stop_goes_to_the_seeded_share() -> None:
    config = SandboxConfig(
        seed=3,
        template_behaviour={
            "t": Propensity(read_share=0.1, optout_share=0.3),
            "t/en": Propensity(read_share=0.9),
        },
    )
    assert timing_for(config, "t/it").read_share == 0.1
    assert timing_for(config, "t/en").read_share == 0.9
    assert timing_for(config, "other/it") is config.webhook
    stops = sum(
        1 for i in range(2000) if replies_to(config, template="t/it", wa_id=f"39347{i:07d}") == ["STOP"]
    )
    assert 500 <= stops <= 700  # 30 % of 2,000
    again = [replies_to(config, template="t/it", wa_id=f"39347{i:07d}") for i in range(50)]
    assert again == [replies_to(config, template="t/it", wa_id=f"39347{i:07d}") for i in range(50)]


def test_sandbox_serve_refuses_a_malformed_behaviour_as_a_usage_error() -> None:
    result = subprocess.run(
        [wacamp_executable(), "sandbox", "serve", "--template-behaviour", "spring_sale:bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--template-behaviour" in result.stderr and "NAME[/LANG]:read=" in result.stderr

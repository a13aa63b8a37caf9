"""Configuration layering: defaults < config file < environment < command-line options."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.core.exceptions import ConfigError
from campaigns.core.settings_loading import flat_settings, load_settings


def test_shipped_defaults_hold_the_documented_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings, provenance = load_settings(environ={})
    assert settings.database.url == "sqlite:///wacamp.db"
    assert settings.whatsapp.version == "v23.0"
    assert settings.throughput.profiles == {
        "onprem-single": 70,
        "onprem-32": 250,
        "cloud": 80,
        "cloud-high": 1000,
        "coexistence": 20,
    }
    assert settings.sender_rate_per_s(settings.sender(None)) == 80
    assert settings.limits.pair_spacing_s == 6
    assert provenance.of("database.url") == "default"


def test_each_layer_overrides_the_one_below_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wacamp.toml").write_text(
        '[throughput]\nprofile = "onprem-32"\n[database]\nurl = "sqlite:///file.db"\n'
        '[limits]\nmessaging_tier = "TIER_2K"\n'
    )
    env = {"WACAMP_DATABASE_URL": "sqlite:///env.db", "WACAMP_MESSAGING_TIER": "TIER_10K"}
    settings, provenance = load_settings(environ=env, overrides={"limits.messaging_tier": "TIER_100K"})
    assert settings.throughput.profile == "onprem-32"
    assert provenance.of("throughput.profile").endswith("wacamp.toml")
    assert settings.database.url == "sqlite:///env.db"
    assert provenance.of("database.url") == "env WACAMP_DATABASE_URL"
    assert settings.limits.messaging_tier == "TIER_100K"
    assert provenance.of("limits.messaging_tier") == "cli"
    assert settings.sender_rate_per_s(settings.sender(None)) == 250


def test_an_explicit_rate_overrides_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings, _ = load_settings(
        environ={"WACAMP_RATE_PER_S": "33", "WACAMP_THROUGHPUT_PROFILE": "cloud-high"}
    )
    assert settings.sender_rate_per_s(settings.sender(None)) == 33


def test_a_malformed_config_file_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[database]\nurl = "sqlite:///x.db"\nbusy_timeout_s = = 3\n')
    with pytest.raises(ConfigError, match=r"bad\.toml.*line 3"):
        load_settings(config_file=bad, environ={})


def test_a_wrong_value_names_the_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[whatsapp]\napi = "cloud"\n\n[throughput]\nburst = "lots"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml, line 5: throughput\.burst"):
        load_settings(config_file=bad, environ={})


def test_an_unknown_key_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\npair_spacing = 3\n")
    with pytest.raises(ConfigError, match=r"limits\.pair_spacing"):
        load_settings(config_file=bad, environ={})


def test_secrets_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings, _ = load_settings(
        environ={
            "WACAMP_ACCESS_TOKEN": "EAAG-very-secret-token-xyz",
            "WACAMP_DATABASE_URL": "postgresql://u:hunter2@db/x",
        }
    )
    shown = flat_settings(settings)
    assert "very-secret" not in str(shown)
    assert "hunter2" not in str(shown)
    assert shown["whatsapp.access_token"].startswith("****")

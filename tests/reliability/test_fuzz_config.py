"""Fuzzed config files and environment values for `campaigns.core.settings_loading.load_settings`.

Any TOML text (valid or not, right keys with wrong types, unknown keys, binary garbage) and any
WACAMP_* value either gives settings or raises `ConfigError` with one line that says where the bad
value came from; nothing else escapes. Through the CLI, `config show` exits 0 or 1, never a traceback.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.core.exceptions import ConfigError
from campaigns.core.settings_loading import load_settings
from tests.conftest import wacamp_executable
from tests.reliability import fuzzing
from tests.reliability.record import record
from tests.reliability.support import clean_env

SECTIONS = {
    "database": ["url", "busy_timeout_s", "pool_size"],
    "whatsapp": ["api", "base_url", "access_token", "request_timeout_s", "app_secret"],
    "throughput": ["profile", "rate_per_s", "burst", "safety_factor"],
    "limits": ["messaging_tier", "tier_window_h", "pair_spacing_s", "max_attempts"],
    "dispatch": ["claim_batch", "lease_s", "max_in_flight", "write_batch_ms"],
    "webhooks": ["port", "max_body_bytes", "optout_keywords", "path"],
    "logging": ["format", "level"],
    "nonsense": ["what"],
}
toml_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).replace("inf", "inf")),
    st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(["true", "false", "[]", "[1, 2]", '["a"]', "{}", "{ a = 1 }", "1979-05-27", '"cloud"']),
    st.text(max_size=10),  # not a TOML value at all
)


@st.composite
def config_texts(draw: st.DrawFn) -> bytes:
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=4)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=3, unique=True)):
            lines.append(f"{key} = {draw(toml_values)}")
    text = "\n".join(lines).encode()
    return draw(st.one_of(st.just(text), st.binary(max_size=80), st.just(text + b"\n[database\n")))


def check_config(data: bytes, environ: dict[str, str]) -> None:
    record("fuzzed_inputs")
    record("fuzzed_config_files")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "wacamp.toml"
        path.write_bytes(data)
        try:
            load_settings(config_file=path, environ=environ)
        except ConfigError as exc:
            assert str(exc).strip() and "\n" not in str(exc).strip(), str(exc)
            record("config_refused")


ENV_NAMES = [
    "WACAMP_RATE_PER_S",
    "WACAMP_DISPATCH__LEASE_S",
    "WACAMP_WEBHOOKS__PORT",
    "WACAMP_MESSAGING_TIER",
]


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=fuzzing.examples(examples), deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


@fuzz(300)
@given(
    data=config_texts(), environ=st.dictionaries(st.sampled_from(ENV_NAMES), st.text(max_size=12), max_size=2)
)
def test_any_config_file_gives_settings_or_one_line_naming_where_the_bad_value_is(
    data: bytes, environ: dict[str, str]
) -> None:
    check_config(data, {k: v.replace("\x00", "") for k, v in environ.items()})


@pytest.mark.slow
@fuzz(3000)
@given(
    data=config_texts(), environ=st.dictionaries(st.sampled_from(ENV_NAMES), st.text(max_size=12), max_size=2)
)
def test_thousands_of_config_files_give_settings_or_one_clear_line(
    data: bytes, environ: dict[str, str]
) -> None:
    check_config(data, {k: v.replace("\x00", "") for k, v in environ.items()})


@pytest.mark.parametrize(
    "text",
    [
        b"[database\nurl = 1",
        b"\xff\xfe\x00garbage",
        b'[dispatch]\nlease_s = "soon"',
        b"[webhooks]\nport = -5",
    ],
    ids=["broken-toml", "binary", "wrong-type", "out-of-range"],
)
def test_config_show_with_a_bad_config_file_says_so_in_one_line_without_a_traceback(
    text: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "wacamp.toml"
    path.write_bytes(text)
    result = subprocess.run(
        [wacamp_executable(), "--config", str(path), "config", "show"],
        cwd=tmp_path,
        env=clean_env({}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    record("fuzzed_inputs")
    record("fuzzed_config_files")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert "--debug" not in result.stderr, "an unexpected exception, not a clear error"
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr

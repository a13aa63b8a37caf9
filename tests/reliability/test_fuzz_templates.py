"""Fuzzed template JSON for `templates import`: all or nothing, one clear line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.exceptions import UserError
from campaigns.core.models import TEMPLATE_TABLE as TEMPLATE
from campaigns.templates.catalog import load_templates_file, store_templates
from sandbox.samples import sample_templates
from tests.conftest import wacamp_executable
from tests.reliability import fuzzing
from tests.reliability.record import record
from tests.reliability.support import clean_env

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def mangled_template(draw: st.DrawFn) -> Any:
    """A sample template with fields removed, replaced by other JSON, or components broken."""
    template: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(sample_templates()))))
    template["name"] = draw(st.sampled_from([template["name"], f"fz_{draw(st.integers(0, 10**6))}"]))
    for key in draw(st.lists(st.sampled_from(sorted(template)), max_size=3)):
        if draw(st.booleans()):
            template.pop(key, None)
        else:
            template[key] = draw(json_values)
    components = template.get("components")
    if isinstance(components, list) and components and draw(st.booleans()):
        index = draw(st.integers(0, len(components) - 1))
        components[index] = draw(st.one_of(json_values, st.just({"type": "BODY"}), st.just({"type": 5})))
    return template


@st.composite
def template_files(draw: st.DrawFn) -> bytes:
    items = draw(st.lists(st.one_of(mangled_template(), json_values), min_size=1, max_size=4))
    shape = draw(st.sampled_from(["list", "page", "other"]))
    data: Any = items if shape == "list" else {"data": items} if shape == "page" else draw(json_values)
    text = json.dumps(data)
    return draw(
        st.sampled_from(
            [
                text.encode(),
                text[: len(text) // 2].encode(),
                text.encode("utf-16"),
                b"\xef\xbb\xbf" + text.encode(),
            ]
        )
    )


def template_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(TEMPLATE)) or 0)


@pytest.fixture(scope="module")
def fuzz_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('fuzz-templates') / 'wacamp.db'}")
    upgrade(engine)
    return engine


def check_file(engine: Engine, data: bytes) -> None:
    record("fuzzed_inputs")
    record("fuzzed_template_files")
    before = template_count(engine)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "templates.json"
        path.write_bytes(data)
        try:
            records = load_templates_file(path)
            store_templates(engine, records, mark_missing_gone=False)
        except UserError as exc:
            assert str(exc).strip() and "\n" not in str(exc).strip(), str(exc)
            assert template_count(engine) == before, "a refused file stored templates"
            record("templates_refused")


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=fuzzing.examples(examples),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def test_any_template_file_is_stored_whole_or_refused_in_one_line(fuzz_engine: Engine) -> None:
    @fuzz(300)
    @given(data=template_files())
    def property_(data: bytes) -> None:
        check_file(fuzz_engine, data)

    property_()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_thousands_of_template_files_are_stored_whole_or_refused(fuzz_engine: Engine) -> None:
    @fuzz(1500)
    @given(data=template_files())
    def property_(data: bytes) -> None:
        check_file(fuzz_engine, data)

    property_()


@pytest.mark.parametrize(
    "data",
    [b'[{"name": "x"}]', b'{"data": 5}', b"[[[[[[", b"\x00\x01", b"[" * 100_000 + b"]" * 100_000],
    ids=["missing-fields", "data-not-list", "truncated", "binary", "deep-nesting"],
)
def test_templates_import_of_a_bad_file_exits_1_in_one_line(
    data: bytes, fuzz_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "templates.json"
    path.write_bytes(data)
    before = template_count(fuzz_engine)
    result = subprocess.run(
        [wacamp_executable(), "templates", "import", str(path)],
        cwd=tmp_path,
        env=clean_env({"WACAMP_DATABASE_URL": fuzz_engine.url.render_as_string(hide_password=False)}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    record("fuzzed_inputs")
    record("fuzzed_template_files")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert "--debug" not in result.stderr, "an unexpected exception, not a clear error"
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    assert path.name in result.stderr
    assert template_count(fuzz_engine) == before

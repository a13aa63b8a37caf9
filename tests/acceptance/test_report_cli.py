"""`wacamp report` as a user runs it: every format, to stdout and to a file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from campaigns.core.db import make_engine, upgrade
from campaigns.core.settings_loading import load_settings
from tests.integration.test_report import seed_report_campaign


@pytest.fixture
def seeded_db(tmp_path: Path, db_url: str) -> Path:
    """The seeded database (SQLite and PostgreSQL), named in ./wacamp.toml where the CLI runs."""
    (tmp_path / "wacamp.toml").write_text(f"[database]\nurl = {json.dumps(db_url)}\n", encoding="utf-8")
    engine = make_engine(db_url)
    upgrade(engine)
    settings, _ = load_settings(environ={})
    seed_report_campaign(engine, settings)
    engine.dispose()
    return tmp_path


def test_report_json_prints_the_documented_keys_on_stdout(run_wacamp, seeded_db: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_wacamp("report", "spring", "--format", "json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    for key in (
        "campaign",
        "counts",
        "skipped",
        "errors",
        "throughput",
        "cost",
        "replies",
        "rates",
        "tier",
        "timeline",
    ):
        assert key in facts
    assert facts["counts"]["read"] == 2
    assert json.loads(run_wacamp("report", "1", "--json").stdout)["counts"] == facts["counts"]


def test_report_writes_csv_and_html_files(run_wacamp, seeded_db: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_wacamp("report", "spring", "--format", "csv", "--output", "r.csv").returncode == 0
    rows = list(csv.DictReader(io.StringIO((seeded_db / "r.csv").read_text(encoding="utf-8"))))
    assert len(rows) == 12
    assert run_wacamp("report", "spring", "--format", "html", "-o", "r.html").returncode == 0
    assert (seeded_db / "r.html").read_text(encoding="utf-8").startswith("<!doctype html>")


def test_report_table_is_the_default(run_wacamp, seeded_db: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_wacamp("report", "spring")
    assert result.returncode == 0, result.stderr
    assert "funnel" in result.stdout and "131049" in result.stdout


def test_report_of_an_unknown_campaign_is_one_line_and_exit_1(run_wacamp, seeded_db: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_wacamp("report", "nope")
    assert result.returncode == 1
    assert "nope" in result.stderr and "Traceback" not in result.stderr

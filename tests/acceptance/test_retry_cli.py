"""`wacamp campaigns retry` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from campaigns.core.db import make_engine, upgrade
from campaigns.core.settings_loading import load_settings
from tests.integration.test_followup import failed_parent


@pytest.fixture
def parent_db(tmp_path: Path, db_url: str) -> Path:
    """The seeded database (SQLite and PostgreSQL), named in ./wacamp.toml where the CLI runs."""
    (tmp_path / "wacamp.toml").write_text(f"[database]\nurl = {json.dumps(db_url)}\n", encoding="utf-8")
    engine = make_engine(db_url)
    upgrade(engine)
    settings, _ = load_settings(environ={})
    failed_parent(engine, settings)
    engine.dispose()
    return tmp_path


def test_retry_plans_a_follow_up_and_prints_it_as_json(run_wacamp, parent_db: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_wacamp("campaigns", "retry", "spring", "--codes", "131000,131026", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["campaign"], outcome["parent"], outcome["recipients"], outcome["planned"]) == (
        "spring-retry-1",
        "spring",
        2,
        2,
    )
    report = json.loads(run_wacamp("report", "spring-retry-1", "--json").stdout)
    assert report["campaign"]["parent"] == "spring" and report["counts"]["pending"] == 2


def test_retry_refuses_codes_that_are_not_numbers(run_wacamp, parent_db: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_wacamp("campaigns", "retry", "spring", "--codes", "131000,abc")
    assert result.returncode == 2 and "not a comma-separated list" in result.stderr


def test_retry_without_matching_failures_says_so_in_one_line(run_wacamp, parent_db: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_wacamp("campaigns", "retry", "spring", "--codes", "132001")
    assert result.returncode == 1
    assert "nothing to retry" in result.stderr and "Traceback" not in result.stderr

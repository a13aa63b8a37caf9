"""The installed `wacamp` CLI: templates import, list and show; a campaign created, planned, cancelled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from campaigns.core.db import make_engine
from tests.campaign_seed import PROMO, Person, people, seed_list
from tests.unit.test_templates import NAMED


@pytest.fixture
def cli_db(tmp_path: Path, db_url: str) -> str:
    """The database the CLI uses (SQLite and PostgreSQL), named in ./wacamp.toml where it runs."""
    (tmp_path / "wacamp.toml").write_text(f"[database]\nurl = {json.dumps(db_url)}\n", encoding="utf-8")
    return db_url


def _setup(run_wacamp: Any, tmp_path: Path, db_url: str) -> None:
    assert run_wacamp("db", "upgrade").returncode == 0
    (tmp_path / "templates.json").write_text(json.dumps({"data": [PROMO, NAMED]}), encoding="utf-8")
    imported = run_wacamp("templates", "import", "templates.json", "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["added"] == 2
    engine = make_engine(db_url)
    seed_list(
        engine, "spring", [*people(0, 3), Person("+393480000001", {"first_name": "S"}, suppressed=True)]
    )
    engine.dispose()


def test_templates_are_imported_listed_and_shown_with_their_placeholders(
    run_wacamp: Any, tmp_path: Path, cli_db: str
) -> None:
    _setup(run_wacamp, tmp_path, cli_db)
    listed = run_wacamp("templates", "list", "--status", "APPROVED", "--json")
    assert [(t["name"], t["placeholders"]) for t in json.loads(listed.stdout)] == [
        ("promo", ["body.1", "body.2"]),
        ("welcome", ["body.first_name", "body.code"]),
    ]
    shown = run_wacamp("templates", "show", "welcome")
    assert shown.returncode == 0, shown.stderr
    assert "body.first_name" in shown.stdout
    assert "Hi Anna, your code is X1. Bye Anna!" in shown.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([PROMO, {"name": "x", "language": "it"}]), encoding="utf-8")
    refused = run_wacamp("templates", "import", "bad.json")
    assert refused.returncode == 1
    assert "bad.json: template 1 ('x'): field 'status'" in refused.stderr
    assert len(json.loads(run_wacamp("templates", "list", "--json").stdout)) == 2  # all or nothing


def test_a_campaign_is_created_planned_previewed_and_cancelled(
    run_wacamp: Any, tmp_path: Path, cli_db: str
) -> None:
    _setup(run_wacamp, tmp_path, cli_db)
    created = run_wacamp(
        "campaigns",
        "create",
        "spring",
        "--list",
        "spring",
        "--template",
        "promo",
        "--language",
        "it",
        "--param",
        "1=Ciao {first_name}",
        "--param",
        "body.2=SPRING20",
        "--button-payload",
        "0=STOP",
    )
    assert created.returncode == 0, created.stderr
    planned = run_wacamp("campaigns", "plan", "spring", "--json")
    assert planned.returncode == 0, planned.stderr
    summary = json.loads(planned.stdout)
    assert (summary["to_send"], summary["skipped_by_reason"]) == (3, {"suppressed": 1})
    assert summary["messaging_tier"] == "TIER_250" and summary["example_prices"]
    human = run_wacamp("campaigns", "plan", "spring")
    assert "3 to send" in human.stdout and "estimated with TIER_250" in human.stdout
    preview = json.loads(run_wacamp("campaigns", "preview", "1", "--limit", "2").stdout)
    assert [b["template"]["components"][0]["parameters"][0]["text"] for b in preview] == [
        "Ciao N0",
        "Ciao N1",
    ]
    raw = run_wacamp("campaigns", "preview", "spring", "--raw", "--limit", "5").stdout.splitlines()
    assert len(raw) == 3 and json.loads(raw[0]) == preview[0] and raw[0].startswith('{"messaging_product"')
    shown = json.loads(run_wacamp("campaigns", "show", "spring", "--json").stdout)
    assert shown["ledger"]["by_state"] == {"planned": 3, "skipped": 1}
    cancelled = run_wacamp("campaigns", "cancel", "spring", "--yes")
    assert cancelled.returncode == 0 and "3 planned messages will not be sent" in cancelled.stdout
    shown = json.loads(run_wacamp("campaigns", "show", "spring", "--json").stdout)
    assert shown["state"] == "cancelled"
    assert shown["ledger"]["skipped_by_reason"] == {"cancelled": 3, "suppressed": 1}


def test_a_refused_campaign_names_every_problem_and_bad_usage_exits_2(
    run_wacamp: Any, tmp_path: Path, cli_db: str
) -> None:
    _setup(run_wacamp, tmp_path, cli_db)
    refused = run_wacamp(
        "campaigns",
        "create",
        "x",
        "--list",
        "nope",
        "--template",
        "promo",
        "--language",
        "it",
        "--param",
        "9=a",
    )
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    for problem in ("body.1 is not bound", "body.2 is not bound", "body.9", "no contact list named 'nope'"):
        assert problem in lines[0]
    usage = run_wacamp(
        "campaigns", "create", "x", "--list", "l", "--template", "t", "--language", "it", "--param", "oops"
    )
    assert usage.returncode == 2

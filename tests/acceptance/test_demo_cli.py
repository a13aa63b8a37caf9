"""`wacamp demo`: the whole path on the embedded sandbox, through the installed CLI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from campaigns.core.db import make_engine
from campaigns.core.models import Message


def test_the_demo_sends_the_sample_campaign_once_to_every_consenting_contact(
    run_wacamp, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    done = run_wacamp("demo", "--dir", "demo", timeout=110)
    assert done.returncode == 0, done.stderr
    assert "completed (exit 0)" in done.stdout
    assert "0 duplicates" in done.stdout
    assert "planned: 962 to send" in done.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'demo' / 'wacamp.db'}")
    table = Message.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        states = Counter(conn.scalars(sa.select(table.c.state)))
    engine.dispose()
    assert states["skipped"] == 38 and sum(states.values()) == 1000
    # the receiver applied the sandbox's status webhooks: every sent message moved past `accepted`
    assert set(states) <= {"sent", "delivered", "read", "failed", "skipped"} and states["read"] > 0
    assert "funnel" in done.stdout and "cost" in done.stdout  # the report table ends the demo
    assert (tmp_path / "demo" / "report.html").read_text(encoding="utf-8").startswith("<!doctype html>")


def test_the_demo_refuses_a_directory_that_already_holds_a_demo(run_wacamp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "wacamp.db").write_bytes(b"")
    done = run_wacamp("demo", "--dir", "old")
    assert done.returncode == 2 and "already holds a demo database" in done.stderr

"""How long `wacamp report` takes on a large campaign, against plain scans in the same run.

Writes a campaign of N ledger rows (mixed states, timestamps over N/80 seconds, pricing, failures)
with Core bulk inserts, then times two baselines, COUNT(*) of the campaign's rows (index only) and
one pass reading every row (COUNT and two MAX), then `campaign_facts` (every figure of the
table/json/html formats), the HTML page, and the streamed per-recipient CSV.

Reproduce:
    .venv/bin/python benchmarks/report.py                    # 1,000,000 rows on SQLite
    .venv/bin/python benchmarks/report.py --rows 200000
    WACAMP_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/report.py
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns.core.db import make_engine, upgrade
from campaigns.core.models import Campaign, Contact, ContactList, Message
from campaigns.core.settings_loading import load_settings
from campaigns.report.facts import campaign_facts
from campaigns.report.html_page import render_html
from campaigns.report.recipients_csv import write_recipients_csv

COMMAND = "  .venv/bin/python benchmarks/report.py " + " ".join(sys.argv[1:])
START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
STATES = (
    ["read"] * 45 + ["delivered"] * 30 + ["sent"] * 10 + ["accepted"] * 5 + ["failed"] * 6 + ["skipped"] * 4
)


OPTIONAL = (
    "skip_reason",
    "sending_at",
    "wamid",
    "error_code",
    "error_title",
    "failed_at",
    "accepted_at",
    "sent_at",
    "delivered_at",
    "pricing_category",
    "billable",
    "read_at",
)


def _row(i: int, campaign_id: int) -> dict[str, Any]:
    state = STATES[i % len(STATES)]
    at = START + timedelta(seconds=i / 80)
    row: dict[str, Any] = dict.fromkeys(OPTIONAL)
    row |= {
        "id": i + 1,
        "campaign_id": campaign_id,
        "contact_id": i + 1,
        "phone": f"+39347{i:07d}" if i % 5 else f"+44770{i:07d}",
        "content_hash": "h" * 64,
        "dedup_hash": None if state in ("failed", "skipped") else "h" * 64,
        "state": state,
        "planned_at": START,
        "updated_at": START,
        "attempts": 1,
    }
    if state == "skipped":
        row["skip_reason"] = "suppressed"
        return row
    row.update(sending_at=at, wamid=f"wamid.B{i:09d}")
    if state == "failed":
        row.update(
            error_code=131049 if i % 2 else 131026, error_title="x", failed_at=at + timedelta(seconds=2)
        )
        return row
    row["accepted_at"] = at
    if state in ("sent", "delivered", "read"):
        row["sent_at"] = at + timedelta(seconds=1)
    if state in ("delivered", "read"):
        row.update(delivered_at=at + timedelta(seconds=3), pricing_category="marketing", billable=True)
    if state == "read":
        row["read_at"] = at + timedelta(seconds=60)
    return row


def seed(engine: Any, rows: int) -> int:
    with engine.begin() as conn:
        list_id = conn.execute(
            sa.insert(ContactList.__table__).values(name="bench", created_at=START)
        ).inserted_primary_key[0]  # type: ignore[attr-defined]
        campaign_id = conn.execute(
            sa.insert(Campaign.__table__).values(  # type: ignore[attr-defined]
                name="bench",
                list_id=list_id,
                template_name="promo",
                language="it",
                category="MARKETING",
                sender_name="default",
                state="completed",
                params={},
                defaults={},
                button_payloads={},
                timezone="UTC",
                recipient_local_time=False,
                created_at=START,
                updated_at=START,
            )
        ).inserted_primary_key[0]
    step = 20_000
    for first in range(0, rows, step):
        ids = range(first, min(rows, first + step))
        with engine.begin() as conn:
            conn.execute(
                sa.insert(Contact.__table__),  # type: ignore[attr-defined]
                [
                    {
                        "id": i + 1,
                        "phone": f"+39347{i:07d}" if i % 5 else f"+44770{i:07d}",
                        "attributes": {},
                        "consent": True,
                        "created_at": START,
                        "updated_at": START,
                    }
                    for i in ids
                ],
            )
            conn.execute(sa.insert(Message.__table__), [_row(i, campaign_id) for i in ids])  # type: ignore[attr-defined]
    return int(campaign_id)


def timed(label: str, func: Any, results: list[tuple[str, float, str]]) -> Any:
    started = time.perf_counter()
    value = func()
    results.append((label, time.perf_counter() - started, ""))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    settings, _ = load_settings(environ={})
    pg = os.environ.get("WACAMP_BENCH_POSTGRES_URL")
    with tempfile.TemporaryDirectory() as folder:
        if pg:
            admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
            name = f"wacamp_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            url, label = (
                sa.engine.make_url(pg).set(database=name).render_as_string(hide_password=False),
                "PostgreSQL",
            )
        else:
            url, label = f"sqlite:///{folder}/bench.db", "SQLite WAL"
        engine = make_engine(url)
        upgrade(engine)
        started = time.perf_counter()
        campaign_id = seed(engine, args.rows)
        seed_s = time.perf_counter() - started
        if pg:
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
        results: list[tuple[str, float, str]] = []
        message = Message.__table__  # type: ignore[attr-defined]
        count_query = sa.select(sa.func.count()).where(message.c.campaign_id == campaign_id)
        scan_query = sa.select(
            sa.func.count(), sa.func.max(message.c.phone), sa.func.max(message.c.read_at)
        ).where(message.c.campaign_id == campaign_id)
        with engine.connect() as conn:
            timed(
                "baseline: COUNT(*) of the campaign's rows",
                lambda: conn.execute(count_query).scalar_one(),
                results,
            )
            timed(
                "one pass reading every row (COUNT, MAX x2)", lambda: conn.execute(scan_query).one(), results
            )
        facts = timed(
            "campaign_facts (table / json)",
            lambda: campaign_facts(engine, settings=settings, campaign=campaign_id),
            results,
        )
        timed("HTML page from the facts", lambda: render_html(facts), results)
        timed(
            "CSV, one row per recipient (streamed)",
            lambda: write_recipients_csv(engine, campaign_id, io.StringIO()),
            results,
        )
        engine.dispose()
    base = results[0][1]
    scan = results[1][1]
    table = Table(title=f"report of a {args.rows:,}-recipient campaign ({label})")
    for column in ("step", "seconds", "vs COUNT(*)", "vs one pass"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for step, seconds, _ in results:
        table.add_row(step, f"{seconds:.2f}", f"{seconds / base:.1f}×", f"{seconds / scan:.1f}×")
    console = Console(width=120)
    console.print(table)
    console.print(f"counts: {facts['counts']}")
    console.print(
        f"(seeding took {seed_s:.0f} s) machine: {os.cpu_count()} cores; reproduce with:\n{COMMAND}"
    )


if __name__ == "__main__":
    main()

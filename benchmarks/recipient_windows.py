"""Benchmark: applying recipient-local send windows to a campaign's planned rows.

`campaigns.schedule.apply_recipient_windows` reads the planned rows in batches, finds each
recipient's time zone from the phone number and holds back (bulk UPDATE of next_attempt_at) those
outside their window. The baseline, measured in the same run on the same numbers, is the part no
implementation can skip: `phonenumbers.parse` + `time_zones_for_number` per number.

Numbers are valid mobiles/landlines of Italy, the US (three area codes), Brazil, Russia (16 candidate
zones) and the UK (several candidate zones), in equal parts. Reproduce with::

    .venv/bin/python benchmarks/recipient_windows.py                 # 100,000 rows, SQLite
    .venv/bin/python benchmarks/recipient_windows.py --rows 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import phonenumbers
import sqlalchemy as sa
from phonenumbers import timezone as phone_timezone
from rich.console import Console
from rich.table import Table

from campaigns.core.db import make_engine, upgrade
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import MESSAGE_TABLE as MESSAGE

NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
FORMATS = (
    "+39347{i:07d}",  # Italy: Europe/Rome (and Vatican)
    "+1201{x:03d}{y:04d}",  # US, New York
    "+1415{x:03d}{y:04d}",  # US, Los Angeles
    "+1312{x:03d}{y:04d}",  # US, Chicago
    "+55119{i:08d}",  # Brazil mobile, Sao Paulo
    "+7916{i:07d}",  # Russia mobile: 16 candidate zones
    "+447700{i:06d}",  # UK mobile: several zones (London, Guernsey, Jersey …)
)


def phones(count: int) -> list[str]:
    """Valid numbers of several countries, unique (exchange codes 234-933, never 555)."""
    return [
        FORMATS[i % len(FORMATS)].format(i=i, x=234 + (i // 10_000) % 700, y=i % 10_000) for i in range(count)
    ]


def seed(url: str, numbers: list[str]) -> int:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        list_id = conn.execute(
            sa.insert(LIST).values(name="l", created_at=NOW).returning(LIST.c.id)
        ).scalar_one()
        campaign_id = conn.execute(
            sa.insert(CAMPAIGN)
            .values(
                name="c",
                list_id=list_id,
                template_name="t",
                language="it",
                category="MARKETING",
                sender_name="default",
                params={},
                defaults={},
                button_payloads={},
                state="planned",
                timezone="Europe/Rome",
                window_start="09:00",
                window_end="20:00",
                recipient_local_time=True,
                created_at=NOW,
                updated_at=NOW,
            )
            .returning(CAMPAIGN.c.id)
        ).scalar_one()
        for start in range(0, len(numbers), 20_000):
            chunk = numbers[start : start + 20_000]
            conn.execute(
                sa.insert(CONTACT),
                [
                    {
                        "id": start + i + 1,
                        "phone": p,
                        "attributes": {},
                        "consent": True,
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for i, p in enumerate(chunk)
                ],
            )
            conn.execute(
                sa.insert(MESSAGE),
                [
                    {
                        "campaign_id": campaign_id,
                        "contact_id": start + i + 1,
                        "phone": p,
                        "content_hash": "h",
                        "dedup_hash": "h",
                        "state": "planned",
                        "body": "{}",
                        "attempts": 0,
                        "planned_at": NOW,
                        "updated_at": NOW,
                    }
                    for i, p in enumerate(chunk)
                ],
            )
    engine.dispose()
    return int(campaign_id)


def baseline_s(numbers: list[str]) -> float:
    started = time.perf_counter()
    for phone in numbers:
        phone_timezone.time_zones_for_number(phonenumbers.parse(phone, None))
    return time.perf_counter() - started


def apply_s(url: str, campaign_id: int) -> tuple[float, int]:
    from campaigns.schedule import apply_recipient_windows
    from scheduler.runs.pass_rules import load_campaign

    engine = make_engine(url)
    campaign = load_campaign(engine, campaign_id)
    started = time.perf_counter()
    apply_recipient_windows(engine, campaign, now=NOW)
    elapsed = time.perf_counter() - started
    with engine.connect() as conn:
        held = conn.scalar(sa.select(sa.func.count()).where(MESSAGE.c.next_attempt_at.is_not(None)))
    engine.dispose()
    return elapsed, int(held or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    numbers = phones(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        campaign_id = seed(url, numbers)
        base = baseline_s(numbers)
        applied, held = apply_s(url, campaign_id)
    table = Table(title=f"recipient-local windows, {args.rows:,} planned rows (SQLite, 2 cores)")
    for column in ("what", "seconds", "µs per row", "× baseline"):
        table.add_column(column, justify="right")
    table.add_row(
        "baseline: parse + time_zones_for_number", f"{base:.2f}", f"{base / args.rows * 1e6:.1f}", "1.00"
    )
    table.add_row(
        f"apply_recipient_windows ({held:,} held)",
        f"{applied:.2f}",
        f"{applied / args.rows * 1e6:.1f}",
        f"{applied / base:.2f}",
    )
    console = Console()
    console.print(table)
    console.print(f"reproduce: .venv/bin/python benchmarks/recipient_windows.py --rows {args.rows}")


if __name__ == "__main__":
    main()

"""Scale-out: total msg/s with 1, 2 and 4 `wacamp worker` processes on one PostgreSQL, and each sender's rate.

Every run is a fresh PostgreSQL database, a fresh sandbox process (`wacamp sandbox serve`, limits off,
so its per-phone-number statistics show what each sender really sent) and N worker processes. Many
senders with high limits share the work (each worker holds its fair share of them, `sending.leases`),
so the total is what the machine can push, and the ratio against 1 worker (same run) is the scaling.
Per sender: the achieved rate while it sent against its configured rate, and the most it got in any
1 s window (aligned per-second windows, and the sandbox's sliding trailing second).

Reproduce (needs a PostgreSQL the script may create databases in):
    WACAMP_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/scaleout.py
    .venv/bin/python benchmarks/scaleout.py --postgres-url URL --senders 8 --rate 150 --per-sender 3000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine, make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from campaigns.core.db import make_engine, upgrade  # noqa: E402
from tests.scaleout_support import (  # noqa: E402
    Fleet,
    SenderSpec,
    load_fleet_settings,
    schedule_now,
    seed_campaigns,
    senders_of,
    wait_until_settled,
    write_config,
)

COMMAND = "  .venv/bin/python benchmarks/scaleout.py " + " ".join(sys.argv[1:])


@dataclass(frozen=True)
class SenderResult:
    """What one sender achieved in one run."""

    rate_per_s: float
    achieved_per_s: float
    max_window: int
    max_sliding: int


@dataclass(frozen=True)
class RunResult:
    """One run: workers, messages, seconds from the first to the last acceptance, and per sender."""

    workers: int
    accepted: int
    seconds: float
    senders: list[SenderResult]
    #: The most request starts the dispatchers counted in one wall-clock second, over the rate.
    client_busiest_ratio: float = 0.0
    #: Passes of one campaign by two workers that overlapped in time (must be 0).
    overlapping_passes: int = 0

    @property
    def rate_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database for one run (dropped afterwards)."""
    admin = sa.create_engine(
        make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    name = f"wacamp_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(admin_url)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def one_run(admin_url: str, *, workers: int, senders: list[SenderSpec], per_sender: int) -> RunResult:
    with fresh_database(admin_url) as url, tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url)
        upgrade(engine)
        fleet = Fleet(Path(tmp))
        try:
            base_url = fleet.start_sandbox()
            config = write_config(Path(tmp) / "wacamp.toml", db_url=url, base_url=base_url, senders=senders)
            campaigns = seed_campaigns(
                engine, load_fleet_settings(config), senders=senders, per_sender=per_sender
            )
            fleet.start_workers(workers, config=config)
            fleet.wait_for_workers(engine, workers)
            schedule_now(engine, list(campaigns.values()))
            wait_until_settled(engine, per_sender * len(senders), timeout_s=1800)
            stats = fleet.stats()
        finally:
            fleet.stop()
        passes = campaign_passes(engine)
        engine.dispose()
    result = summarize(workers, senders, stats)
    rate = senders[0].rate_per_s
    return dataclasses.replace(
        result,
        client_busiest_ratio=max((p["busiest_second"] for p in passes), default=0) / rate,
        overlapping_passes=count_overlaps(passes),
    )


def campaign_passes(engine: Engine) -> list[dict[str, Any]]:
    """Every dispatcher pass (campaign_run): which worker, when, its busiest second of starts."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT campaign_id, worker, started_at, finished_at, busiest_second FROM campaign_run")
        ).mappings()
        return [dict(row) for row in rows]


def count_overlaps(passes: list[dict[str, Any]]) -> int:
    """Pairs of passes of one campaign by different workers whose times overlap."""
    overlaps = 0
    for i, a in enumerate(passes):
        for b in passes[i + 1 :]:
            if a["campaign_id"] != b["campaign_id"] or a["worker"] == b["worker"]:
                continue
            a_end, b_end = a["finished_at"] or a["started_at"], b["finished_at"] or b["started_at"]
            if a["started_at"] < b_end and b["started_at"] < a_end:
                overlaps += 1
    return overlaps


def summarize(workers: int, senders: list[SenderSpec], stats: dict[str, Any]) -> RunResult:
    windows = {int(k): v for k, v in stats["accepted_per_window"].items()}
    seconds = max(windows) - min(windows) + 1 if windows else 0.0
    results = []
    for spec in senders:
        per_window = {
            int(k): v for k, v in stats["accepted_per_window_by_phone"].get(spec.phone_number_id, {}).items()
        }
        span = max(per_window) - min(per_window) + 1 if per_window else 1
        results.append(
            SenderResult(
                rate_per_s=spec.rate_per_s,
                achieved_per_s=sum(per_window.values()) / span,
                max_window=max(per_window.values(), default=0),
                max_sliding=int(stats["max_accepted_trailing_1s_by_phone"].get(spec.phone_number_id, 0)),
            )
        )
    return RunResult(
        workers=workers, accepted=int(stats["accepted"]), seconds=float(seconds), senders=results
    )


def render(runs: list[RunResult], *, console: Console) -> None:
    base = runs[0].rate_per_s or 1.0
    table = Table(title="Scale-out: one PostgreSQL, N `wacamp worker` processes, one sandbox process")
    for column in ("workers", "messages", "seconds", "total msg/s", "vs 1 worker"):
        table.add_column(column, justify="right")
    table.add_column("per sender: achieved / configured (min–median)", justify="right")
    table.add_column("max in any 1 s window / rate: sandbox aligned · sliding", justify="right")
    table.add_column("dispatcher starts, busiest s / rate", justify="right")
    table.add_column("overlapping holders", justify="right")
    for run in runs:
        ratios = [s.achieved_per_s / s.rate_per_s for s in run.senders]
        worst_window = max(s.max_window / s.rate_per_s for s in run.senders)
        worst_sliding = max(s.max_sliding / s.rate_per_s for s in run.senders)
        table.add_row(
            str(run.workers),
            f"{run.accepted:,}",
            f"{run.seconds:.0f}",
            f"{run.rate_per_s:,.0f}",
            f"{run.rate_per_s / base:.2f}×",
            f"{min(ratios):.1%} – {statistics.median(ratios):.1%}",
            f"{worst_window:.3f} · {worst_sliding:.3f}",
            f"{run.client_busiest_ratio:.3f}",
            str(run.overlapping_passes),
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", default=os.environ.get("WACAMP_TEST_POSTGRES_URL", ""))
    parser.add_argument("--workers", default="1,2,4", help="Worker counts to run, comma separated.")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--rate", type=float, default=150.0, help="Each sender's configured msg/s.")
    parser.add_argument("--per-sender", type=int, default=3000, help="Recipients per sender.")
    args = parser.parse_args()
    if not args.postgres_url:
        parser.error("give --postgres-url or set WACAMP_TEST_POSTGRES_URL")
    console = Console(width=200)
    senders = senders_of([args.rate] * args.senders)
    runs = []
    for workers in (int(n) for n in args.workers.split(",")):
        started = time.monotonic()
        runs.append(one_run(args.postgres_url, workers=workers, senders=senders, per_sender=args.per_sender))
        console.print(f"{workers} worker(s): done in {time.monotonic() - started:.0f} s", style="dim")
    render(runs, console=console)
    console.print(
        f"{args.senders} senders × {args.rate:g} msg/s configured, {args.per_sender:,} recipients each"
    )
    console.print("Reproduce:\n" + COMMAND)


if __name__ == "__main__":
    main()

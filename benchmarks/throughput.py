"""The dispatcher with limits off against the sandbox in another process, vs a bare aiohttp loop.

Both send to the same `wacamp sandbox serve --mps 0 --pair-spacing-s 0` process in the same run:

- **bare loop**: one `aiohttp.ClientSession`, 64 concurrent tasks POSTing a template body each, no
  database at all: the ceiling of a Python client on this machine against this server;
- **engine**: `scheduler.sending.dispatch.Dispatcher` at a rate of 100,000/s with full persistence (SQLite
  ledger: claims committed before each request, results written by the batching writer), tier
  unlimited, 64 in flight.

The ratio engine / bare is the figure to trust (the machine is shared and noisy). Then whole
campaigns of growing size (`--rss-sizes`, each sent by a fresh child process to a fresh sandbox,
ledger seeded by another child first): the engine's rate at each size against its rate at the
smallest shows whether a send costs more as the ledger grows (it must not: issue #17), and the peak
RSS that memory does not grow either. Every row carries the load average (1 min) at its start and
end, so a figure taken while the machine was busy is visible as such.

    .venv/bin/python benchmarks/throughput.py                       # 20,000 recipients, 100k vs 300k
    .venv/bin/python benchmarks/throughput.py --rss-sizes 100000,1000000 --db-dir /var/tmp/wacamp-bench
    .venv/bin/python benchmarks/throughput.py --recipients 5000 --rss-sizes "" --postgres URL

`--db-dir` keeps the seeded ledgers (seeding 1M recipients takes minutes) and sends a copy of
them, so a second run starts at once (delete the directory after a schema change). `--postgres`
also runs the engine rounds on PostgreSQL (a fresh database per round, created from the URL given
and dropped after).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import click
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from campaigns import control  # noqa: E402
from campaigns.core.db import make_engine, upgrade  # noqa: E402
from campaigns.core.settings import Settings  # noqa: E402
from campaigns.core.settings_loading import load_settings  # noqa: E402
from scheduler.providers.factory import make_provider  # noqa: E402
from scheduler.sending.dispatch import Dispatcher  # noqa: E402
from tests.dispatch_support import body_for, seed_campaign  # noqa: E402

LISTENING = re.compile(r"sandbox listening on (http://\S+)")
PHONE_NUMBER_ID = "100000000000001"
CONCURRENCY = 64
console = Console(stderr=True)


def start_sandbox() -> tuple[subprocess.Popen[str], str]:
    """`wacamp sandbox serve` with limits off, in its own process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    process = subprocess.Popen(
        [
            str(REPO / ".venv/bin/wacamp"),
            "sandbox",
            "serve",
            "--port",
            "0",
            "--mps",
            "0",
            "--pair-spacing-s",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    match = LISTENING.search(process.stdout.readline())
    if match is None:
        process.kill()
        raise SystemExit("the sandbox did not start")
    return process, match.group(1)


def engine_settings(base_url: str, database_url: str) -> Settings:
    settings, _ = load_settings(
        environ={
            "WACAMP_DATABASE_URL": database_url,
            "WACAMP_API_BASE_URL": base_url,
            "WACAMP_ACCESS_TOKEN": "sandbox-token",
            "WACAMP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WACAMP_RATE_PER_S": "100000",
            "WACAMP_MESSAGING_TIER": "TIER_UNLIMITED",
            "WACAMP_PAIR_SPACING_S": "0",
            "WACAMP_DISPATCH__MAX_IN_FLIGHT": str(CONCURRENCY),
        }
    )
    return settings


async def bare_loop(base_url: str, *, requests: int, first: int) -> tuple[float, float]:
    """(msg/s, CPU µs per message) of 64 tasks sharing one session, POSTing ready bodies as answers come."""
    url = f"{base_url}/v23.0/{PHONE_NUMBER_ID}/messages"
    headers = {"Authorization": "Bearer sandbox-token", "Content-Type": "application/json"}
    bodies = [
        body_for(message_id=first + i, phone=f"+44770{first + i:07d}", order_id="BARE")[0].encode()
        for i in range(requests)
    ]
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for body in queue:
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    assert answer.status == 200, await answer.text()

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        cpu_us = (time.process_time() - cpu_started) / requests * 1e6
        return requests / (time.perf_counter() - started), cpu_us


async def engine_run(settings: Settings, campaign_id: int) -> tuple[float, int, float]:
    """(msg/s, accepted, CPU µs per message: every thread of the process) of one dispatcher run."""
    engine = make_engine(settings.database.url)
    provider = make_provider(settings, settings.sender(None))
    try:
        with engine.connect() as conn:
            ref = control.reload(conn, campaign_id)
        started, cpu_started = time.perf_counter(), time.process_time()
        report = await Dispatcher(engine=engine, settings=settings, campaign=ref, provider=provider).run()
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await provider.close()
        engine.dispose()
    return report.accepted / elapsed, report.accepted, cpu_s / max(1, report.accepted) * 1e6


def seed(database_url: str, *, recipients: int, name: str, first_contact: int) -> int:
    engine = make_engine(database_url)
    upgrade(engine)
    campaign_id = seed_campaign(engine, recipients=recipients, name=name, first_contact=first_contact)
    engine.dispose()
    return campaign_id


def child(args: list[str]) -> dict[str, float]:
    """Run this script as a child (`--child ...`) and read the JSON line it prints."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False, cwd=REPO
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child_main(args: list[str]) -> None:
    """`--child seed URL N` or `--child send URL BASE_URL CAMPAIGN_ID` (prints one JSON line)."""
    kind = args[0]
    if kind == "seed":
        campaign_id = seed(
            args[1], recipients=int(args[2]), name=f"rss-{args[2]}", first_contact=int(args[3])
        )
        print(json.dumps({"campaign_id": campaign_id}))
        return
    settings = engine_settings(args[2], args[1])
    rate, accepted, cpu_us = asyncio.run(engine_run(settings, int(args[3])))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate_per_s": rate, "accepted": accepted, "peak_rss_mb": peak_mb, "cpu_us": cpu_us}))


@dataclass(frozen=True)
class Row:
    """One measured figure: msg/s and CPU µs per message (medians of its rounds), peak RSS, load average."""

    rate_per_s: float
    cpu_us: float
    load_start: float
    load_end: float
    peak_rss_mb: float = 0.0


def load_1min() -> float:
    return os.getloadavg()[0]


@contextmanager
def sandbox() -> Iterator[str]:
    """A fresh `wacamp sandbox serve` (its per-recipient memory never carries over between rows)."""
    process, base_url = start_sandbox()
    try:
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def fresh_postgres(admin_url: str) -> Iterator[str]:
    """A new empty PostgreSQL database created from `admin_url`, dropped afterwards."""
    admin = sa.create_engine(
        make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    name = f"wacamp_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def round_database(workdir: Path, round_: int, postgres_url: str) -> Iterator[str]:
    if postgres_url:
        with fresh_postgres(postgres_url) as url:
            yield url
    else:
        yield f"sqlite:///{workdir / f'throughput-{round_}.db'}"


def measure_throughput(
    workdir: Path, *, recipients: int, repeats: int, postgres_url: str = ""
) -> tuple[Row, Row]:
    """(bare loop, engine): `repeats` rounds, each against a fresh sandbox; medians."""
    bare: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    load_start = load_1min()
    for round_ in range(repeats):
        with round_database(workdir, round_, postgres_url) as url, sandbox() as base_url:
            campaign_id = seed(
                url, recipients=recipients, name=f"bench-{round_}", first_contact=round_ * recipients
            )
            bare.append(
                asyncio.run(bare_loop(base_url, requests=recipients, first=(round_ + 10) * recipients))
            )
            result = child(["send", url, base_url, str(campaign_id)])
        assert result["accepted"] == recipients, result
        ours.append((result["rate_per_s"], result["cpu_us"]))
        console.print(
            f"round {round_ + 1}: bare {bare[-1][0]:,.0f}/s {bare[-1][1]:.0f} µs CPU/msg, "
            f"engine {ours[-1][0]:,.0f}/s {ours[-1][1]:.0f} µs CPU/msg"
        )
    load_end = load_1min()
    return _median_row(bare, load_start, load_end), _median_row(ours, load_start, load_end)


def _median_row(rounds: list[tuple[float, float]], load_start: float, load_end: float) -> Row:
    rate = statistics.median(rate for rate, _ in rounds)
    return Row(rate, statistics.median(cpu for _, cpu in rounds), load_start, load_end)


def seeded_copy(db_dir: Path, size: int) -> tuple[str, int]:
    """A ledger of `size` recipients to send: a copy of the one kept in `db_dir` (seeded if missing)."""
    pristine = db_dir / f"seed-{size}.db"
    meta = db_dir / f"seed-{size}.json"
    if not (pristine.exists() and meta.exists()):
        pristine.unlink(missing_ok=True)
        seeded = child(["seed", f"sqlite:///{pristine}", str(size), "0"])  # a database of its own
        meta.write_text(json.dumps(seeded))
    run_copy = db_dir / f"run-{size}.db"
    for leftover in (run_copy, Path(f"{run_copy}-wal"), Path(f"{run_copy}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(pristine, run_copy)
    return f"sqlite:///{run_copy}", int(json.loads(meta.read_text())["campaign_id"])


def measure_sizes(db_dir: Path, sizes: list[int]) -> list[tuple[int, Row]]:
    """Each whole campaign sent by a fresh engine process to a fresh sandbox: msg/s and peak RSS."""
    results = []
    for size in sizes:
        url, campaign_id = seeded_copy(db_dir, size)
        load_start = load_1min()
        with sandbox() as base_url:
            data = child(["send", url, base_url, str(campaign_id)])
        assert data["accepted"] == size, data
        row = Row(data["rate_per_s"], data["cpu_us"], load_start, load_1min(), data["peak_rss_mb"])
        results.append((size, row))
        console.print(
            f"{size:,} recipients: {data['rate_per_s']:,.0f}/s, {data['cpu_us']:.0f} µs CPU/msg, "
            f"peak RSS {data['peak_rss_mb']:.0f} MB"
        )
    return results


@click.command()
@click.option("--recipients", default=20_000, show_default=True, help="Recipients of each engine/bare round.")
@click.option("--repeats", default=3, show_default=True, help="Engine/bare rounds (medians are reported).")
@click.option(
    "--rss-sizes",
    default="100000,300000",
    show_default=True,
    help="Whole campaigns to send, comma separated (rate and peak RSS by size); empty to skip.",
)
@click.option(
    "--db-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the seeded ledgers of --rss-sizes here and reuse them (default: a temporary directory).",
)
@click.option(
    "--postgres",
    "postgres_url",
    default="",
    metavar="URL",
    help="Also run the engine/bare rounds on PostgreSQL: a database per round is created from this URL.",
)
def main(recipients: int, repeats: int, rss_sizes: str, db_dir: Path | None, postgres_url: str) -> None:
    """Run the benchmark and print the tables (see the module docstring)."""
    sizes = [int(s) for s in rss_sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="wacamp-throughput-") as tmp:
        workdir = Path(tmp)
        bare, ours = measure_throughput(workdir, recipients=recipients, repeats=repeats)
        postgres = None
        if postgres_url:
            postgres = measure_throughput(
                workdir, recipients=recipients, repeats=repeats, postgres_url=postgres_url
            )
        if db_dir is not None:
            db_dir.mkdir(parents=True, exist_ok=True)
        by_size = measure_sizes(db_dir or workdir, sizes)
    print_tables(recipients=recipients, bare=bare, ours=ours, postgres=postgres, by_size=by_size)


#: msg/s is what a quiet machine gives; CPU per message is the steadier figure on a busy one.
THROUGHPUT_COLUMNS = (
    "client",
    "msg/s (median)",
    "vs bare loop",
    "CPU µs/msg (median)",
    "bare loop's CPU / this",
    "load avg (1 min)",
)


def _load(row: Row) -> str:
    return f"{row.load_start:.1f} → {row.load_end:.1f}"


def _cells(client: str, row: Row, bare: Row) -> tuple[str, ...]:
    """One throughput row: rate and CPU per message, each against the bare loop of the same rounds."""
    return (
        client,
        f"{row.rate_per_s:,.0f}",
        f"{row.rate_per_s / bare.rate_per_s:.2f}",
        f"{row.cpu_us:.0f}",
        f"{bare.cpu_us / row.cpu_us:.2f}",
        _load(row),
    )


def print_tables(
    *,
    recipients: int,
    bare: Row,
    ours: Row,
    postgres: tuple[Row, Row] | None,
    by_size: list[tuple[int, Row]],
) -> None:
    out = Console(width=140)
    table = Table(
        title=f"Dispatch throughput, {recipients:,} recipients, limits off, sandbox in another process"
    )
    for column in THROUGHPUT_COLUMNS:
        table.add_column(column, justify="left" if column == "client" else "right")
    table.add_row(*_cells("bare aiohttp loop (64 concurrent, no database)", bare, bare))
    table.add_row(*_cells("wacamp engine, SQLite ledger", ours, bare))
    if postgres is not None:
        pg_bare, pg_ours = postgres
        table.add_row(*_cells("bare aiohttp loop (PostgreSQL rounds)", pg_bare, pg_bare))
        table.add_row(*_cells("wacamp engine, PostgreSQL ledger", pg_ours, pg_bare))
    out.print(table)
    if by_size:
        sized = Table(title="Whole campaigns by size (SQLite): the per-message cost must not grow")
        for column in ("recipients", "msg/s", "vs smallest", "CPU µs/msg", "vs smallest ", "peak RSS (MB)"):
            sized.add_column(column, justify="right")
        sized.add_column("load avg (1 min)", justify="right")
        smallest = by_size[0][1]
        for size, row in by_size:
            sized.add_row(
                f"{size:,}",
                f"{row.rate_per_s:,.0f}",
                f"{row.rate_per_s / smallest.rate_per_s:.2f}",
                f"{row.cpu_us:.0f}",
                f"{row.cpu_us / smallest.cpu_us:.2f}",
                f"{row.peak_rss_mb:.0f}",
                _load(row),
            )
        out.print(sized)
    print(f"reproduce: .venv/bin/python benchmarks/throughput.py {shlex.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()

"""The dispatcher with limits off against the sandbox in another process, vs a bare aiohttp loop.

Both send to the same `wacamp sandbox serve --mps 0 --pair-spacing-s 0` process in the same run:

- **bare loop**: one `aiohttp.ClientSession`, 64 concurrent tasks POSTing a template body each, no
  database at all: the ceiling of a Python client on this machine against this server;
- **engine**: `scheduler.sending.dispatch.Dispatcher` at a rate of 100,000/s with full persistence (SQLite
  ledger: claims committed before each request, results written by the batching writer), tier
  unlimited, 64 in flight.

The ratio engine / bare is the figure to trust (the machine is shared and noisy). Then the peak RSS
of the engine process for two campaign sizes (each in a fresh child process, ledger seeded by another
child first), to show that memory does not grow with the campaign.

    .venv/bin/python benchmarks/throughput.py                       # 20,000 recipients, RSS 100k vs 300k
    .venv/bin/python benchmarks/throughput.py --recipients 5000 --rss-sizes ""
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import click
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from campaigns.core.db import make_engine, upgrade  # noqa: E402
from campaigns.core.settings import Settings, load_settings  # noqa: E402
from campaigns import control  # noqa: E402
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


async def bare_loop(base_url: str, *, requests: int, first: int) -> float:
    """msg/s of 64 tasks sharing one session, each POSTing ready bodies as fast as answers come."""
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

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return requests / (time.perf_counter() - started)


async def engine_run(settings: Settings, campaign_id: int) -> tuple[float, int]:
    """(msg/s, accepted) of one dispatcher run over a seeded campaign."""
    engine = make_engine(settings.database.url)
    provider = make_provider(settings, settings.sender(None))
    try:
        with engine.connect() as conn:
            ref = control.reload(conn, campaign_id)
        started = time.perf_counter()
        report = await Dispatcher(engine=engine, settings=settings, campaign=ref, provider=provider).run()
        elapsed = time.perf_counter() - started
    finally:
        await provider.close()
        engine.dispose()
    return report.accepted / elapsed, report.accepted


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
    rate, accepted = asyncio.run(engine_run(settings, int(args[3])))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate_per_s": rate, "accepted": accepted, "peak_rss_mb": peak_mb}))


def measure_throughput(
    base_url: str, workdir: Path, *, recipients: int, repeats: int
) -> tuple[list[float], list[float]]:
    bare: list[float] = []
    ours: list[float] = []
    for round_ in range(repeats):
        url = f"sqlite:///{workdir / f'throughput-{round_}.db'}"
        campaign_id = seed(
            url, recipients=recipients, name=f"bench-{round_}", first_contact=round_ * recipients
        )
        bare.append(asyncio.run(bare_loop(base_url, requests=recipients, first=(round_ + 10) * recipients)))
        result = child(["send", url, base_url, str(campaign_id)])
        assert result["accepted"] == recipients, result
        ours.append(result["rate_per_s"])
        console.print(f"round {round_ + 1}: bare {bare[-1]:,.0f}/s, engine {ours[-1]:,.0f}/s")
    return bare, ours


def measure_rss(base_url: str, workdir: Path, sizes: list[int]) -> list[tuple[int, float, float]]:
    results = []
    for index, size in enumerate(sizes):
        url = f"sqlite:///{workdir / f'rss-{size}.db'}"
        campaign_id = int(child(["seed", url, str(size), str(5_000_000 + index * 2_000_000)])["campaign_id"])
        data = child(["send", url, base_url, str(campaign_id)])
        results.append((size, data["peak_rss_mb"], data["rate_per_s"]))
        console.print(
            f"{size:,} recipients: peak RSS {data['peak_rss_mb']:.0f} MB at {data['rate_per_s']:,.0f}/s"
        )
    return results


@click.command()
@click.option("--recipients", default=20_000, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option(
    "--rss-sizes", default="100000,300000", show_default=True, help="Comma separated; empty to skip."
)
def main(recipients: int, repeats: int, rss_sizes: str) -> None:
    """Run the benchmark and print the table (see the module docstring)."""
    sizes = [int(s) for s in rss_sizes.split(",") if s.strip()]
    process, base_url = start_sandbox()
    try:
        with tempfile.TemporaryDirectory(prefix="wacamp-throughput-") as tmp:
            bare, ours = measure_throughput(base_url, Path(tmp), recipients=recipients, repeats=repeats)
            rss = measure_rss(base_url, Path(tmp), sizes)
    finally:
        process.terminate()
        process.wait(timeout=20)
    print_tables(recipients=recipients, bare=bare, ours=ours, rss=rss)


def print_tables(
    *, recipients: int, bare: list[float], ours: list[float], rss: list[tuple[int, float, float]]
) -> None:
    out = Console()
    table = Table(
        title=f"Dispatch throughput, {recipients:,} recipients, sandbox in another process (median)"
    )
    for column in ("client", "msg/s", "vs bare loop"):
        table.add_column(column, justify="right" if column != "client" else "left")
    bare_median, ours_median = statistics.median(bare), statistics.median(ours)
    table.add_row("bare aiohttp loop (64 concurrent, no database)", f"{bare_median:,.0f}", "1.00")
    table.add_row(
        "wacamp engine (SQLite ledger, limits off)", f"{ours_median:,.0f}", f"{ours_median / bare_median:.2f}"
    )
    out.print(table)
    if rss:
        memory = Table(title="Peak RSS of the engine process")
        for column in ("recipients", "peak RSS (MB)", "msg/s", "vs smallest"):
            memory.add_column(column, justify="right")
        base = rss[0][1]
        for size, peak, rate in rss:
            memory.add_row(f"{size:,}", f"{peak:.0f}", f"{rate:,.0f}", f"{peak / base:.2f}")
        out.print(memory)
    out.print("reproduce: .venv/bin/python benchmarks/throughput.py")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()

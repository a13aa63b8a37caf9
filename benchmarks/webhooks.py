"""How many signed webhook requests per second the receiver stores durably, and its latency at 1,000 req/s.

The receiver runs in this process (the real `WebhookServer`: signature check, group commit into
`webhook_inbox`); the load generator runs in ANOTHER process (multiprocessing, spawn): one aiohttp
ClientSession posting signed single-status bodies, distinct wamids. Three servers in the same run:

- baseline: the same aiohttp application answering 200 after the signature check, storing nothing;
- durable: bodies committed to SQLite (WAL) before the 200, processor off;
- durable + processor: the same with the batch processor applying the inbox in the background
  (what `wacamp webhooks serve` runs);
- durable + processor in its own process: `webhooks serve --no-process` beside
  `wacamp webhooks process --follow` (the processor gets its own core and GIL).

Two phases per server: closed loop at N concurrent requests for S seconds (sustained req/s), then an
open loop at a fixed 1,000 req/s for S seconds (latency measured from the intended start time, so a
stalled server cannot hide its queue).

Reproduce:
    .venv/bin/python benchmarks/webhooks.py                      # 3 rounds of 10 s phases, 64 concurrent
    .venv/bin/python benchmarks/webhooks.py --seconds 5 --concurrency 128
    WACAMP_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/webhooks.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns.core.db import make_engine, upgrade
from campaigns.core.settings_loading import load_settings
from scheduler.webhooks.inbox import InboxItem
from scheduler.webhooks.processor import pending_count, process_pending
from scheduler.webhooks.server import WebhookServer, make_app
from scheduler.webhooks.signature import HEADER, sign

SECRET = "sandbox-secret"
COMMAND = "  .venv/bin/python benchmarks/webhooks.py " + " ".join(sys.argv[1:])


def signed_bodies(count: int) -> list[tuple[bytes, str]]:
    """Single-status webhook bodies (distinct wamids) and their signatures."""
    out = []
    for n in range(count):
        status = {
            "id": f"wamid.BENCH{n:09d}",
            "status": "delivered",
            "timestamp": str(1_790_000_000 + n),
            "recipient_id": f"39347{n:07d}",
            "biz_opaque_callback_data": f"wacamp:{n + 1}",
            "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "marketing"},
        }
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"phone_number_id": "100000000000001"},
            "statuses": [status],
        }
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": "2", "changes": [{"field": "messages", "value": value}]}],
            }
        ).encode()
        out.append((body, sign(SECRET, body)))
    return out


# ----- the load generator (runs in a child process) ---------------------------------------------------


async def _closed_loop(
    url: str, bodies: list[tuple[bytes, str]], seconds: float, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds
        counter = iter(range(10**9))

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                body, signature = bodies[next(counter) % len(bodies)]
                started = time.perf_counter()
                async with session.post(url, data=body, headers={HEADER: signature}) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "elapsed_s": elapsed, "latencies": latencies}


async def _open_loop(
    url: str, bodies: list[tuple[bytes, str]], seconds: float, rate_per_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=1024)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int, intended: float) -> None:
            nonlocal errors
            body, signature = bodies[n % len(bodies)]
            async with session.post(url, data=body, headers={HEADER: signature}) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(
                time.perf_counter() - intended
            )  # from the intended start: no coordinated omission

        start = time.perf_counter()
        total = int(seconds * rate_per_s)
        tasks = []
        for n in range(total):
            intended = start + n / rate_per_s
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, intended)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "errors": errors, "elapsed_s": elapsed, "latencies": latencies}


def _load_process(
    url: str, mode: str, seconds: float, concurrency: int, rate: float, queue: Any, offset: int
) -> None:
    bodies = signed_bodies(20_000)
    bodies = bodies[offset % len(bodies) :] + bodies[: offset % len(bodies)]
    if mode == "closed":
        result = asyncio.run(_closed_loop(url, bodies, seconds, concurrency))
    else:
        result = asyncio.run(_open_loop(url, bodies, seconds, rate))
    lat = sorted(result.pop("latencies"))
    result["median_ms"] = statistics.median(lat) * 1000 if lat else float("nan")
    result["p99_ms"] = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else float("nan")
    queue.put(result)


async def run_load(
    url: str, *, mode: str, seconds: float, concurrency: int, rate: float, offset: int
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_process, args=(url, mode, seconds, concurrency, rate, queue, offset))
    proc.start()
    result: dict[str, Any] = await asyncio.to_thread(queue.get)
    await asyncio.to_thread(proc.join)
    return result


# ----- the servers ---------------------------------------------------------------------------------------


class _NullWriter:
    """Answers at once, stores nothing: the baseline."""

    async def store(self, item: InboxItem) -> None:
        return None


async def _baseline(stack: AsyncExitStack) -> str:
    app = make_app(
        writer=_NullWriter(), app_secret=SECRET, verify_token="", path="/webhook", max_body_bytes=1 << 20
    )  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"


def _database(url: str | None, folder: Path) -> tuple[Any, str]:
    if url:
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        name = f"wacamp_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        db_url = sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
        label = "PostgreSQL"
    else:
        db_url, label = f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:6]}.db'}", "SQLite WAL"
    engine = make_engine(db_url)
    upgrade(engine)
    return engine, label


def _processor_process(engine: Any) -> subprocess.Popen[bytes]:
    """`wacamp webhooks process --follow` on the same database, in its own process."""
    wacamp = Path(sys.executable).parent / "wacamp"
    env = {**os.environ, "WACAMP_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    return subprocess.Popen(
        [str(wacamp), "webhooks", "process", "--follow"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def measure(name: str, url: str, args: argparse.Namespace, offset: int) -> dict[str, Any]:
    sustained = await run_load(
        url, mode="closed", seconds=args.seconds, concurrency=args.concurrency, rate=0, offset=offset
    )
    at_rate = await run_load(
        url, mode="open", seconds=args.seconds, concurrency=0, rate=args.rate, offset=offset + 7_000
    )
    return {"name": name, "sustained": sustained, "at_rate": at_rate}


async def _durable(variant: str, args: argparse.Namespace, folder: Path, settings: Any) -> dict[str, Any]:
    engine, label = _database(os.environ.get("WACAMP_BENCH_POSTGRES_URL"), folder)
    follower = _processor_process(engine) if variant == "+ processor process" else None
    try:
        async with WebhookServer(
            engine, settings, port=0, sandbox=True, process=variant == "+ processor"
        ) as server:
            result = await measure(f"durable ({label}) {variant}", server.url, args, 0)
            result["commits"] = server.writer.commits
            result["stored"] = server.writer.stored
    finally:
        if follower is not None:
            follower.terminate()
            follower.wait(timeout=60)
    if variant == "store only":
        started = time.perf_counter()
        done = process_pending(engine, settings)
        result["process_rows_per_s"] = done.rows / (time.perf_counter() - started)
    result["pending_after"] = pending_count(engine)
    engine.dispose()
    return result


async def main_async(args: argparse.Namespace) -> list[list[dict[str, Any]]]:
    """Rounds alternate between the servers (the machine's load changes); returns runs per server."""
    settings, _ = load_settings(environ={})
    variants = [
        "baseline",
        *(v for v in ("store only", "+ processor", "+ processor process") if v in args.variants),
    ]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for variant in variants:
                if variant == "baseline":
                    async with AsyncExitStack() as stack:
                        url = await _baseline(stack)
                        runs[variant].append(
                            await measure("baseline: answer 200, store nothing", url, args, 0)
                        )
                else:
                    runs[variant].append(await _durable(variant, args, Path(folder), settings))
    return list(runs.values())


def _rate(run: dict[str, Any]) -> float:
    return float(run["sustained"]["requests"] / run["sustained"]["elapsed_s"])


def report(runs: list[list[dict[str, Any]]], args: argparse.Namespace) -> None:
    console = Console(width=150)
    base = statistics.median(_rate(run) for run in runs[0])
    table = Table(
        title=f"signed single-status webhooks: {args.concurrency} concurrent, then {args.rate:g}/s open loop "
        f"(medians of {args.rounds} rounds)"
    )
    at = f"@{args.rate:g}/s"
    columns = ("server", "sustained req/s", "vs baseline", "median ms (closed)", f"median ms {at}",
               f"p99 ms {at}", "errors", "bodies/commit")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "server" else "right")
    for server_runs in runs:
        rate = statistics.median(_rate(run) for run in server_runs)
        commits = sum(run.get("commits", 0) for run in server_runs)
        stored = sum(run.get("stored", 0) for run in server_runs)
        errors = sum(run["sustained"]["errors"] + run["at_rate"]["errors"] for run in server_runs)
        table.add_row(
            server_runs[0]["name"],
            f"{rate:,.0f}",
            f"{rate / base:.2f}",
            f"{statistics.median(run['sustained']['median_ms'] for run in server_runs):.1f}",
            f"{statistics.median(run['at_rate']['median_ms'] for run in server_runs):.1f}",
            f"{statistics.median(run['at_rate']['p99_ms'] for run in server_runs):.1f}",
            str(errors),
            f"{stored / commits:.1f}" if commits else "–",
        )
    console.print(table)
    for server_runs in runs:
        rates = ", ".join(f"{_rate(run):,.0f}" for run in server_runs)
        console.print(f"{server_runs[0]['name']}: req/s per round {rates}")
        for run in server_runs:
            if "process_rows_per_s" in run:
                console.print(f"  processor alone afterwards: {run['process_rows_per_s']:,.0f} inbox rows/s")
    console.print(f"machine: {os.cpu_count()} cores; reproduce with:\n{COMMAND}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop rate for the latency phase")
    parser.add_argument(
        "--variants",
        default="store only,+ processor,+ processor process",
        type=lambda text: [part.strip() for part in text.split(",")],
        help="durable variants to run beside the baseline (comma separated)",
    )
    args = parser.parse_args()
    report(asyncio.run(main_async(args)), args)


if __name__ == "__main__":
    main()

"""How many send requests per second the sandbox sustains, against a bare aiohttp server in the same run.

Each server runs in its own process (`wacamp sandbox serve --port 0 ...` for the sandbox, this script's
`--serve-bare` mode for the baseline); this process is the client: one aiohttp ClientSession, N concurrent
workers posting a Cloud template body to distinct recipients for a fixed time. Rounds alternate between
the servers; the table shows medians, and the server process's CPU time per request (less sensitive
than requests/s to other load on a shared machine).

Reproduce:
    .venv/bin/python benchmarks/sandbox.py                 # 3 rounds x 5 s, 64 concurrent requests
    .venv/bin/python benchmarks/sandbox.py --rounds 5 --seconds 10 --concurrency 64
    .venv/bin/python benchmarks/sandbox.py --client raw    # pipelining client: the server is the bottleneck
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web
from rich.console import Console
from rich.table import Table

LISTENING = re.compile(r"(?:sandbox listening on|bare listening on) (http://\S+)")
PHONE_ID = "100000000000001"
COMMAND = "  .venv/bin/python benchmarks/sandbox.py " + " ".join(sys.argv[1:])


def body_for(n: int) -> bytes:
    """A spring_sale send to the n-th distinct recipient."""
    return json.dumps(
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": f"+39347{n:07d}",
            "type": "template",
            "biz_opaque_callback_data": f"wacamp:{n}",
            "template": {
                "name": "spring_sale",
                "language": {"code": "it"},
                "components": [
                    {
                        "type": "body",
                        "parameters": [{"type": "text", "text": "Marco"}, {"type": "text", "text": "20%"}],
                    }
                ],
            },
        }
    ).encode()


# -- the baseline server (its own process) ---------------------------------------------------------


async def _bare_handler(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    answer = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": body.get("to")}],
        "messages": [{"id": "x"}],
    }
    return web.Response(body=json.dumps(answer).encode(), content_type="application/json")


async def _serve_bare() -> None:
    app = web.Application()
    app.router.add_post("/{version}/{phone}/messages", _bare_handler)
    app.router.add_post("/webhook", lambda _request: _ok())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"bare listening on http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


async def _ok() -> web.Response:
    return web.Response(text="ok")


# -- servers under test ----------------------------------------------------------------------------


@contextmanager
def server(command: list[str]) -> Iterator[tuple[str, psutil.Process]]:
    """Start a server process, yield its base URL and process handle, stop it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert process.stdout is not None
        match = LISTENING.search(process.stdout.readline())
        if not match:
            raise RuntimeError(f"{command} did not announce its URL")
        yield match.group(1), psutil.Process(process.pid)
    finally:
        process.terminate()
        process.communicate(timeout=20)


def wacamp() -> str:
    return str(Path(sys.executable).parent / "wacamp")


def sandbox_command(*extra: str) -> list[str]:
    return [wacamp(), "sandbox", "serve", "--port", "0", *extra]


# -- the client ------------------------------------------------------------------------------------


async def drive(base_url: str, *, seconds: float, concurrency: int, offset: int) -> tuple[float, int]:
    """Post for `seconds` with `concurrency` workers; (requests/s, non-200 answers)."""
    url = f"{base_url}/v23.0/{PHONE_ID}/messages"
    headers = {"Authorization": "Bearer sandbox-token", "Content-Type": "application/json"}
    counter = iter(range(offset, offset + 10**8))
    done = 0
    refused = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, refused
        while time.perf_counter() < deadline:
            async with session.post(url, data=body_for(next(counter)), headers=headers) as response:
                await response.read()
                done += 1
                refused += response.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done / elapsed, refused


def raw_request(base_url: str, n: int) -> bytes:
    """One complete HTTP/1.1 request (headers and body) for the n-th recipient."""
    body = body_for(n)
    host = base_url.removeprefix("http://")
    head = (
        f"POST /v23.0/{PHONE_ID}/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sandbox-token\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def drive_raw(base_url: str, *, seconds: float, concurrency: int, offset: int) -> tuple[float, int]:
    """Like `drive`, with a minimal pipelining HTTP client (4 requests in flight per connection), so
    the client costs a fraction of the server and the server's own capacity shows."""
    depth = 4
    host, port = base_url.removeprefix("http://").split(":")
    counter = iter(range(offset, offset + 10**8))
    done = 0
    refused = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal done, refused
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                writer.write(b"".join(raw_request(base_url, next(counter)) for _ in range(depth)))
                for _ in range(depth):
                    refused += await _read_answer(reader) != 200
                    done += 1
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(max(1, concurrency // depth))))
    return done / (time.perf_counter() - started), refused


def measure(command: list[str], *, args: argparse.Namespace, offset: int) -> tuple[float, float, int]:
    """(requests/s, server CPU µs per request, non-200 answers) for one server after a short warm-up."""
    drive_fn = drive_raw if args.client == "raw" else drive
    with server(command) as (base_url, process):
        asyncio.run(drive_fn(base_url, seconds=0.5, concurrency=args.concurrency, offset=offset + 9 * 10**6))
        cpu_before = sum(process.cpu_times()[:2])
        rate, bad = asyncio.run(
            drive_fn(base_url, seconds=args.seconds, concurrency=args.concurrency, offset=offset)
        )
        cpu_s = sum(process.cpu_times()[:2]) - cpu_before
    return rate, cpu_s / (rate * args.seconds) * 1e6, bad


def run(args: argparse.Namespace) -> None:
    console = Console(width=120)
    with server([sys.executable, __file__, "--serve-bare"]) as (sink_url, _sink):
        cases = {
            "bare aiohttp server (baseline)": [sys.executable, __file__, "--serve-bare"],
            "sandbox, limits off": sandbox_command("--mps", "0", "--pair-spacing-s", "0"),
            "sandbox, limits on (mps 1000000, pair 6 s)": sandbox_command("--mps", "1000000"),
            "sandbox, limits off + status webhooks": sandbox_command(
                "--mps", "0", "--pair-spacing-s", "0", "--webhook-url", f"{sink_url}/webhook"
            ),
        }
        results: dict[str, list[float]] = {name: [] for name in cases}
        cpu_us: dict[str, list[float]] = {name: [] for name in cases}
        refused: dict[str, int] = dict.fromkeys(cases, 0)
        for round_index in range(args.rounds):
            for name, command in cases.items():
                rate, cpu, bad = measure(command, args=args, offset=round_index * 10**7)
                results[name].append(rate)
                cpu_us[name].append(cpu)
                refused[name] += bad
                console.print(
                    f"round {round_index + 1}: {name}: {rate:,.0f} req/s, {cpu:,.0f} CPU µs/req", style="dim"
                )
    baseline = statistics.median(results["bare aiohttp server (baseline)"])
    table = Table(
        title=f"Send requests/s ({args.client} client, {args.concurrency} concurrent, "
        f"{args.rounds} x {args.seconds:g} s, median)"
    )
    for column in ("server", "requests/s", "vs baseline", "server CPU µs/request", "non-200 answers"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for name, rates in results.items():
        median = statistics.median(rates)
        cpu = statistics.median(cpu_us[name])
        table.add_row(name, f"{median:,.0f}", f"{median / baseline:.2f}", f"{cpu:,.0f}", str(refused[name]))
    console.print(table)
    console.print(f"Reproduce:\n{COMMAND}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--client",
        choices=("aiohttp", "raw"),
        default="aiohttp",
        help="aiohttp: one ClientSession, like the engine; raw: a minimal pipelining client that costs far "
        "less than the server, so the server is the bottleneck",
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(_serve_bare())
    else:
        run(args)


if __name__ == "__main__":
    main()

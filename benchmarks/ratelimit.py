"""Our rate limiter against asyncio-throttle and aiolimiter, with 100 tasks waiting for permits.

For each limiter and rate R: achieved permits/s, the most permits in any 1 s window (must be <= R),
the most in any 100 ms window (smooth output is about R/10), and the CPU time spent per permit.
Each permit is stamped by the waiting task right after it got it (as a sender would start its
request), so the windows are measured where the platform would see them, not inside the limiter.
The achieved rate counts permits after a 0.5 s warm-up.
Ratios are against our limiter measured in the same run.

    .venv/bin/python benchmarks/ratelimit.py                 # 70, 250, 1000/s, 3 x 3.5 s each
    .venv/bin/python benchmarks/ratelimit.py --rates 80 --seconds 5 --repeats 1

asyncio-throttle and aiolimiter are dev-only dependencies used here and nowhere else.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import click
from aiolimiter import AsyncLimiter
from asyncio_throttle import Throttler  # type: ignore[import-untyped]
from rich.console import Console
from rich.table import Table

from scheduler.sending.ratelimit import RateLimiter

WAITERS = 100
#: The achieved rate is counted after this warm-up (a full bucket or a first batch would flatter it).
WARMUP_S = 0.5


@dataclass(frozen=True)
class Measure:
    """One run of one limiter at one rate."""

    achieved_per_s: float
    busiest_1s: int
    busiest_100ms: int
    cpu_us_per_permit: float


def busiest(stamps: Sequence[float], window_s: float) -> int:
    """Most stamps in any half-open window of `window_s` seconds."""
    best, left = 0, 0
    for right, stamp in enumerate(stamps):
        while stamps[left] + window_s <= stamp:
            left += 1
        best = max(best, right - left + 1)
    return best


class _Ours:
    """Our limiter behind the `async with` shape the peers use."""

    def __init__(self, rate: float) -> None:
        self.limiter = RateLimiter(rate_per_s=rate)

    async def __aenter__(self) -> None:
        await self.limiter.acquire()

    async def __aexit__(self, *exc: object) -> None:
        return None


LIMITERS: dict[str, Callable[[float], AbstractAsyncContextManager[object]]] = {
    "wacamp RateLimiter (GCRA + 1 s cap)": _Ours,
    "asyncio-throttle Throttler(R, period=1)": lambda rate: Throttler(rate_limit=int(rate), period=1.0),
    "aiolimiter AsyncLimiter(R, 1)": lambda rate: AsyncLimiter(rate, 1),
}


async def _run(
    make: Callable[[float], AbstractAsyncContextManager[object]], rate: float, seconds: float
) -> Measure:
    limiter = make(rate)
    stamps: list[float] = []
    began = time.monotonic()
    deadline = began + seconds

    async def waiter() -> None:
        while time.monotonic() < deadline:
            async with limiter:
                stamps.append(time.monotonic())

    cpu_start = time.process_time()
    await asyncio.gather(*(waiter() for _ in range(WAITERS)))
    cpu_s = time.process_time() - cpu_start
    stamps = sorted(s for s in stamps if s < deadline)
    steady = [s for s in stamps if s >= began + WARMUP_S]
    return Measure(
        achieved_per_s=len(steady) / (seconds - WARMUP_S),
        busiest_1s=busiest(stamps, 1.0),
        busiest_100ms=busiest(stamps, 0.1),
        cpu_us_per_permit=cpu_s / len(stamps) * 1e6,
    )


def measure(
    make: Callable[[float], AbstractAsyncContextManager[object]], rate: float, *, seconds: float, repeats: int
) -> Measure:
    """Median achieved rate and CPU over `repeats` runs; the busiest windows are the worst seen."""
    runs = [asyncio.run(_run(make, rate, seconds)) for _ in range(repeats)]
    return Measure(
        achieved_per_s=statistics.median(r.achieved_per_s for r in runs),
        busiest_1s=max(r.busiest_1s for r in runs),
        busiest_100ms=max(r.busiest_100ms for r in runs),
        cpu_us_per_permit=statistics.median(r.cpu_us_per_permit for r in runs),
    )


def table(results: dict[tuple[str, float], Measure], rates: Sequence[float], command: str) -> Table:
    out = Table(title=f"Rate limiters, {WAITERS} waiting tasks", caption=command)
    for column in (
        "limiter",
        "R/s",
        "achieved/s",
        "× R",
        "busiest 1 s",
        "busiest 100 ms",
        "CPU µs/permit",
        "CPU × ours",
    ):
        out.add_column(column, justify="left" if column == "limiter" else "right")
    ours = next(iter(LIMITERS))
    for rate in rates:
        base = results[(ours, rate)]
        for name in LIMITERS:
            m = results[(name, rate)]
            out.add_row(
                name,
                f"{rate:g}",
                f"{m.achieved_per_s:.1f}",
                f"{m.achieved_per_s / rate:.3f}",
                f"{m.busiest_1s}" + (" !" if m.busiest_1s > rate else ""),
                f"{m.busiest_100ms} (ideal {rate / 10:g})",
                f"{m.cpu_us_per_permit:.0f}",
                f"{m.cpu_us_per_permit / base.cpu_us_per_permit:.2f}",
            )
        out.add_section()
    return out


@click.command()
@click.option("--rates", default="70,250,1000", show_default=True, help="Comma-separated permits per second.")
@click.option("--seconds", default=3.5, show_default=True, help="Length of each run.")
@click.option("--repeats", default=3, show_default=True, help="Runs per limiter and rate.")
def main(rates: str, seconds: float, repeats: int) -> None:
    """Measure the three limiters and print the table (a `!` marks a 1 s window above R)."""
    rate_list = [float(r) for r in rates.split(",")]
    err = Console(stderr=True)
    results: dict[tuple[str, float], Measure] = {}
    for rate in rate_list:
        for name, make in LIMITERS.items():
            err.print(f"{name} at {rate:g}/s …")
            results[(name, rate)] = measure(make, rate, seconds=seconds, repeats=repeats)
    command = ".venv/bin/python benchmarks/ratelimit.py " + " ".join(sys.argv[1:])
    Console(width=150).print(table(results, rate_list, command.strip()))


if __name__ == "__main__":
    main()

"""Benchmark: what the claimed -> sending protocol (issue #13) costs the engine, against the code before it.

The engine before the protocol (commit 17c06b7: a claim marked its rows `sending` at once) and the
engine of this checkout each run `benchmarks/throughput.py` of their own tree (their engine against a
bare aiohttp loop, 20,000 recipients, 3 rounds, SQLite, limits off), interleaved old, new, old, new …
so both see the same machine. The old tree is a temporary `git worktree` of that commit, run with
this checkout's virtualenv (`PYTHONPATH` points at it). Target: the new engine's rate >= 0.9 x the
old one's. Reproduce with::

    .venv/bin/python benchmarks/protocol_cost.py                 # 3 pairs
    .venv/bin/python benchmarks/protocol_cost.py --pairs 5 --old 17c06b7
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
#: The last commit whose claims marked rows `sending` directly (before issue #13's protocol).
OLD_COMMIT = "17c06b7"
ENGINE_ROW = re.compile(r"wacamp engine[^│]*│\s*([\d,]+)\s*│\s*([\d.]+)")
BARE_ROW = re.compile(r"bare aiohttp loop[^│]*│\s*([\d,]+)")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_tree(tree: Path) -> tuple[float, float, float]:
    """(engine msg/s, bare msg/s, engine / bare) of one throughput run of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "benchmarks/throughput.py", "--rss-sizes", "", "--repeats", "3"]
    out = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    engine, bare = ENGINE_ROW.search(out), BARE_ROW.search(out)
    assert engine and bare, out[-2000:]
    rate, base = float(engine[1].replace(",", "")), float(bare[1].replace(",", ""))
    return rate, base, rate / base


def old_tree(workdir: Path, commit: str) -> Path:
    """A worktree of `commit` whose benchmark finds a `wacamp` console script where it looks."""
    tree = workdir / "old"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=REPO, check=True)
    shim = tree / ".venv" / "bin" / "wacamp"
    shim.parent.mkdir(parents=True)
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={tree} exec {sys.executable} -m wacamp "$@"\n')
    shim.chmod(0o755)
    return tree


@click.command()
@click.option("--pairs", default=3, show_default=True, help="Old/new runs, interleaved.")
@click.option(
    "--old", "commit", default=OLD_COMMIT, show_default=True, help="The commit before the protocol."
)
def main(pairs: int, commit: str) -> None:
    rows: list[tuple[int, str, tuple[float, float, float], str]] = []
    with tempfile.TemporaryDirectory(prefix="wacamp-protocol-") as tmp:
        tree = old_tree(Path(tmp), commit)
        try:
            for pair in range(1, pairs + 1):
                for name, path in ((f"old ({commit})", tree), ("new (this checkout)", REPO)):
                    start = load()
                    rows.append((pair, name, run_tree(path), f"{start} → {load()}"))
                    print(f"pair {pair} {name}: {rows[-1][2][0]:,.0f} msg/s", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    print_table(rows)


def print_table(rows: list[tuple[int, str, tuple[float, float, float], str]]) -> None:
    table = Table(
        title="engine rate, old protocol vs new (SQLite, limits off, 20k recipients, 3 rounds each)"
    )
    for column in ("pair", "engine", "msg/s", "bare loop msg/s", "vs bare", "load 1/5/15 min start → end"):
        table.add_column(column)
    for pair, name, (rate, base, ratio), loads in rows:
        table.add_row(str(pair), name, f"{rate:,.0f}", f"{base:,.0f}", f"{ratio:.2f}", loads)
    old = statistics.median(r[2][0] for r in rows if r[1].startswith("old"))
    new = statistics.median(r[2][0] for r in rows if r[1].startswith("new"))
    console = Console()
    console.print(table)
    console.print(f"median engine rate: new {new:,.0f} / old {old:,.0f} = {new / old:.2f}x (target >= 0.9x)")
    console.print("reproduce: .venv/bin/python benchmarks/protocol_cost.py")


if __name__ == "__main__":
    main()

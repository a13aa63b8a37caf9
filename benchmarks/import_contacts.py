"""How fast `wacamp contacts import` streams a big CSV, and whether its memory stays flat.

For each size N the script writes a CSV of N distinct, valid Italian mobile numbers (three spellings:
``+39 333 1234567``, ``333 1234567`` and ``0039 333 1234567``), a consent column and three attributes,
then runs the real CLI in a subprocess on a fresh database: a first import (every row new) and a
second one of the same file (every row an update). The child's CPU time comes from ``os.wait4``
(the CLI process and the phone-parsing workers it started and waited for); its peak RSS is its own
VmHWM, sampled while it runs (``ru_maxrss`` would carry this parent's size across the exec; the
workers' memory is not in it). Baselines measured in the same run, in this process, on the same
file: a bare ``csv.reader`` pass, and ``phonenumbers.parse`` + ``is_valid_number`` over the numbers
(the per-row work no importer can skip). rows/s per CPU second is less sensitive than wall-clock
rows/s to other load on a shared machine; each row shows the load average at its start and end.
Files of 4 MB and more are parsed by a process per core (`campaigns.contacts.parsing`).

Reproduce:
    .venv/bin/python benchmarks/import_contacts.py                       # 100,000 and 1,000,000 rows, SQLite
    .venv/bin/python benchmarks/import_contacts.py --sizes 100000 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

WACAMP = str(Path(sys.executable).parent / "wacamp")
COMMAND = "  .venv/bin/python benchmarks/import_contacts.py " + " ".join(sys.argv[1:])
#: Italian mobile prefixes phonenumbers accepts as valid with any 7 digits after them.
PREFIXES = (
    "320",
    "324",
    "327",
    "328",
    "329",
    "330",
    "331",
    "333",
    "334",
    "335",
    "336",
    "337",
    "338",
    "339",
    "340",
    "342",
    "345",
    "346",
    "347",
    "348",
    "349",
    "366",
    "368",
    "380",
    "388",
    "389",
    "391",
    "392",
)
CITIES = ("Roma", "Milano", "Napoli", "Torino", "Palermo", "Genova", "Bologna", "Firenze")


def number(i: int) -> str:
    """The i-th distinct mobile number, in one of three spellings."""
    prefix = PREFIXES[i % len(PREFIXES)]
    rest = f"{(i // len(PREFIXES)) * 7919 % 10_000_000:07d}"
    return (f"+39 {prefix} {rest}", f"{prefix} {rest}", f"0039 {prefix}{rest}")[i % 3]


def write_csv(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name", "city", "segment", "consent"])
        for i in range(rows):
            writer.writerow(
                [
                    number(i),
                    f"Name{i % 997}",
                    CITIES[i % len(CITIES)],
                    "gold" if i % 5 else "new",
                    "yes" if i % 4 else "no",
                ]
            )


@dataclass
class Measure:
    case: str
    rows: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float | None = None
    note: str = ""
    load: tuple[float, float] = (0.0, 0.0)


def csv_baseline(path: Path) -> Measure:
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with open(path, encoding="utf-8", newline="") as handle:
        rows = sum(1 for _ in csv.reader(handle)) - 1
    return Measure(
        "csv.reader pass (baseline)", rows, time.perf_counter() - start_wall, time.process_time() - start_cpu
    )


def phonenumbers_baseline(path: Path, *, limit: int) -> Measure:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        numbers = [row[0] for _, row in zip(range(limit), reader, strict=False)]
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    valid = sum(1 for raw in numbers if phonenumbers.is_valid_number(phonenumbers.parse(raw, "IT")))
    assert valid == len(numbers), "the generator made an invalid number"
    return Measure(
        "phonenumbers parse+is_valid (baseline)",
        len(numbers),
        time.perf_counter() - start_wall,
        time.process_time() - start_cpu,
    )


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[dict[str, object], float, float, float]:
    """Run wacamp; its JSON output, wall s, CPU s and peak RSS in MB (this child only)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [WACAMP, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peak_kb = [0]
    sampler = threading.Thread(target=_sample_hwm, args=(child.pid, peak_kb), daemon=True)
    sampler.start()
    out, err = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"wacamp {' '.join(args)} failed: {err.decode()}")
    data = json.loads(out) if out.strip().startswith(b"{") else {}
    return data, wall, usage.ru_utime + usage.ru_stime, (peak_kb[0] or usage.ru_maxrss) / 1024


def _sample_hwm(pid: int, peak_kb: list[int]) -> None:
    """Keep the child's VmHWM (its own peak RSS, in kB) until it exits."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            lines = status.read_text().splitlines()
        except OSError:
            return
        hwm = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
        if not hwm:  # a zombie: exited, not yet reaped
            return
        peak_kb[0] = max(peak_kb[0], hwm[0])
        time.sleep(0.1)


@contextmanager
def fresh_database(workdir: Path, postgres: str | None) -> Iterator[str]:
    """The URL of an empty database: a SQLite file in workdir, or a PostgreSQL database dropped after."""
    if not postgres:
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    admin_url = sa.make_url(postgres).set(drivername="postgresql+psycopg")
    name = f"wacamp_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def import_twice(path: Path, rows: int, *, workdir: Path, postgres: str | None) -> list[Measure]:
    with fresh_database(workdir, postgres) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
        env["WACAMP_DATABASE_URL"] = url
        run_cli("db", "upgrade", env=env, cwd=workdir)
        return [_import(path, rows, case, expect, env=env, cwd=workdir) for case, expect in CASES]


CASES = (("wacamp contacts import (new)", "imported"), ("wacamp contacts import (again)", "updated"))


def _import(path: Path, rows: int, case: str, expect: str, *, env: dict[str, str], cwd: Path) -> Measure:
    args = ("contacts", "import", str(path), "--list", "bench", "--region", "IT", "--json")
    load_start = os.getloadavg()[0]
    data, wall, cpu, rss = run_cli(*args, env=env, cwd=cwd)
    assert data[expect] == rows and data["rejected"] == 0, data
    return Measure(case, rows, wall, cpu, rss, f"{expect} {data[expect]:,}", (load_start, os.getloadavg()[0]))


def table(measures: list[Measure], *, backend: str) -> Table:
    result = Table(title=f"contact import, {backend}, {os.cpu_count()} cores", title_justify="left")
    columns = (
        "case",
        "rows",
        "wall s",
        "rows/s",
        "CPU s",
        "rows/CPU s",
        "peak RSS MB",
        "note",
        "load start→end",
    )
    for column in columns:
        result.add_column(column, justify="left" if column in ("case", "note") else "right")
    for m in measures:
        result.add_row(
            m.case,
            f"{m.rows:,}",
            f"{m.wall_s:.1f}",
            f"{m.rows / m.wall_s:,.0f}",
            f"{m.cpu_s:.1f}",
            f"{m.rows / m.cpu_s:,.0f}",
            f"{m.peak_rss_mb:.0f}" if m.peak_rss_mb else "",
            m.note,
            "{:.1f}→{:.1f}".format(*m.load) if m.load != (0.0, 0.0) else "",
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument(
        "--postgres", help="admin URL: import into a fresh PostgreSQL database instead of SQLite"
    )
    args = parser.parse_args()
    console = Console(width=150)
    measures: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="wacamp-bench-") as temp:
        workdir = Path(temp)
        for rows in (int(size) for size in args.sizes.split(",")):
            path = workdir / f"contacts-{rows}.csv"
            write_csv(path, rows)
            size_mb = path.stat().st_size / 1e6
            measures.append(csv_baseline(path))
            measures[-1].note = f"{size_mb:.0f} MB file"
            measures.append(phonenumbers_baseline(path, limit=min(rows, 100_000)))
            measures += import_twice(path, rows, workdir=workdir, postgres=args.postgres)
            console.print(f"[dim]{rows:,} rows done[/dim]", highlight=False)
    console.print(table(measures, backend="PostgreSQL" if args.postgres else "SQLite"))
    console.print(f"Reproduce:\n{COMMAND}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()

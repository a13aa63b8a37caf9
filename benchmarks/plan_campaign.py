"""Benchmark: planning a campaign of 100,000 and 1,000,000 recipients (time and peak RSS).

For each size a fresh database is seeded directly with bulk Core inserts (contacts with a first_name,
one list), then two child processes each measure their own wall time and peak RSS:

- baseline: a bare Core bulk insert of the same number of ledger-shaped rows (same columns, a body
  of the same size, same batch size) into a copy of the seeded database: the floor of the write path;
- plan: `campaigns.planning.planner.plan_campaign` (render, hash, freeze the body, dedup by constraint).

With ``--where EXPR`` a third child plans the same list through a segment (issue #15) on its own copy
of the seeded database; the default expression keeps every contact (``city = "Roma"``), so the row
shows what evaluating the segment costs on top of planning the whole list (the "segment / plan" ratio).

Memory is flat when the 1M peak RSS is about the 100k one. Peak RSS is the child's own high-water mark
(VmHWM: ``ru_maxrss`` would carry the seeding parent's size across the exec). The machine's load
average is shown at the start and end of each row, so a row measured on a busy machine shows it.
Seeding is itself a bulk insert (contacts by `campaigns.core.bulk`, list members by one
``INSERT … SELECT``), so 10 million recipients take minutes, not an hour. Reproduce with::

    .venv/bin/python benchmarks/plan_campaign.py                    # SQLite, 100k and 1M
    .venv/bin/python benchmarks/plan_campaign.py --sizes 10000000 --no-baseline   # 10M: time and peak RSS
    .venv/bin/python benchmarks/plan_campaign.py --sizes 100000 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/plan_campaign.py --sizes 100000 --where 'city = "Roma"'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine, make_url

from campaigns.core.bulk import insert_ignoring_conflicts
from campaigns.core.db import make_engine, upgrade, write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.definitions import CampaignDefinition, create_campaign
from campaigns.planning.planner import DEFAULT_CHUNK, plan_campaign
from campaigns.templates.catalog import parse_templates, store_templates

SEED_BATCH = 20_000
TEMPLATE = {
    "name": "promo",
    "language": "it",
    "status": "APPROVED",
    "category": "MARKETING",
    "components": [
        {"type": "BODY", "text": "Ciao {{1}}, usa il codice {{2}} entro domenica!"},
        {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Stop"}]},
    ],
}


def _settings() -> Settings:
    return load_settings(environ={})[0]


def seed(engine: Engine, size: int, where: str | None = None) -> None:
    """`size` consenting contacts on one list, written with bulk Core inserts; campaign `bench`
    (and `bench-where` through the segment `where`, when given)."""
    now = utcnow()
    with write_transaction(engine) as conn:
        list_id = conn.execute(
            sa.insert(LIST).values(name="bench", created_at=now).returning(LIST.c.id)
        ).scalar_one()
    attributes = _attributes_for(engine)
    constants = {"consent": True, "created_at": now, "updated_at": now}
    for start in range(0, size, SEED_BATCH):
        contacts = [
            {
                "id": n + 1,
                "phone": f"+39347{n:07d}",
                "attributes": attributes({"first_name": f"Nome{n}", "city": "Roma"}),
            }
            for n in range(start, min(size, start + SEED_BATCH))
        ]
        with write_transaction(engine) as conn:
            insert_ignoring_conflicts(conn, CONTACT, contacts, constants=constants)
    members = sa.select(sa.literal(list_id), CONTACT.c.id, sa.literal(now, MEMBER.c.added_at.type))
    with write_transaction(engine) as conn:
        conn.execute(sa.insert(MEMBER).from_select(["list_id", "contact_id", "added_at"], members))
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('contact', 'id'), (SELECT max(id) FROM contact))"
            )
            conn.exec_driver_sql("ANALYZE")
    store_templates(engine, parse_templates([TEMPLATE], source="bench"), mark_missing_gone=False)
    definition = CampaignDefinition(
        name="bench",
        list_name="bench",
        template_name="promo",
        language="it",
        params={"1": "{first_name}", "2": "SPRING20"},
        button_payloads={"0": "STOP"},
    )
    create_campaign(engine, settings=_settings(), definition=definition)
    if where is not None:
        segmented = replace(definition, name="bench-where", where=where)
        create_campaign(engine, settings=_settings(), definition=segmented)


def _attributes_for(engine: Engine) -> Any:
    """The attributes value as the bulk insert takes it: a dict (SQLite), psycopg's Json (COPY)."""
    if engine.dialect.name == "postgresql":
        from psycopg.types.json import Json

        return Json
    return lambda value: value


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM); ru_maxrss keeps the parent's across exec on Linux."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _cpu_s() -> float:
    """CPU seconds of this process (the machine is shared: wall time includes waiting for a core)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_plan(url: str, campaign: str = "bench") -> dict[str, Any]:
    engine = make_engine(url)
    settings = _settings()
    started, cpu = time.perf_counter(), _cpu_s()
    outcome = plan_campaign(engine, settings=settings, campaign=campaign)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu_s": _cpu_s() - cpu, "rows": outcome.added, "peak_rss_mb": _peak_rss_mb()}


def child_baseline(url: str, size: int) -> dict[str, Any]:
    """Insert `size` ledger-shaped rows with the same batch size, nothing computed per row."""
    engine = make_engine(url)
    body = json.dumps({"messaging_product": "whatsapp", "x": "y" * 330})
    now = utcnow()
    started, cpu = time.perf_counter(), _cpu_s()
    with engine.connect() as conn:
        campaign_id = conn.execute(sa.text("SELECT id FROM campaign WHERE name = 'bench'")).scalar_one()
    for start in range(0, size, DEFAULT_CHUNK):
        rows = [
            {
                "id": n + 1,
                "campaign_id": campaign_id,
                "contact_id": n + 1,
                "phone": f"+39347{n:07d}",
                "content_hash": f"{n:064d}",
                "dedup_hash": f"{n:064d}",
                "state": "planned",
                "body": body,
                "planned_at": now,
                "updated_at": now,
            }
            for n in range(start, min(size, start + DEFAULT_CHUNK))
        ]
        with write_transaction(engine) as conn:
            conn.execute(sa.insert(MESSAGE), rows)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu_s": _cpu_s() - cpu, "rows": size, "peak_rss_mb": _peak_rss_mb()}


def _run_child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _copy_postgres(admin_url: str, source: str, target: str) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')
    admin.dispose()


def _drop_postgres(admin_url: str, *names: str) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def measure_sqlite(
    size: int, workdir: Path, where: str | None = None, *, with_baseline: bool = True
) -> dict[str, dict[str, Any]]:
    seeded = workdir / f"seed-{size}.db"
    engine = make_engine(f"sqlite:///{seeded}")
    upgrade(engine)
    seed(engine, size, where)
    engine.dispose()
    baseline_db = workdir / f"baseline-{size}.db"
    shutil.copy(seeded, baseline_db)
    segment_db = workdir / f"segment-{size}.db"
    if where is not None:
        shutil.copy(seeded, segment_db)
    results = {"plan": _run_child("plan", f"sqlite:///{seeded}")}
    if with_baseline:
        results["baseline"] = _run_child("baseline", f"sqlite:///{baseline_db}", str(size))
    if where is not None:
        results["segment"] = _run_child("plan", f"sqlite:///{segment_db}", "bench-where")
    for path in workdir.glob(f"*-{size}.db*"):
        path.unlink()
    return results


def measure_postgres(
    size: int, admin_url: str, where: str | None = None, *, with_baseline: bool = True
) -> dict[str, dict[str, Any]]:
    admin = make_url(admin_url).set(drivername="postgresql+psycopg")
    admin_text = admin.render_as_string(hide_password=False)
    seed_name, base_name = f"wacamp_bench_{uuid.uuid4().hex[:8]}", f"wacamp_bench_{uuid.uuid4().hex[:8]}"
    segment_name = f"wacamp_bench_{uuid.uuid4().hex[:8]}"
    engine_admin = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{seed_name}"')
    engine_admin.dispose()
    try:
        seed_url = admin.set(database=seed_name).render_as_string(hide_password=False)
        engine = make_engine(seed_url)
        upgrade(engine)
        seed(engine, size, where)
        engine.dispose()
        _copy_postgres(admin_text, seed_name, base_name)
        if where is not None:
            _copy_postgres(admin_text, seed_name, segment_name)
        results = {"plan": _run_child("plan", seed_url)}
        if with_baseline:
            base_url = admin.set(database=base_name).render_as_string(hide_password=False)
            results["baseline"] = _run_child("baseline", base_url, str(size))
        if where is not None:
            segment_url = admin.set(database=segment_name).render_as_string(hide_password=False)
            results["segment"] = _run_child("plan", segment_url, "bench-where")
    finally:
        _drop_postgres(admin_text, seed_name, base_name, segment_name)
    return results


def _table(results: list[tuple[str, int, dict[str, dict[str, Any]]]]) -> Table:
    table = Table(title="Planning a campaign (plan vs bare bulk insert of the same rows)")
    for column in (
        "database",
        "recipients",
        "baseline s (CPU s)",
        "plan s (CPU s)",
        "plan rows/s",
        "plan / baseline",
        "baseline peak RSS MB",
        "plan peak RSS MB",
        "segment s (CPU s)",
        "segment / plan",
        "load start→end",
    ):
        table.add_column(column, justify="right")
    for database, size, result in results:
        base, plan = result.get("baseline"), result["plan"]
        table.add_row(
            database,
            f"{size:,}",
            f"{base['seconds']:.1f} ({base['cpu_s']:.1f})" if base else "-",
            f"{plan['seconds']:.1f} ({plan['cpu_s']:.1f})",
            f"{plan['rows'] / plan['seconds']:,.0f}",
            f"{plan['seconds'] / base['seconds']:.2f}x" if base else "-",
            f"{base['peak_rss_mb']:.0f}" if base else "-",
            f"{plan['peak_rss_mb']:.0f}",
            *_segment_cells(result),
            "{:.1f}→{:.1f}".format(*result["load"]),
        )
    return table


def _segment_cells(result: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Planning through the segment (--where), and its time over planning the whole list."""
    segment, plan = result.get("segment"), result["plan"]
    if segment is None:
        return "-", "-"
    return (
        f"{segment['seconds']:.1f} ({segment['cpu_s']:.1f})",
        f"{segment['seconds'] / plan['seconds']:.2f}x",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000", help="Comma-separated recipient counts.")
    parser.add_argument("--postgres", default="", help="Admin URL of a PostgreSQL server to run on as well.")
    parser.add_argument("--no-sqlite", action="store_true", help="Only PostgreSQL.")
    parser.add_argument(
        "--no-baseline", action="store_true", help="Only plan (10M: time and peak RSS, half the run)."
    )
    parser.add_argument(
        "--where",
        nargs="?",
        const='city = "Roma"',
        help='Also plan through this segment (bare --where: city = "Roma", which keeps everyone).',
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, url, *rest = args.child
        measured = child_plan(url, *rest) if kind == "plan" else child_baseline(url, int(rest[0]))
        print(json.dumps(measured))
        return
    console = Console(width=170)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    runs = [("SQLite", None)] * (not args.no_sqlite) + [("PostgreSQL", args.postgres)] * bool(args.postgres)
    with tempfile.TemporaryDirectory(prefix="wacamp-bench-") as tmp:
        os.chdir(tmp)  # no ./wacamp.toml of the developer's
        for size in sizes:
            for database, admin_url in runs:
                console.print(f"[dim]{database}, {size:,} recipients …[/]", highlight=False)
                load_start = os.getloadavg()[0]
                try:
                    result: dict[str, Any] = (
                        measure_postgres(size, admin_url, args.where, with_baseline=not args.no_baseline)
                        if admin_url
                        else measure_sqlite(size, Path(tmp), args.where, with_baseline=not args.no_baseline)
                    )
                except Exception as exc:  # a shared server may go away: report it, keep the other rows
                    console.print(f"[red]{database}, {size:,}: failed: {type(exc).__name__}: {exc}"[:300])
                    continue
                result["load"] = (load_start, os.getloadavg()[0])
                console.print(json.dumps({"database": database, "size": size, **result}), highlight=False)
                results.append((database, size, result))
    console.print(_table(results))
    console.print(
        f"reproduce: .venv/bin/python benchmarks/plan_campaign.py {' '.join(sys.argv[1:])}".rstrip()
    )


if __name__ == "__main__":
    main()

"""The soak: thousands of kill -9 points and a hundred thousand fuzzed inputs, outside CI (`make soak`).

    make soak                                                   # the full soak (hours on 2 cores)
    .venv/bin/python scripts/soak.py --kills 10 --fuzz 1000     # a smoke of it (minutes)
    .venv/bin/python scripts/soak.py --from-json build/soak.json  # render a recorded soak again
    .venv/bin/python scripts/soak.py --from-json a.json b.json    # merge parallel shards and render them

Kills: `wacamp campaigns run`, `run-due`, `worker` (each against `wacamp sandbox serve`, which counts
what it accepted per recipient) and `wacamp webhooks serve` (under signed POSTs, redelivered when
unanswered) are killed with SIGKILL at seeded random moments, on SQLite and on PostgreSQL, at each
rate given (80 and 1,000 msg/s), then restarted; every campaign is then completed with `run-due`
and audited against the sandbox (tests/reliability/support.py: duplicates, losses). For each kill it
records the rows that kill left in flight (`sending` rows that were not `sending` before it started:
what becomes `unknown`), so the page shows unknown per kill as a distribution. Fuzz: the hypothesis
tests tests/reliability/test_fuzz_*.py run with their `max_examples` scaled (WACAMP_FUZZ_SCALE) to
reach `--fuzz` inputs in all.

The figures go into docs/reliability.md between the soak markers, with the command that made them
(scripts/reliability_report.py keeps that section when it regenerates the rest of the page). The
JSON is written again after every kill round, so an interrupted soak keeps what it measured. A soak
can run as parallel shards (say `--backends sqlite --fuzz 0`, `--backends postgres --fuzz 0` and
`--kills 0`, each with its own `--json`); `--from-json` with all their files merges them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from soak_page import END_MARK, START_MARK, Scenario, merge_runs, render, write_section  # noqa: E402,F401

DEFAULT_JSON = REPO / "build" / "soak.json"
DEFAULT_OUT = REPO / "docs" / "reliability.md"
CI_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SENDERS = ("campaigns-run", "run-due", "worker")
COMMANDS = (*SENDERS, "webhooks-serve")
#: Kills per campaign: each round plans one campaign, kills its sender this often, then completes it.
KILLS_PER_ROUND = 10
#: The fuzz tests try about this many inputs at WACAMP_FUZZ_SCALE=1 (every tier).
FUZZ_BASE = 7_480


# ---------------------------------------------------------------- databases
@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh, migrated database URL for one round."""
    from campaigns.core.db import make_engine, upgrade

    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'wacamp.db'}"
        upgrade(make_engine(url))
        yield url
        return
    from tests.conftest import _fresh_postgres_database

    fresh = _fresh_postgres_database()
    url = next(fresh)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with contextlib.suppress(StopIteration):
            next(fresh)


# ------------------------------------------------------------ sending kills
def sender_args(command: str) -> list[str]:
    if command == "campaigns-run":
        return ["campaigns", "run", "soak"]
    if command == "worker":
        return ["worker", "--poll-s", "0.2", "--metrics-port", "0"]
    return ["run-due"]


async def kill_moment(process: Any, engine: Any, campaign_id: int, moved: int, rng: random.Random) -> None:
    """A seeded moment: a quarter while starting, the rest after a random time of this process's sending.

    `moved` is the campaign's rows out of `planned` before the process started: it has begun sending
    once there are more (a restarted process must claim rows itself, not find its predecessors').
    """
    from tests.reliability.crashing import _sleep_while_running, touched

    if rng.random() < 0.25:
        await _sleep_while_running(process, rng.uniform(0.0, 1.5))
        return
    deadline = time.monotonic() + 30
    while (
        process.returncode is None and touched(engine, campaign_id) == moved and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.01)
    await _sleep_while_running(process, rng.uniform(0.05, 1.5))


def sending_ids(engine: Any, campaign_id: int) -> set[int]:
    """Ids of the campaign's rows claimed (`sending`) and not settled."""
    import sqlalchemy as sa

    from tests.scheduling_support import MESSAGE

    with engine.connect() as conn:
        query = sa.select(MESSAGE.c.id).where(
            MESSAGE.c.campaign_id == campaign_id, MESSAGE.c.state == "sending"
        )
        return set(conn.scalars(query))


async def kill_round(scenario: Scenario, *, kills: int, rng: random.Random, workdir: Path, url: str) -> None:
    """Plan one campaign, kill its sender `kills` times at seeded moments, complete it, audit it."""
    from campaigns.core.db import make_engine
    from campaigns.core.dbtypes import utcnow
    from tests.reliability.crashing import run_due_until_completed, touched
    from tests.reliability.support import audit, kill9, served_sandbox, start
    from tests.scheduling_support import campaign_state, make_campaign, phones, sandbox_env, sandbox_settings

    engine = make_engine(url)
    recipients = phones(int(scenario.rate * (1.0 * kills + 2)))
    async with served_sandbox("--mps", "0", "--pair-spacing-s", "0", cwd=workdir) as sandbox:
        env = {
            **sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S=str(scenario.rate)),
            "WACAMP_DATABASE_URL": url,
            "WACAMP_DISPATCH__LEASE_S": "2",
            "WACAMP_DATABASE__JOURNAL_DIR": str(workdir / "state"),
        }
        settings = sandbox_settings(sandbox.base_url)
        cid = make_campaign(engine, settings, name="soak", recipients=recipients, scheduled_at=utcnow())
        for _ in range(kills):
            if campaign_state(engine, cid) == "completed":
                break
            before, moved = sending_ids(engine, cid), touched(engine, cid)
            process = await start(*sender_args(scenario.command), env=env, cwd=workdir)
            await kill_moment(process, engine, cid, moved, rng)
            if await kill9(process):
                scenario.kills += 1
                scenario.unknown_per_kill.append(len(sending_ids(engine, cid) - before))
        await run_due_until_completed(env=env, cwd=workdir, engine=engine, campaign_id=cid, attempts=200)
        result = audit(engine, [cid], await sandbox.stats())
    engine.dispose()
    scenario.recipients += len(recipients)
    scenario.duplicates += result.duplicates
    scenario.losses += len(result.unrecorded) + len(result.phantom) + len(result.unsettled)
    scenario.unknown += result.by_state.get("unknown", 0)
    scenario.unknown_accepted += result.unknown_accepted


async def webhook_round(scenario: Scenario, *, kills: int, seed: int, workdir: Path, url: str) -> None:
    """`webhooks serve` killed `kills` times under signed POSTs; acknowledged bodies must all be stored."""
    import aiohttp
    import sqlalchemy as sa

    from campaigns.core.db import make_engine
    from campaigns.core.models import WEBHOOK_INBOX_TABLE as INBOX
    from tests.ledger_factory import seed_campaign
    from tests.reliability.support import free_port
    from tests.reliability.test_crash_webhooks import Platform, bodies, kill_and_restart

    engine = make_engine(url)
    count = 100 * kills
    seeded = seed_campaign(engine, count=count, start=None, phones=None)
    port = free_port()
    platform = Platform(url=f"http://127.0.0.1:{port}/webhook", total=count)
    for item in bodies(seeded):
        platform.pending.put_nowait(item)
    env = {"WACAMP_DATABASE_URL": url}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        clients = [asyncio.create_task(platform.deliver(session)) for _ in range(8)]
        try:
            scenario.kills += await kill_and_restart(
                platform, port=port, env=env, cwd=workdir, kills=kills, seed=seed
            )
        finally:
            for client in clients:
                client.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
    with engine.connect() as conn:
        stored = {row.body for row in conn.execute(sa.select(INBOX.c.body))}
    engine.dispose()
    scenario.webhook_posts += platform.attempts
    scenario.webhook_acknowledged += len(platform.acknowledged)
    scenario.webhook_lost_after_200 += sum(
        1 for body in platform.acknowledged.values() if body.decode() not in stored
    )


async def one_round(scenario: Scenario, *, kills: int, rng: random.Random, workdir: Path, url: str) -> None:
    if scenario.command == "webhooks-serve":
        await webhook_round(scenario, kills=kills, seed=rng.randrange(10**9), workdir=workdir, url=url)
    else:
        await kill_round(scenario, kills=kills, rng=rng, workdir=workdir, url=url)


async def run_scenario(scenario: Scenario, *, kills: int, seed: int, checkpoint: Callable[[], None]) -> None:
    """Kill rounds until `kills` kills landed; `checkpoint` after each round."""
    rng = random.Random(seed)
    while scenario.kills < kills:
        batch = min(KILLS_PER_ROUND, kills - scenario.kills)
        before = scenario.kills
        started = time.monotonic()
        with (
            tempfile.TemporaryDirectory(prefix="wacamp-soak-") as tmp,
            database(scenario.backend, Path(tmp)) as url,
        ):
            try:
                await one_round(scenario, kills=batch, rng=rng, workdir=Path(tmp), url=url)
            except Exception as exc:  # a finding (an audit failed, a command broke): keep it, go on soaking
                scenario.failures.append(f"{type(exc).__name__}: {str(exc)[-300:]}")
                print(f"  round failed: {scenario.failures[-1]}", file=sys.stderr, flush=True)
        scenario.seconds += time.monotonic() - started
        checkpoint()
        if scenario.kills == before:  # no kill landed (the work ran out too fast, or the round broke)
            break
        print(f"  {scenario.name}: {scenario.kills}/{kills} kills", file=sys.stderr, flush=True)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    made = []
    for backend in args.backends:
        for command in args.commands:
            rates = [args.rates[0]] if command == "webhooks-serve" else args.rates
            made += [Scenario(command=command, backend=backend, rate=rate) for rate in rates]
    return made


async def kill_soak(args: argparse.Namespace, save: Callable[[list[Scenario]], None]) -> list[Scenario]:
    """Every scenario's share of `args.kills`; `save` gets the scenarios begun so far after each round."""
    planned = scenarios(args)
    shares = [args.kills // len(planned) + (i < args.kills % len(planned)) for i in range(len(planned))]
    for i, (scenario, kills) in enumerate(zip(planned, shares, strict=True)):
        print(f"kills: {scenario.name}, {kills} kills", file=sys.stderr, flush=True)
        checkpoint = functools.partial(save, planned[: i + 1])
        await run_scenario(scenario, kills=kills, seed=args.seed * 1000 + i, checkpoint=checkpoint)
    return planned


# --------------------------------------------------------------------- fuzz
def fuzz_soak(args: argparse.Namespace, record_path: Path) -> dict[str, int]:
    """The fuzz tests, scaled to about `args.fuzz` inputs; their recorded counters summed."""
    scale = max(args.fuzz / FUZZ_BASE, 0.001)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow"]
    # scaled examples take scaled time: the tests without a timeout of their own get 120 s times the scale
    command.append(f"--timeout={max(120, round(120 * scale))}")
    command += sorted(
        str(p.relative_to(REPO)) for p in (REPO / "tests" / "reliability").glob("test_fuzz_*.py")
    )
    env = {**os.environ, "WACAMP_FUZZ_SCALE": f"{scale:.4f}", "WACAMP_RELIABILITY_RECORD": str(record_path)}
    print("fuzz:", " ".join(command), f"(WACAMP_FUZZ_SCALE={scale:.4f})", file=sys.stderr, flush=True)
    code = subprocess.run(command, cwd=REPO, env=env, check=False).returncode
    totals: dict[str, int] = {"pytest_exit": code}
    for test in json.loads(record_path.read_text()).values():
        for key, value in test["counts"].items():
            totals[key] = totals.get(key, 0) + value
        totals["tests_failed"] = totals.get("tests_failed", 0) + int(test["outcome"] != "passed")
    return totals


# --------------------------------------------------------------------- main
def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--kills", type=int, default=1000, help="kill -9 points in all, spread over the scenarios"
    )
    parser.add_argument("--rates", default="80,1000", help="sending rates in msg/s, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite and/or postgres")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="which commands to kill")
    parser.add_argument("--fuzz", type=int, default=100_000, help="fuzzed inputs in all (0: no fuzzing)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the soak's figures are kept")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the page the figures go into")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="render a recorded soak instead of running one (several files: parallel shards, merged)",
    )
    args = parser.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",") if r]
    args.backends = [b for b in args.backends.split(",") if b]
    args.commands = [c for c in args.commands.split(",") if c]
    unknown = set(args.commands) - set(COMMANDS)
    if unknown or set(args.backends) - {"sqlite", "postgres"}:
        parser.error(f"unknown commands or backends: {sorted(unknown)} {args.backends}")
    return args


def postgres_ready() -> bool:
    if os.environ.get("WACAMP_TEST_POSTGRES_URL"):
        return True
    ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False).returncode == 0
    if ready:
        os.environ["WACAMP_TEST_POSTGRES_URL"] = CI_POSTGRES_URL
    return ready


def soak(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run the soak, writing its JSON after every kill round and at the end."""
    if "postgres" in args.backends and not postgres_ready():
        sys.exit("PostgreSQL is not reachable: set WACAMP_TEST_POSTGRES_URL or pass --backends sqlite")
    started = time.monotonic()
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def save(kills: list[Scenario], fuzz: dict[str, int] | None = None) -> dict[str, Any]:
        data = record(argv, time.monotonic() - started, kills, fuzz or {})
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        return data

    kills = asyncio.run(kill_soak(args, save)) if args.kills else []
    fuzz = fuzz_soak(args, args.json.with_suffix(".fuzz.json")) if args.fuzz else {}
    return save(kills, fuzz)


def record(argv: list[str], seconds: float, kills: list[Scenario], fuzz: dict[str, int]) -> dict[str, Any]:
    """The soak's figures as they are kept in its JSON."""
    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "command": " ".join(["python", "scripts/soak.py", *map(shlex.quote, argv)]).strip(),
        "seconds": seconds,
        "scenarios": [asdict(s) for s in kills],
        "fuzz": fuzz,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.from_json:
        data = merge_runs([json.loads(path.read_text()) for path in args.from_json])
        if len(args.from_json) > 1:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=2) + "\n")
    else:
        data = soak(args, argv)
    write_section(args.out, render(data))
    scenarios_ = data["scenarios"]
    bad = sum(s["duplicates"] + s["losses"] + s["webhook_lost_after_200"] for s in scenarios_)
    bad += sum(len(s.get("failures", [])) for s in scenarios_)
    bad += data["fuzz"].get("tests_failed", 0) + int(data["fuzz"].get("pytest_exit", 0) not in (0, 5))
    print(f"wrote {args.out} ({sum(s['kills'] for s in scenarios_)} kills); problems: {bad}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

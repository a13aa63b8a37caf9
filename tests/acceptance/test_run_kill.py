"""`wacamp campaigns run` killed with SIGKILL at random moments, then restarted, against a sandbox in
another process: the sandbox never sees a recipient twice, the ledger accounts for every row, and
each kill leaves at most (requests in flight + one claim batch) rows `unknown` (in fact far fewer:
rows are marked `sending` only just before their requests, tests/reliability/test_unknown_per_kill.py).

Also the clean paths through the CLI: Ctrl-C (SIGINT) leaves the campaign resumable with exit 75,
`campaigns pause` from another shell stops a run, and `resolve --resend-unknown` is the only way an
unknown row is sent again.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from campaigns.core.db import make_engine
from campaigns.core.models import Message
from sandbox.samples import sample_contacts_text, sample_templates_text
from tests.conftest import wacamp_executable

LISTENING = re.compile(r"sandbox listening on (http://\S+)")
CLAIM_BATCH = 40
MAX_IN_FLIGHT = 8


class Cli:
    """The installed `wacamp` against one database and one sandbox, in `tmp_path`."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.cwd = tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")} | env
        self.started: list[subprocess.Popen[str]] = []

    def close(self) -> None:
        """Reap every process started (and its pipes), whatever the test did with it."""
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [wacamp_executable(), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [wacamp_executable(), *args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(process)
        return process


@pytest.fixture
def sandbox_url(tmp_path: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    process = subprocess.Popen(
        [wacamp_executable(), "sandbox", "serve", "--port", "0", "--mps", "200", "--seed", "3"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    match = LISTENING.search(process.stdout.readline())
    assert match, "the sandbox did not announce its URL"
    yield match.group(1)
    process.terminate()
    process.communicate(timeout=20)


def sandbox_stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_sandbox/stats", timeout=10) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


@pytest.fixture
def cli(tmp_path: Path, db_url: str, sandbox_url: str) -> Iterator[Cli]:
    env = {
        "WACAMP_DATABASE_URL": db_url,
        "WACAMP_API_BASE_URL": sandbox_url,
        "WACAMP_ACCESS_TOKEN": "sandbox-token",
        "WACAMP_PHONE_NUMBER_ID": "100000000000001",
        "WACAMP_RATE_PER_S": "150",
        "WACAMP_MESSAGING_TIER": "TIER_UNLIMITED",
        "WACAMP_DISPATCH__CLAIM_BATCH": str(CLAIM_BATCH),
        "WACAMP_DISPATCH__MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "WACAMP_DISPATCH__CONTROL_POLL_S": "0.2",
        # a killed run holds its campaign until its lease expires: keep that short
        "WACAMP_DISPATCH__LEASE_S": "2",
    }
    cli = Cli(tmp_path, env)
    (tmp_path / "templates.json").write_text(sample_templates_text(), encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(sample_contacts_text(), encoding="utf-8")
    for args in (
        ("db", "upgrade"),
        ("templates", "import", "templates.json"),
        ("contacts", "import", "contacts.csv", "--list", "people"),
        (
            "campaigns",
            "create",
            "shipped",
            "--list",
            "people",
            "--template",
            "order_shipped",
            "--language",
            "en",
            "--param",
            "first_name={first_name}",
            "--param",
            "order_id=A-7",
        ),
        ("campaigns", "plan", "shipped"),
    ):
        done = cli.run(*args)
        assert done.returncode == 0, (args, done.stderr)
    yield cli
    cli.close()


def ledger(db_url: str) -> list[Any]:
    engine = make_engine(db_url)
    table = Message.__table__  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(table.c.phone, table.c.state, table.c.wamid)))
    finally:
        engine.dispose()


def wait_until_sending(
    db_url: str, run: subprocess.Popen[str], *, accepted: int = 20, timeout_s: float = 60
) -> None:
    """Wait until the run has sent `accepted` messages (its signal handlers are installed by then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()
        if Counter(row.state for row in ledger(db_url))["accepted"] >= accepted:
            return
        time.sleep(0.2)
    raise AssertionError("the run did not start sending")


@pytest.mark.timeout(400)
def test_kill_9_at_random_moments_never_duplicates_and_accounts_for_every_row(
    cli: Cli, db_url: str, sandbox_url: str
) -> None:
    rng = random.Random(11)
    planned = Counter(row.state for row in ledger(db_url))["planned"]
    kills = 0
    in_doubt_total = 0
    for _ in range(4):
        run = cli.start("campaigns", "run", "shipped")
        already = Counter(row.state for row in ledger(db_url))["accepted"]
        wait_until_sending(db_url, run, accepted=already + 1)
        time.sleep(rng.uniform(0.0, 1.0))  # a random moment while it sends
        if run.poll() is not None:
            break
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=20)
        kills += 1
        # What the killed run left `sending` is what the next start turns into `unknown`.
        in_doubt = Counter(row.state for row in ledger(db_url))["sending"]
        assert in_doubt <= MAX_IN_FLIGHT + CLAIM_BATCH
        in_doubt_total += in_doubt
    final = cli.run("campaigns", "run", "shipped", "--json")
    assert final.returncode == 0, final.stderr
    assert kills >= 2

    rows = ledger(db_url)
    states = Counter(row.state for row in rows)
    assert set(states) <= {"accepted", "unknown", "skipped"}, states
    assert states["accepted"] + states["unknown"] == planned
    assert states["unknown"] == in_doubt_total
    stats = sandbox_stats(sandbox_url)
    assert stats["duplicates"] == 0
    at_sandbox = {phone for phone, n in stats["accepted_per_recipient"].items() if n}
    assert set(stats["accepted_per_recipient"].values()) == {1}
    accepted = {row.phone.lstrip("+") for row in rows if row.state == "accepted"}
    unknown = {row.phone.lstrip("+") for row in rows if row.state == "unknown"}
    assert accepted <= at_sandbox <= accepted | unknown
    assert stats["accepted"] == len(at_sandbox)


def test_ctrl_c_leaves_the_campaign_resumable_and_the_next_run_completes_it(
    cli: Cli, db_url: str, sandbox_url: str
) -> None:
    run = cli.start("campaigns", "run", "shipped")
    wait_until_sending(db_url, run)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 75, err
    assert "stopped by a signal" in out
    states = Counter(row.state for row in ledger(db_url))
    assert "sending" not in states and "unknown" not in states
    again = cli.run("campaigns", "run", "shipped")
    assert again.returncode == 0, again.stderr
    assert sandbox_stats(sandbox_url)["duplicates"] == 0
    assert set(Counter(row.state for row in ledger(db_url))) == {"accepted", "skipped"}


def test_pause_from_another_shell_stops_the_run_and_resume_lets_it_finish(cli: Cli, db_url: str) -> None:
    run = cli.start("campaigns", "run", "shipped")
    wait_until_sending(db_url, run)
    paused = cli.run("campaigns", "pause", "shipped", "--reason", "wrong coupon")
    assert paused.returncode == 0, paused.stderr
    _out, err = run.communicate(timeout=30)
    assert run.returncode == 75, err
    refused = cli.run("campaigns", "run", "shipped")
    assert refused.returncode == 1 and "wrong coupon" in refused.stderr
    assert cli.run("campaigns", "resume", "shipped").returncode == 0
    assert cli.run("campaigns", "run", "shipped").returncode == 0


def test_unknown_rows_are_resent_only_by_resolve_resend_unknown(
    cli: Cli, db_url: str, sandbox_url: str
) -> None:
    run = cli.start("campaigns", "run", "shipped")
    wait_until_sending(db_url, run)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=20)
    assert cli.run("campaigns", "run", "shipped").returncode == 0
    unknown = Counter(row.state for row in ledger(db_url))["unknown"]
    counted = cli.run("campaigns", "resolve", "shipped", "--json")
    assert json.loads(counted.stdout)["unknown"] == unknown and json.loads(counted.stdout)["resent"] == 0
    resolved = cli.run("campaigns", "resolve", "shipped", "--resend-unknown", "--older-than", "0s", "--json")
    assert json.loads(resolved.stdout)["resent"] == unknown
    assert cli.run("campaigns", "run", "shipped").returncode == 0
    assert Counter(row.state for row in ledger(db_url))["unknown"] == 0

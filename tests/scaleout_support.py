"""A fleet of `wacamp worker` processes on one PostgreSQL against a sandbox in its own process.

Used by tests/acceptance/test_scaleout.py and benchmarks/scaleout.py: write a config with several
``[[senders]]``, seed contacts in bulk and plan one campaign per sender with the real planner, start
the sandbox (``wacamp sandbox serve``) and the workers (``wacamp worker``) as subprocesses, schedule
the campaigns once every worker is up, and read the outcome from the ledger and the sandbox's stats.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import SENDER_TABLE as SENDER
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.definitions import CampaignDefinition, create_campaign
from campaigns.planning.planner import plan_campaign
from campaigns.templates.catalog import parse_templates, store_templates
from sandbox.samples import sample_templates
from scheduler.sending.leases import live_workers

LISTENING = re.compile(r"sandbox listening on (http://\S+)")
TERMINAL = {"accepted", "sent", "delivered", "read", "failed", "unknown", "skipped"}


@dataclass(frozen=True)
class SenderSpec:
    """One sender of the fleet: its name, phone number id and rate."""

    name: str
    phone_number_id: str
    rate_per_s: float


def senders_of(rates: Sequence[float]) -> list[SenderSpec]:
    """One sender per rate, with distinct phone number ids."""
    return [SenderSpec(f"s{i}", f"1000000000{i:05d}", rate) for i, rate in enumerate(rates)]


def write_config(
    path: Path,
    *,
    db_url: str,
    base_url: str,
    senders: Sequence[SenderSpec],
    lease_s: float = 6.0,
    tier: str = "TIER_100K",
    pool_size: int = 4,
    max_overflow: int = 4,
) -> Path:
    """A wacamp.toml for the fleet: the database, the sandbox, the senders, short leases."""
    lines = [
        "[database]",
        f"url = {json.dumps(db_url)}",
        f"pool_size = {pool_size}",
        f"max_overflow = {max_overflow}",
        "[whatsapp]",
        f"base_url = {json.dumps(base_url)}",
        'access_token = "sandbox-token"',
        "[limits]",
        f'messaging_tier = "{tier}"',
        "pair_spacing_s = 0",
        "[dispatch]",
        f"lease_s = {lease_s}",
        "write_batch_ms = 20",
        "control_poll_s = 0.2",
    ]
    for spec in senders:
        lines += [
            "[[senders]]",
            f'name = "{spec.name}"',
            f'phone_number_id = "{spec.phone_number_id}"',
            f"rate_per_s = {spec.rate_per_s}",
            'portfolio = "acme"',
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def phone_of(index: int) -> str:
    return f"+39348{index:07d}"


def seed_campaigns(
    engine: Engine, settings: Settings, *, senders: Sequence[SenderSpec], per_sender: int
) -> dict[str, int]:
    """One list of `per_sender` new contacts and one planned (unscheduled) campaign per sender."""
    store_templates(engine, parse_templates(sample_templates(), source="test"), mark_missing_gone=False)
    campaigns: dict[str, int] = {}
    for n, spec in enumerate(senders):
        _bulk_list(engine, name=spec.name, phones=[phone_of(n * per_sender + i) for i in range(per_sender)])
        definition = CampaignDefinition(
            name=f"{spec.name}-c",
            list_name=spec.name,
            template_name="spring_sale",
            language="it",
            params={"1": "{first_name}", "2": "20%"},
            button_payloads={"0": "STOP"},
            sender_name=spec.name,
        )
        campaign = create_campaign(engine, settings=settings, definition=definition)
        assert campaign.id is not None
        plan_campaign(engine, settings=settings, campaign=campaign.id)
        campaigns[spec.name] = campaign.id
    return campaigns


def _bulk_list(engine: Engine, *, name: str, phones: Sequence[str]) -> None:
    now = utcnow()
    with write_transaction(engine) as conn:
        list_id = conn.execute(
            sa.insert(LIST).values(name=name, created_at=now).returning(LIST.c.id)
        ).scalar_one()
        for start in range(0, len(phones), 5000):
            chunk = phones[start : start + 5000]
            ids = conn.execute(
                sa.insert(CONTACT).returning(CONTACT.c.id),
                [
                    {
                        "phone": phone,
                        "attributes": {"first_name": "Marco"},
                        "consent": True,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for phone in chunk
                ],
            ).scalars()
            conn.execute(
                sa.insert(MEMBER), [{"list_id": list_id, "contact_id": cid, "added_at": now} for cid in ids]
            )


def schedule_now(engine: Engine, campaign_ids: Sequence[int]) -> None:
    """Make the campaigns due now (the workers pick them up at their next poll)."""
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(CAMPAIGN).where(CAMPAIGN.c.id.in_(list(campaign_ids))).values(scheduled_at=utcnow())
        )


def wacamp_executable() -> str:
    candidate = Path(sys.executable).parent / "wacamp"
    found = str(candidate) if candidate.exists() else shutil.which("wacamp")
    assert found, "the wacamp console script is not installed"
    return found


def clean_env(config: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    if config is not None:
        env["WACAMP_CONFIG"] = str(config)
    return env


@dataclass
class Fleet:
    """The sandbox process and the worker processes of one run."""

    workdir: Path
    sandbox: subprocess.Popen[str] | None = None
    base_url: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_sandbox(self) -> str:
        """`wacamp sandbox serve` on a free port, limits off (the stats say what each number got)."""
        args = ["sandbox", "serve", "--port", "0", "--mps", "0", "--pair-spacing-s", "0"]
        args += ["--not-on-whatsapp-share", "0", "--marketing-limit-share", "0"]
        self.sandbox = subprocess.Popen(
            [wacamp_executable(), *args],
            cwd=self.workdir,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.sandbox.stdout is not None
        line = self.sandbox.stdout.readline()
        match = LISTENING.search(line)
        assert match, f"the sandbox did not say where it listens: {line!r}"
        self.base_url = match.group(1)
        return self.base_url

    def start_workers(self, count: int, *, config: Path) -> None:
        """`count` workers (`wacamp worker`), each logging JSON to worker-N.log in the work dir."""
        for n in range(len(self.workers), len(self.workers) + count):
            log_file = self.workdir / f"worker-{n}.log"
            args = ["worker", "--poll-s", "0.5", "--metrics-port", "0", "--log-format", "json"]
            self.workers.append(
                subprocess.Popen(
                    [wacamp_executable(), *args, "--log-file", str(log_file)],
                    cwd=self.workdir,
                    env=clean_env(config),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def wait_for_workers(self, engine: Engine, count: int, *, timeout_s: float = 60) -> None:
        """Until `count` workers hold the shared send lock (all are up and polling)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with engine.connect() as conn:
                if live_workers(conn) >= count:
                    return
            dead = [w.returncode for w in self.workers if w.poll() is not None]
            assert not dead, f"a worker exited early: {dead}"
            assert time.monotonic() < deadline, "the workers did not come up"
            time.sleep(0.2)

    def stats(self, *, per_recipient: bool = False) -> dict[str, Any]:
        """The sandbox's `GET /_sandbox/stats`."""
        url = f"{self.base_url}/_sandbox/stats?per_recipient={1 if per_recipient else 0}"
        with urllib.request.urlopen(url, timeout=30) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def stop(self) -> None:
        """SIGTERM to every live process, then SIGKILL to whatever has not exited after 30 s."""
        processes: list[subprocess.Popen[Any]] = [*self.workers, *([self.sandbox] if self.sandbox else [])]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.sandbox is not None and self.sandbox.stdout is not None:
            self.sandbox.stdout.close()


def lease_holders(engine: Engine) -> dict[str, str]:
    """Sender name -> lease owner, for the leases that are live now."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(SENDER.c.name, SENDER.c.lease_owner).where(
                SENDER.c.lease_owner.is_not(None), SENDER.c.lease_expires_at > sa.func.now()
            )
        ).all()
    return {name: owner for name, owner in rows}


def pid_of(owner: str) -> int:
    """The process id inside a lease owner id (``host:pid:hex``)."""
    return int(owner.split(":")[1])


def ledger_states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(MESSAGE.c.state, sa.func.count()).group_by(MESSAGE.c.state)).all()
    return {state: int(count) for state, count in rows}


def wait_until_settled(engine: Engine, total: int, *, timeout_s: float) -> dict[str, int]:
    """Until every ledger row is in a recorded (terminal) state; the counts by state."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = ledger_states(engine)
        if sum(n for state, n in states.items() if state in TERMINAL) == total:
            return states
        assert time.monotonic() < deadline, f"not settled after {timeout_s} s: {states}"
        time.sleep(0.5)


def accepted_phones(engine: Engine) -> dict[str, set[str]]:
    """Recipients (without +) by ledger state, for the states a send leaves."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(MESSAGE.c.phone, MESSAGE.c.state)).all()
    by_state: dict[str, set[str]] = {}
    for phone, state in rows:
        by_state.setdefault(state, set()).add(phone.lstrip("+"))
    return by_state


def load_fleet_settings(config: Path) -> Settings:
    settings, _ = load_settings(config_file=config, environ={})
    return settings

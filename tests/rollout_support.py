"""A rehearsal of staged rollouts: a sandbox whose webhooks reach an in-process receiver (which applies
them), and the installed `wacamp` CLI in subprocesses against both."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from sandbox.config import SandboxConfig, WebhookTiming
from sandbox.propensity import Propensity
from sandbox.samples import sample_templates
from sandbox.server import RunningSandbox, running_sandbox
from scheduler.webhooks.server import WebhookServer
from tests.campaign_seed import Person, seed_list, seed_templates
from tests.conftest import wacamp_executable
from tests.scheduling_support import phones, sandbox_env, sandbox_settings

#: Status webhooks fast and sure, so a stage can be judged a second after its last send.
FAST_WEBHOOKS = WebhookTiming(
    sent_delay_s=(0.01, 0.05),
    delivered_delay_s=(0.01, 0.1),
    read_delay_s=(0.05, 0.2),
    delivered_share=1.0,
    duplicate_share=0.0,
    out_of_order_share=0.0,
    skip_delivered_share=0.0,
)


@dataclass
class Rehearsal:
    """A running sandbox + receiver, the database, and the environment the CLI gets."""

    engine: Engine
    env: dict[str, str]
    cwd: Path
    sandbox: RunningSandbox
    receiver: WebhookServer
    runs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    async def wacamp(self, *args: str) -> tuple[int, str, str]:
        """The installed CLI, in a subprocess: (exit code, stdout, stderr)."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
        process = await asyncio.create_subprocess_exec(
            wacamp_executable(),
            *args,
            env={**clean, **self.env},
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def run_due(self, *extra: str) -> tuple[int, dict[str, Any]]:
        """`wacamp run-due --json`, then every webhook the sandbox sent so far applied."""
        code, out, err = await self.wacamp("run-due", "--json", *extra)
        assert out.strip(), err
        summary = json.loads(out)
        await asyncio.sleep(0.3)
        await self.receiver.wait_processed()
        self.runs.append((code, summary))
        return code, summary

    def sent_by_stage(self, name: str) -> dict[int, int]:
        """Rows sent (not planned, not skipped) per stage."""
        return self._by_stage(name, MESSAGE.c.state.not_in(["planned", "skipped"]))

    def members_by_stage(self, name: str) -> dict[int, int]:
        return self._by_stage(name, sa.true())

    def _by_stage(self, name: str, where: sa.ColumnElement[bool]) -> dict[int, int]:
        query = (
            sa.select(MESSAGE.c.stage, sa.func.count())
            .join(CAMPAIGN, CAMPAIGN.c.id == MESSAGE.c.campaign_id)
            .where(CAMPAIGN.c.name == name, where)
            .group_by(MESSAGE.c.stage)
        )
        with self.engine.connect() as conn:
            return {int(stage): int(n) for stage, n in conn.execute(query)}

    def campaign(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(CAMPAIGN).where(CAMPAIGN.c.name == name)).mappings().one()
        return dict(row)


@asynccontextmanager
async def rehearsal(
    engine: Engine, tmp_path: Path, *, behaviour: dict[str, Propensity] | None = None, seed: int = 7
) -> AsyncIterator[Rehearsal]:
    """A sandbox (no random failures, fast webhooks, `behaviour` per template) and its receiver."""
    settings = sandbox_settings("http://unused")
    async with WebhookServer(engine, settings, port=0, sandbox=True, app_secret="sandbox-secret") as receiver:
        config = SandboxConfig(
            mps=0,
            pair_spacing_s=0,
            not_on_whatsapp_share=0.0,
            marketing_limit_share=0.0,
            webhook_url=receiver.url,
            webhook=FAST_WEBHOOKS,
            template_behaviour=behaviour or {},
            seed=seed,
        )
        async with running_sandbox(config) as sandbox:
            url = str(engine.url.render_as_string(hide_password=False))
            env = {**sandbox_env(sandbox.base_url), "WACAMP_DATABASE_URL": url}
            yield Rehearsal(engine=engine, env=env, cwd=tmp_path, sandbox=sandbox, receiver=receiver)


def seed_audience(engine: Engine, list_name: str, count: int) -> list[str]:
    """The sample templates and a list of `count` Italian numbers."""
    seed_templates(engine, *sample_templates())
    recipients = phones(count)
    seed_list(engine, list_name, [Person(phone, {"first_name": "Marco"}) for phone in recipients])
    return recipients


def create_args(name: str, *extra: str, template: str = "spring_sale") -> list[str]:
    """`campaigns create` for the sample spring_sale (it), due an hour ago, with `extra` options."""
    at = (utcnow() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M+00:00")
    return [
        "campaigns", "create", name, "--list", name, "--template", template, "--language", "it",
        "--param", "1={first_name}", "--param", "2=20%", "--button-payload", "0=STOP", "--at", at, *extra,
    ]  # fmt: skip

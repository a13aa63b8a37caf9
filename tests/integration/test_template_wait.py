"""`templates wait` against a real (in-process) sandbox whose review takes longer than the timeout:
the function says timed out with the status it last read, and the installed CLI exits 75 (try later)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.models import TEMPLATE_TABLE
from campaigns.templates.submission import check_submission, store_submitted, submit, wait_for_review
from campaigns.templates.sync import SyncConfig
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from tests.conftest import wacamp_executable

TEMPLATE = {
    "name": "slow_review",
    "language": "it",
    "category": "UTILITY",
    "components": [{"type": "BODY", "text": "Ordine {{1}}", "example": {"body_text": [["A-1"]]}}],
}


async def test_a_review_slower_than_the_timeout_is_try_later(
    engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_sandbox(SandboxConfig(template_review_s=600)) as sandbox:
        config = SyncConfig(
            base_url=sandbox.base_url,
            version="v23.0",
            waba_id="200000000000001",
            access_token="sandbox-token",
        )
        (tmp_path / "slow.json").write_text(json.dumps(TEMPLATE), encoding="utf-8")
        submission = check_submission(tmp_path / "slow.json")
        store_submitted(engine, await submit(config, submission))
        outcome = await wait_for_review(
            engine, config, name="slow_review", language="it", timeout_s=0.3, poll_s=0.1
        )
        assert outcome.timed_out and outcome.record is not None and outcome.record.status == "PENDING"
        with engine.connect() as conn:
            assert conn.scalar(
                sa.select(TEMPLATE_TABLE.c.status).where(TEMPLATE_TABLE.c.name == "slow_review")
            ) == ("PENDING")

        env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
        env |= {
            "WACAMP_DATABASE_URL": sqlite_url,
            "WACAMP_API_BASE_URL": sandbox.base_url,
            "WACAMP_ACCESS_TOKEN": "sandbox-token",
            "WACAMP_WABA_ID": "200000000000001",
            "WACAMP_TEMPLATES__WAIT_POLL_S": "0.2",
        }
        for args in (
            ["db", "upgrade"],
            ["templates", "wait", "slow_review", "--language", "it", "--timeout", "1s"],
        ):
            process = await asyncio.create_subprocess_exec(
                wacamp_executable(), *args, env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
            )
            _, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 75, err
        assert "slow_review (it) is still PENDING after the timeout: try again later" in err.decode()

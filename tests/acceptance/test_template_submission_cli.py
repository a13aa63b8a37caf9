"""`wacamp templates create / wait / delete` through the installed CLI against an in-process sandbox
that reviews submissions and sends the signed status webhook to a real `wacamp webhooks serve`:
created → PENDING → APPROVED (by webhook) → a campaign sent with it; a rejected one says why."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.models import TEMPLATE_TABLE as TEMPLATE
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from tests.conftest import wacamp_executable
from tests.scheduling_support import sandbox_env

AUTUMN_YAML = """\
name: autumn_promo
language: it
category: MARKETING
components:
  - type: BODY
    text: "Ciao {{1}}, usa il codice {{2}} entro domenica"
    example:
      body_text: [["Giulia", "AUTUNNO"]]
  - type: BUTTONS
    buttons:
      - {type: QUICK_REPLY, text: Stop}
"""


@pytest.fixture
def migrated(sqlite_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield sqlite_url, engine
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}, **env}


async def wacamp(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        wacamp_executable(),
        *args,
        env=_clean_env(env),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _listening(port: int, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise AssertionError("the webhook receiver did not start listening")


async def _status(name: str, *, env: dict[str, str], cwd: Path) -> str | None:
    code, out, err = await wacamp("templates", "list", "--json", env=env, cwd=cwd)
    assert code == 0, err
    return next((t["status"] for t in json.loads(out) if t["name"] == name), None)


async def _until_status(name: str, status: str, *, env: dict[str, str], cwd: Path) -> None:
    for _ in range(60):
        if await _status(name, env=env, cwd=cwd) == status:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{name} never became {status}")


async def test_a_created_template_is_pending_then_approved_by_webhook_and_a_campaign_sends_it(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    (tmp_path / "autumn.yaml").write_text(AUTUMN_YAML, encoding="utf-8")
    (tmp_path / "reject_autumn.json").write_text(
        json.dumps(
            {
                "name": "reject_autumn",
                "language": "it",
                "category": "MARKETING",
                "components": [{"type": "BODY", "text": "Ciao!"}],
            }
        ),
        encoding="utf-8",
    )
    (tmp_path / "people.csv").write_text(
        "phone,first_name,consent\n" + "".join(f"+3934700000{i:02d},P{i},yes\n" for i in range(20))
    )
    port = _free_port()
    receiver = await asyncio.create_subprocess_exec(
        wacamp_executable(),
        "webhooks",
        "serve",
        "--sandbox",
        "--port",
        str(port),
        env=_clean_env({"WACAMP_DATABASE_URL": url}),
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    config = SandboxConfig(
        webhook_url=f"http://127.0.0.1:{port}/webhook", template_review_s=2.0, pair_spacing_s=0
    )
    try:
        await _listening(port)
        async with running_sandbox(config) as sandbox:
            env = {
                **sandbox_env(sandbox.base_url),
                "WACAMP_DATABASE_URL": url,
                "WACAMP_WABA_ID": config.waba_id,
            }
            code, out, err = await wacamp(
                "templates", "create", "autumn.yaml", "--json", env=env, cwd=tmp_path
            )
            assert code == 0, err
            assert json.loads(out)["status"] == "PENDING"
            with engine.connect() as conn:  # stored PENDING until the review's webhook arrives
                stored = conn.execute(sa.select(TEMPLATE.c.status, TEMPLATE.c.submitted_at)).one()
            assert stored.status == "PENDING" and stored.submitted_at is not None
            # The review's webhook, received and applied by `webhooks serve`, approves it here.
            await _until_status("autumn_promo", "APPROVED", env=env, cwd=tmp_path)
            code, out, _ = await wacamp(
                "templates", "wait", "autumn_promo", "--language", "it", env=env, cwd=tmp_path
            )
            assert (code, out.strip()) == (0, "autumn_promo (it) APPROVED")

            for args in (
                ["contacts", "import", "people.csv", "--list", "people"],
                [
                    "campaigns",
                    "create",
                    "autunno",
                    "--list",
                    "people",
                    "--template",
                    "autumn_promo",
                    "--language",
                    "it",
                    "--param",
                    "1={first_name}",
                    "--param",
                    "2=AUTUNNO20",
                    "--button-payload",
                    "0=STOP",
                ],
            ):
                code, _, err = await wacamp(*args, env=env, cwd=tmp_path)
                assert code == 0, err
            code, out, err = await wacamp("campaigns", "run", "autunno", "--json", env=env, cwd=tmp_path)
            assert code == 0, err
            assert json.loads(out)["accepted"] == 20
            assert sandbox.stats().accepted == 20

            # A rejected template: `wait` exits 1 and says why; a campaign cannot use it.
            code, _, err = await wacamp("templates", "create", "reject_autumn.json", env=env, cwd=tmp_path)
            assert code == 0, err
            code, out, _ = await wacamp(
                "templates", "wait", "reject_autumn", "--language", "it", env=env, cwd=tmp_path
            )
            assert (code, out.strip()) == (1, "reject_autumn (it) REJECTED: INVALID_FORMAT")
            code, _, err = await wacamp(
                "campaigns",
                "create",
                "never",
                "--list",
                "people",
                "--template",
                "reject_autumn",
                "--language",
                "it",
                env=env,
                cwd=tmp_path,
            )
            assert code == 1
            assert "template 'reject_autumn' (it) is REJECTED" in err

            # Delete: refused while a campaign still needs it, done with --force (platform and here).
            code, _, err = await wacamp(
                "campaigns",
                "create",
                "later",
                "--list",
                "people",
                "--template",
                "autumn_promo",
                "--language",
                "it",
                "--param",
                "1={first_name}",
                "--param",
                "2=X",
                env=env,
                cwd=tmp_path,
            )
            assert code == 0, err
            code, _, err = await wacamp("templates", "delete", "autumn_promo", env=env, cwd=tmp_path)
            assert code == 1
            assert "still needed by campaign(s) later" in err
            code, _, err = await wacamp(
                "templates", "delete", "autumn_promo", "--force", env=env, cwd=tmp_path
            )
            assert code == 0, err
            assert sandbox.sandbox.book.get("autumn_promo", "it") is None
            assert await _status("autumn_promo", env=env, cwd=tmp_path) == "DELETED"
    finally:
        receiver.send_signal(signal.SIGTERM)
        await asyncio.wait_for(receiver.communicate(), timeout=30)


async def test_a_bad_template_file_is_refused_with_one_line_naming_the_field_and_nothing_is_sent(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, _ = migrated
    bad = AUTUMN_YAML.replace('["Giulia", "AUTUNNO"]', '["Giulia"]').replace("{{2}}", "{{3}}")
    (tmp_path / "bad.yaml").write_text(bad, encoding="utf-8")
    async with running_sandbox(SandboxConfig()) as sandbox:
        env = {
            **sandbox_env(sandbox.base_url),
            "WACAMP_DATABASE_URL": url,
            "WACAMP_WABA_ID": "200000000000001",
        }
        code, _, err = await wacamp("templates", "create", "bad.yaml", env=env, cwd=tmp_path)
        assert code == 1
        lines = [line for line in err.splitlines() if line.strip()]
        why = "placeholders must be {{1}}, {{2}} … in turn ({{1}}, {{3}})"
        assert lines == [f"Error: bad.yaml: field 'components[0].text': {why}"]
        assert sandbox.sandbox.reviewer.submissions == 0

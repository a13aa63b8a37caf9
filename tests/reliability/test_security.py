"""Security properties: constant-time signature checks, secrets kept out of every output, body limits,
parameterised SQL, formula-safe CSV exports, and the permissions of the files wacamp writes.
"""

from __future__ import annotations

import ast
import asyncio
import csv
import hmac
import io
import json
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from unittest import mock

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import campaigns
import sandbox
import scheduler
from campaigns.core.dbtypes import utcnow
from campaigns.core.settings_loading import load_settings
from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from scheduler.webhooks.processor import process_pending
from scheduler.webhooks.server import WebhookServer
from scheduler.webhooks.signature import HEADER, sign
from tests.ledger_factory import inbound_body, seed_campaign, status_body
from tests.reliability.record import record
from tests.reliability.support import free_port, run, start
from tests.scheduling_support import make_campaign, phones, sandbox_env, sandbox_settings

PACKAGES = [Path(p.__file__).parent for p in (campaigns, scheduler, sandbox)]

# -- constant-time comparisons ---------------------------------------------------------------------


async def test_the_receiver_checks_every_signature_with_hmac_compare_digest(sqlite_engine: Engine) -> None:
    app_settings, _ = load_settings(environ={})
    spy = mock.Mock(wraps=hmac.compare_digest)
    body = json.dumps(status_body(wamid="wamid.X", status="sent")).encode()
    with mock.patch.object(hmac, "compare_digest", spy):
        async with (
            WebhookServer(sqlite_engine, app_settings, port=0, sandbox=True, process=False) as server,
            aiohttp.ClientSession() as session,
        ):
            url = server.url.replace("0.0.0.0", "127.0.0.1")
            for signature, expected in [(sign("sandbox-secret", body), 200), ("sha256=" + "0" * 64, 401)]:
                async with session.post(url, data=body, headers={HEADER: signature}) as response:
                    assert response.status == expected
    compared = [call.args for call in spy.call_args_list]
    assert len(compared) == 2, "each signed POST went through hmac.compare_digest"
    assert compared[0][0] == compared[0][1] == sign("sandbox-secret", body).encode()


def test_no_signature_or_token_is_compared_with_an_ordinary_equality() -> None:
    """Reading the code: `==` or `!=` with a signature, secret or token on either side leaks timing."""
    suspicious = ("signature", "secret", "verify_token")
    found = []
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare) and any(
                    isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
                ):
                    names = {n.id.lower() for n in ast.walk(node) if isinstance(n, ast.Name)}
                    names |= {n.attr.lower() for n in ast.walk(node) if isinstance(n, ast.Attribute)}
                    if any(word in name for name in names for word in suspicious):
                        found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    allowed = {
        # a configured secret compared with the sandbox's public placeholder, not with a request
        "secret == settings.sandbox.app_secret",
    }
    assert [f for f in found if f.split(": ", 1)[1] not in allowed] == []


# -- secrets ---------------------------------------------------------------------------------------

TOKEN = "tokSECRETa1B2c3D4e5F6"
APP_SECRET = "appSECRETz9Y8x7W6v5"
VERIFY = "verSECRETq1W2e3R4t5"
PASSWORD = "pwdSECRETm1N2b3V4c5"
DB_PASSWORD = "dbSECRETk1L2j3H4g5"
SECRETS = [TOKEN, APP_SECRET, VERIFY, PASSWORD, DB_PASSWORD]


def secret_env(url: str, base_url: str) -> dict[str, str]:
    return {
        **sandbox_env(base_url),
        "WACAMP_DATABASE_URL": url,
        "WACAMP_ACCESS_TOKEN": TOKEN,
        "WACAMP_APP_SECRET": APP_SECRET,
        "WACAMP_VERIFY_TOKEN": VERIFY,
        "WACAMP_ONPREM_PASSWORD": PASSWORD,
    }


class Outputs:
    """Every text a command produced, to be searched for secrets."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def add(self, label: str, *texts: str) -> None:
        self.texts[label] = "\n".join(texts)

    def leaks(self) -> list[str]:
        return [
            f"{label}: {secret}" for label, text in self.texts.items() for secret in SECRETS if secret in text
        ]


async def run_and_keep(outputs: Outputs, label: str, *args: str, env: dict[str, str], cwd: Path) -> int:
    code, out, err = await run(*args, env=env, cwd=cwd)
    outputs.add(label, out, err)
    record("secret_scans")
    return code


async def sending_outputs(outputs: Outputs, engine: Engine, url: str, tmp_path: Path) -> None:
    """run-due (good token, then a wrong one: the error path), reports in every format, config show."""
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0, access_token=TOKEN)) as sb:
        env = secret_env(url, sb.base_url)
        make_campaign(
            engine, sandbox_settings(sb.base_url), name="s", recipients=phones(5), scheduled_at=utcnow()
        )
        log = tmp_path / "run-due.log"
        args = ("run-due", "--log-format", "json", "--log-file", str(log), "--log-level", "DEBUG")
        assert await run_and_keep(outputs, "run-due", *args, env=env, cwd=tmp_path) == 0
        outputs.add("run-due.log", log.read_text())
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0, access_token="another")) as sb:
        env = secret_env(url, sb.base_url)
        make_campaign(
            engine,
            sandbox_settings(sb.base_url),
            name="t",
            recipients=phones(3, start=50),
            scheduled_at=utcnow(),
        )
        await run_and_keep(
            outputs, "run-due-refused", "run-due", "--log-level", "DEBUG", env=env, cwd=tmp_path
        )
        await run_and_keep(outputs, "templates-sync-refused", "templates", "sync", env=env, cwd=tmp_path)
        make_campaign(
            engine,
            sandbox_settings(sb.base_url),
            name="u",
            recipients=phones(2, start=80),
            scheduled_at=utcnow(),
        )
        onprem = {**env, "WACAMP_API": "onprem", "WACAMP_ONPREM_USERNAME": "admin"}  # a wrong password
        await run_and_keep(
            outputs, "onprem-login-refused", "run-due", "--log-level", "DEBUG", env=onprem, cwd=tmp_path
        )
        for fmt in ("table", "json", "csv", "html"):
            target = tmp_path / f"report.{fmt}"
            await run_and_keep(
                outputs,
                f"report-{fmt}",
                "report",
                "s",
                "--format",
                fmt,
                "-o",
                str(target),
                env=env,
                cwd=tmp_path,
            )
            outputs.add(f"report-file-{fmt}", target.read_text() if target.exists() else "")
        await run_and_keep(outputs, "config-show", "config", "show", env=env, cwd=tmp_path)
        await run_and_keep(outputs, "config-show-json", "config", "show", "--json", env=env, cwd=tmp_path)


async def receiver_outputs(outputs: Outputs, url: str, tmp_path: Path) -> None:
    port = free_port()
    env = secret_env(url, "http://127.0.0.1:9")
    process = await start("webhooks", "serve", "--port", str(port), env=env, cwd=tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                if process.returncode is not None:
                    _, err = await process.communicate()
                    raise AssertionError(f"webhooks serve exited: {err.decode()}")
                try:
                    async with session.post(f"http://127.0.0.1:{port}/webhook", data=b"{}") as response:
                        assert response.status == 401
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            verify = (
                f"http://127.0.0.1:{port}/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1"
            )
            async with session.get(verify) as response:
                assert response.status == 403
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = await process.communicate()
    outputs.add("webhooks-serve", out.decode(), err.decode())


async def test_distinctive_secrets_never_appear_in_outputs_logs_reports_errors_or_the_database(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    outputs = Outputs()
    await sending_outputs(outputs, sqlite_engine, sqlite_url, tmp_path)
    await receiver_outputs(outputs, sqlite_url, tmp_path)
    unreachable = f"postgresql+psycopg://wacamp:{DB_PASSWORD}@127.0.0.1:9/wacamp"
    env = secret_env(unreachable, "http://127.0.0.1:9")
    assert await run_and_keep(outputs, "db-unreachable", "campaigns", "list", env=env, cwd=tmp_path) == 1
    await run_and_keep(outputs, "db-unreachable-config", "config", "show", env=env, cwd=tmp_path)
    sqlite_engine.dispose()
    outputs.add("database-file", Path(sqlite_url.removeprefix("sqlite:///")).read_bytes().decode("latin-1"))
    assert "****" in outputs.texts["config-show"], "config show masks the secrets it shows"
    assert outputs.leaks() == []


# -- the receiver's limits -------------------------------------------------------------------------


@pytest.fixture
async def receiver(sqlite_engine: Engine) -> AsyncIterator[str]:
    app_settings, _ = load_settings(environ={})
    async with WebhookServer(sqlite_engine, app_settings, port=0, sandbox=True, process=False) as server:
        yield server.url.replace("0.0.0.0", "127.0.0.1")


async def test_a_chunked_body_over_the_limit_without_a_content_length_gets_413(receiver: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(receiver, data=chunks(), headers={HEADER: "sha256=00"}) as response:
                status = response.status
        except aiohttp.ClientOSError:  # the server may close the connection while we still write
            status = 413
    assert status == 413


async def test_an_unsigned_body_is_refused_before_it_is_stored_or_parsed(
    receiver: str, sqlite_engine: Engine
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(receiver, data=io.BytesIO(b"[" * 500_000)) as response:
            assert response.status == 401
        async with session.post(receiver, data=io.BytesIO(b" " * 2_000_000)) as response:
            assert response.status == 413, "the size limit comes before anything else"
    with sqlite_engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM webhook_inbox")) == 0


# -- SQL -------------------------------------------------------------------------------------------

SQL_CALLS = {"text", "exec_driver_sql", "execute", "executemany", "executescript"}
#: Built SQL that is reviewed: the value is an int computed from a typed setting, never user text.
SQL_ALLOWED = {"campaigns/core/db.py: cursor.execute(f'PRAGMA busy_timeout={busy_timeout_ms}')"}


def _is_built_string(node: ast.expr) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def test_no_sql_statement_is_built_from_strings_every_value_is_a_bound_parameter() -> None:
    found = set()
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                name = (
                    node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                )
                if name in SQL_CALLS and _is_built_string(node.args[0]):
                    relative = path.relative_to(PACKAGES[0].parent)
                    found.add(f"{relative}: {ast.unparse(node)}")
    record("sql_call_sites_reviewed", len(found))
    assert found <= SQL_ALLOWED, sorted(found - SQL_ALLOWED)


# -- CSV exports -----------------------------------------------------------------------------------

FORMULA_TEXTS = ['=HYPERLINK("http://evil","x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-1+2+cmd", "\t=1"]


async def test_report_csv_neutralises_formulas_that_came_from_users_and_the_platform(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    seeded = seed_campaign(sqlite_engine, name="spring", count=len(FORMULA_TEXTS))
    bodies = []
    for index, formula in enumerate(FORMULA_TEXTS):
        _, phone, wamid = seeded.messages[index]
        assert wamid is not None
        bodies.append(inbound_body(phone=phone, wamid=f"wamid.in{index}", text=formula, context=wamid))
    bodies.append(status_body(wamid=seeded.wamid(0), status="failed", error_code=131026))
    bodies[-1]["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["title"] = FORMULA_TEXTS[0]
    with sqlite_engine.begin() as conn:
        for body in bodies:
            conn.execute(
                sa.text("INSERT INTO webhook_inbox (body, received_at) VALUES (:b, :t)"),
                {"b": json.dumps(body), "t": utcnow()},
            )
    app_settings, _ = load_settings(environ={})
    process_pending(sqlite_engine, app_settings)
    target = tmp_path / "spring.csv"
    code, _, err = await run(
        "report",
        "spring",
        "--format",
        "csv",
        "-o",
        str(target),
        env={"WACAMP_DATABASE_URL": sqlite_url},
        cwd=tmp_path,
    )
    assert code == 0, err
    text = target.read_text()
    cells = [cell for line in csv.reader(text.splitlines()) for cell in line]
    dangerous = [
        c
        for c in cells
        if c[:1] in ("=", "+", "-", "@", "\t", "\r") and not c.lstrip("+-").replace(".", "").isdigit()
    ]
    assert dangerous == [], dangerous
    assert any(c.startswith("'=HYPERLINK") for c in cells), "the reply is kept, made harmless"


# -- file permissions ------------------------------------------------------------------------------


async def test_files_wacamp_writes_are_never_group_or_world_writable(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    seed_campaign(sqlite_engine, name="spring", count=2)
    env = {"WACAMP_DATABASE_URL": sqlite_url}
    report = tmp_path / "r.html"
    assert (await run("report", "spring", "--format", "html", "-o", str(report), env=env, cwd=tmp_path))[
        0
    ] == 0
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,consent\n+393471234567,yes\n12,yes\n")
    code, _, err = await run(
        "contacts", "import", str(contacts), "--list", "l", "--region", "IT", env=env, cwd=tmp_path
    )
    assert code == 0, err
    written = [report, tmp_path / "c.rejects.csv", Path(sqlite_url.removeprefix("sqlite:///"))]
    for path in written:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH), f"{path.name}: {oct(mode)}"

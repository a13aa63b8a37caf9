"""`wacamp sandbox serve` as a separate process: it announces its URL, serves, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import wacamp_executable
from tests.sandbox_support import receiving, spring_sale

LISTENING = re.compile(r"sandbox listening on (http://\S+)")


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
        env.update(env_extra or {})
        process = subprocess.Popen(
            [wacamp_executable(), "sandbox", "serve", "--port", "0", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        match = LISTENING.search(line)
        assert match, f"no listening line, got {line!r}"
        return process, match.group(1)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


async def test_serve_prints_its_url_accepts_sends_and_stops_cleanly_on_sigterm(start_sandbox) -> None:  # type: ignore[no-untyped-def]
    process, base_url = start_sandbox("--mps", "0", "--access-token", "t0k3n")
    async with aiohttp.ClientSession() as session:
        url = f"{base_url}/v23.0/100000000000001/messages"
        async with session.post(
            url, json=spring_sale("+393471234567"), headers={"Authorization": "Bearer t0k3n"}
        ) as r:
            accepted = (r.status, await r.json())
        async with session.get(f"{base_url}/_sandbox/stats") as r:
            stats = await r.json()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert accepted[0] == 200
    assert stats["accepted"] == 1
    assert process.returncode == 0
    assert "sandbox stopped" in stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--throttle-status", "429"), {}),
        ((), {"WACAMP_SANDBOX__THROTTLE_STATUS": "429"}),
    ],
    ids=["option", "setting"],
)
async def test_serve_answers_throttling_with_the_chosen_http_status(start_sandbox, args, env) -> None:  # type: ignore[no-untyped-def]
    _, base_url = start_sandbox("--mps", "1", "--pair-spacing-s", "0", *args, env_extra=env)
    async with aiohttp.ClientSession() as session:
        url = f"{base_url}/v23.0/100000000000001/messages"
        headers = {"Authorization": "Bearer sandbox-token"}
        statuses = []
        for to in ("+393471234567", "+393471234568"):
            async with session.post(url, json=spring_sale(to), headers=headers) as r:
                statuses.append((r.status, (await r.json()).get("error", {}).get("code")))
    assert statuses[0] == (200, None)
    assert statuses[1] == (429, 130429)


def test_serve_refuses_an_unknown_fault_as_a_usage_error(run_wacamp) -> None:  # type: ignore[no-untyped-def]
    result = run_wacamp("sandbox", "serve", "--faults", "flaky,gremlins")
    assert result.returncode == 2
    assert "gremlins" in result.stderr


def test_the_samples_import_cleanly_with_the_templates_and_contacts_commands(
    run_wacamp, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    assert run_wacamp("db", "upgrade").returncode == 0
    written = run_wacamp("sandbox", "samples", "--out", "demo", "--json")
    assert written.returncode == 0, written.stderr
    assert json.loads(written.stdout)["written"] == ["demo/templates.json", "demo/contacts.csv"]
    templates = run_wacamp("templates", "import", "demo/templates.json")
    contacts = run_wacamp("contacts", "import", "demo/contacts.csv", "--list", "demo", "--json")
    assert templates.returncode == 0, templates.stderr
    assert "10 added" in templates.stdout + templates.stderr
    assert contacts.returncode == 0, contacts.stderr
    summary = json.loads(contacts.stdout)
    assert (summary["imported"], summary["rejected"]) == (1000, 0)
    assert 0 < summary["not_consented"] < 100
    again = run_wacamp("sandbox", "samples", "--out", "demo")
    assert again.returncode == 1
    assert "--force" in again.stderr


async def test_stats_shows_what_a_running_sandbox_has_seen(start_sandbox, run_wacamp) -> None:  # type: ignore[no-untyped-def]
    _, base_url = start_sandbox("--mps", "0")
    async with aiohttp.ClientSession() as session:
        url = f"{base_url}/v23.0/100000000000001/messages"
        headers = {"Authorization": "Bearer sandbox-token"}
        for _ in range(2):  # the second one is refused with 131056
            async with session.post(url, json=spring_sale("+393471234567"), headers=headers) as r:
                await r.read()
    shown = await asyncio.to_thread(run_wacamp, "sandbox", "stats", "--url", base_url, "--json")
    table = await asyncio.to_thread(run_wacamp, "sandbox", "stats", "--url", base_url)
    assert shown.returncode == 0, shown.stderr
    stats = json.loads(shown.stdout)
    assert (stats["requests"], stats["accepted"], stats["errors_by_code"]) == (2, 1, {"131056": 1})
    assert "131056: 1" in table.stdout


async def test_reply_makes_the_sandbox_send_a_signed_button_tap_webhook(start_sandbox, run_wacamp) -> None:  # type: ignore[no-untyped-def]
    async with receiving() as receiver:
        _, base_url = start_sandbox("--webhook-url", receiver.url)
        async with aiohttp.ClientSession() as session:
            url = f"{base_url}/v23.0/100000000000001/messages"
            async with session.post(
                url, json=spring_sale("+393471234567"), headers={"Authorization": "Bearer sandbox-token"}
            ) as r:
                wamid = (await r.json())["messages"][0]["id"]
        result = await asyncio.to_thread(
            run_wacamp, "sandbox", "reply", "+393471234567", "--tap", "STOP", "--url", base_url
        )
        for _ in range(100):
            if receiver.changes("messages") and any("messages" in v for v in receiver.changes("messages")):
                break
            await asyncio.sleep(0.05)
    assert result.returncode == 0, result.stderr
    taps = [m for v in receiver.changes("messages") for m in v.get("messages", [])]
    assert taps[0]["button"]["payload"] == "STOP"
    assert taps[0]["context"]["id"] == wamid
    raw, headers = next((raw, h) for raw, h in receiver.posts if b'"button"' in raw)
    assert receiver.signature_ok(raw, headers)


def test_stats_without_a_running_sandbox_says_how_to_start_one(run_wacamp) -> None:  # type: ignore[no-untyped-def]
    result = run_wacamp("sandbox", "stats", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "wacamp sandbox serve" in result.stderr

"""`wacamp webhooks serve` and `webhooks process` as a user runs them (installed CLI, subprocess)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from scheduler.webhooks.signature import HEADER, sign
from tests.conftest import wacamp_executable
from tests.ledger_factory import status_body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, body: bytes, signature: str | None) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    if signature:
        request.add_header(HEADER, signature)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the receiver did not start listening")


def test_serve_refuses_to_start_without_an_app_secret(run_wacamp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_wacamp("db", "upgrade").returncode == 0
    result = run_wacamp("webhooks", "serve", "--port", "0")
    assert result.returncode == 1
    assert "no app secret" in result.stderr


def test_serve_stores_signed_posts_refuses_unsigned_ones_and_processes_on_sigterm(
    run_wacamp,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    assert run_wacamp("db", "upgrade").returncode == 0
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    proc = subprocess.Popen(
        [
            wacamp_executable(),
            "webhooks",
            "serve",
            "--sandbox",
            "--port",
            str(port),
            "--path",
            "/wa",
            "--no-process",
        ],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, proc)
        body = json.dumps(status_body(wamid="wamid.X", status="sent")).encode()
        url = f"http://127.0.0.1:{port}/wa"
        assert post(url, body, sign("sandbox-secret", body)) == 200
        assert post(url, body, None) == 401
        assert post(url, body, sign("wrong", body)) == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "stored 1 bodies" in stderr

    processed = run_wacamp("webhooks", "process", "--json")
    assert processed.returncode == 0, processed.stderr
    assert json.loads(processed.stdout) | {"by_kind": None} == {
        "rows": 1,
        "events": 1,
        "errors": 0,
        "by_kind": None,
        "pending": 0,
    }

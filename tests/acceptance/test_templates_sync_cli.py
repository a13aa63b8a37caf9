"""`wacamp templates sync` through the installed CLI against a fake Graph API on port 0 (own thread)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.integration.test_template_sync import TOKEN, WABA, FakeGraph, _template


@pytest.fixture
def graph_in_thread() -> Iterator[FakeGraph]:
    fake = FakeGraph([_template(n) for n in range(5)], page_size=2, throttle_pages={1: 1})
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner: dict[str, web.AppRunner] = {}

    async def start() -> None:
        app = web.Application()
        app.router.add_get(f"/v23.0/{WABA}/message_templates", fake.listing)
        runner["r"] = web.AppRunner(app)
        await runner["r"].setup()
        site = web.TCPSite(runner["r"], "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        fake.base_url = f"http://127.0.0.1:{port}"
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    assert ready.wait(10)
    yield fake
    asyncio.run_coroutine_threadsafe(runner["r"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_sync_through_the_cli_reads_every_page_and_marks_vanished_templates_gone(
    run_wacamp: Any, graph_in_thread: FakeGraph
) -> None:
    env = {
        "WACAMP_API_BASE_URL": graph_in_thread.base_url,
        "WACAMP_WABA_ID": WABA,
        "WACAMP_ACCESS_TOKEN": TOKEN,
    }
    assert run_wacamp("db", "upgrade").returncode == 0
    synced = run_wacamp("templates", "sync", "--json", env=env)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout) == {"source": "sync", "added": 5, "updated": 0, "gone": 0}
    assert [page for page, _ in graph_in_thread.requests] == [0, 1, 1, 2]
    graph_in_thread.templates = graph_in_thread.templates[1:]
    again = run_wacamp("templates", "sync", env=env)
    assert again.returncode == 0, again.stderr
    assert "4 updated, 1 marked gone" in again.stdout
    listed = json.loads(run_wacamp("templates", "list", "--json").stdout)
    assert [t["name"] for t in listed if t["gone_at"]] == ["t00"]


def test_sync_without_a_token_says_which_setting_is_missing(run_wacamp: Any) -> None:
    assert run_wacamp("db", "upgrade").returncode == 0
    refused = run_wacamp("templates", "sync", env={"WACAMP_WABA_ID": WABA})
    assert refused.returncode == 1
    assert "whatsapp.access_token (WACAMP_ACCESS_TOKEN)" in refused.stderr

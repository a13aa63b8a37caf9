"""`templates sync` against a fake Graph API: a real aiohttp server on port 0 with pages and throttling."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.engine import Engine

from campaigns.templates.catalog import find_templates, parse_templates, store_templates
from campaigns.templates.sync import SyncConfig, SyncError, fetch_templates, retry_after_s
from tests.unit.test_templates import NAMED, PROMO

TOKEN = "test-token"
WABA = "2000001"


def _template(n: int) -> dict[str, Any]:
    data = copy.deepcopy(PROMO if n % 2 else NAMED)
    data.update(name=f"t{n:02d}", id=str(1000 + n))
    return data


@dataclass
class FakeGraph:
    """Serves `templates` in pages of `page_size`; throttles some pages' first `throttle_times` answers."""

    templates: list[dict[str, Any]]
    page_size: int = 3
    throttle_pages: dict[int, int] = field(default_factory=dict)
    throttle_status: int = 429
    throttle_code: int = 80007
    requests: list[tuple[int, str | None]] = field(default_factory=list)
    base_url: str = ""

    async def listing(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response(
                {"error": {"code": 190, "message": "Invalid OAuth access token"}}, status=401
            )
        after = int(request.query.get("after", "0"))
        page = after // self.page_size
        self.requests.append((page, request.headers.get("Authorization")))
        if self.throttle_pages.get(page, 0) > 0:
            self.throttle_pages[page] -= 1
            body = {"error": {"code": self.throttle_code, "message": "(#80007) Rate limit issues"}}
            return web.json_response(body, status=self.throttle_status, headers={"Retry-After": "0"})
        chunk = self.templates[after : after + self.page_size]
        result: dict[str, Any] = {"data": chunk, "paging": {"cursors": {"after": str(after + len(chunk))}}}
        if after + self.page_size < len(self.templates):
            query = f"limit={self.page_size}&after={after + self.page_size}"
            result["paging"]["next"] = f"{self.base_url}/v23.0/{WABA}/message_templates?{query}"
        return web.json_response(result)


async def _serve(fake: FakeGraph) -> AsyncIterator[FakeGraph]:
    app = web.Application()
    app.router.add_get(f"/v23.0/{WABA}/message_templates", fake.listing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base_url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    fake = FakeGraph([_template(n) for n in range(8)], throttle_pages={1: 1})
    async for served in _serve(fake):
        yield served


def _config(fake: FakeGraph, **kw: Any) -> SyncConfig:
    values: dict[str, Any] = dict(
        base_url=fake.base_url,
        version="v23.0",
        waba_id=WABA,
        access_token=TOKEN,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        max_retries=3,
    )
    values.update(kw)
    return SyncConfig(**values)


async def test_sync_follows_every_page_and_retries_the_throttled_one(graph: FakeGraph) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    items = await fetch_templates(_config(graph), sleep=sleep)
    assert [t["name"] for t in items] == [f"t{n:02d}" for n in range(8)]
    assert [page for page, _ in graph.requests] == [0, 1, 1, 2]
    assert waits == [0.0]  # the server's Retry-After: 0 was honoured
    assert all(auth == f"Bearer {TOKEN}" for _, auth in graph.requests)


async def test_a_throttle_that_never_ends_fails_after_the_configured_retries(graph: FakeGraph) -> None:
    graph.throttle_pages = {0: 100}
    graph.throttle_status, graph.throttle_code = 400, 4  # the code decides, not the HTTP status
    with pytest.raises(SyncError, match="after 3 attempts"):
        await fetch_templates(_config(graph, max_retries=2))
    assert len(graph.requests) == 3


async def test_a_bad_token_fails_at_once_with_the_platform_message(graph: FakeGraph) -> None:
    with pytest.raises(SyncError, match="Invalid OAuth access token"):
        await fetch_templates(_config(graph, access_token="wrong"))
    assert graph.requests == []


async def test_templates_missing_from_a_later_sync_are_marked_gone_not_deleted(
    graph: FakeGraph, engine: Engine
) -> None:
    graph.throttle_pages = {}
    first = parse_templates(await fetch_templates(_config(graph)), source="sync")
    assert store_templates(engine, first, mark_missing_gone=True).added == 8
    graph.templates = graph.templates[:5]
    graph.templates[0]["status"] = "PAUSED"
    second = parse_templates(await fetch_templates(_config(graph)), source="sync")
    result = store_templates(engine, second, mark_missing_gone=True)
    assert (result.added, result.updated, result.gone) == (0, 5, 3)
    stored = {t.name: t for t in find_templates(engine)}
    assert len(stored) == 8
    assert sorted(n for n, t in stored.items() if t.gone_at is not None) == ["t05", "t06", "t07"]
    assert stored["t00"].status == "PAUSED"
    assert [t.name for t in find_templates(engine, status="paused")] == ["t00"]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("12") == 12.0
    assert retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert retry_after_s("soon") is None

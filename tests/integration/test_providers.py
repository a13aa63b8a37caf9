"""The Cloud and On-Premises clients against real aiohttp (and raw TCP) fake servers on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from campaigns.core.exceptions import (
    CampaignFatalError,
    MaintenanceError,
    MarketingLimitError,
    OptedOutError,
    OutcomeUnknownError,
    PairRateLimitedError,
    PlatformError,
    RecipientError,
    SenderFatalError,
    ThrottledError,
    TransientError,
)
from campaigns.core.settings_loading import load_settings
from campaigns.core.settings_sections import SenderSettings
from scheduler.providers.base import PhoneLimits, SendResult
from scheduler.providers.cloud import CloudProvider
from scheduler.providers.factory import make_provider
from scheduler.providers.http import HttpTransport
from scheduler.providers.onprem import OnPremProvider

BODY = '{"messaging_product":"whatsapp","to":"393471234567","type":"template","template":{"name":"promo"}}'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakePlatform:
    """A real aiohttp server whose routes the test sets; it records what it received."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.base_url = ""

    def route(self, method: str, path: str, handler: Handler) -> None:
        async def recording(request: web.Request) -> web.StreamResponse:
            self.received.append((request.path, dict(request.headers), await request.read()))
            return await handler(request)

        self.app.router.add_route(method, path, recording)


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    fake = FakePlatform()
    runner = web.AppRunner(fake.app)
    started = False

    async def start() -> str:
        nonlocal started
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        started = True
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        fake.base_url = f"http://127.0.0.1:{port}"
        return fake.base_url

    fake.start = start  # type: ignore[attr-defined]
    yield fake
    if started:
        await runner.cleanup()


def transport(
    *, request_timeout_s: float = 5.0, connect_timeout_s: float = 2.0, pool: int = 8
) -> HttpTransport:
    return HttpTransport(
        connect_timeout_s=connect_timeout_s, request_timeout_s=request_timeout_s, pool_limit=pool
    )


def cloud(base_url: str, **kw: Any) -> CloudProvider:
    return CloudProvider(
        base_url=base_url,
        version="v23.0",
        phone_number_id="1001",
        access_token="tok",
        transport=kw.pop("transport", None) or transport(),
        retry_wait_s=0.001,
        **kw,
    )


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return handler


def cloud_error(code: int, message: str = "boom") -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "OAuthException", "code": code, "error_data": {"details": "d"}}
    }


async def send_cloud(platform: FakePlatform, handler: Handler, **kw: Any) -> SendResult:
    platform.route("POST", "/v23.0/1001/messages", handler)
    provider = cloud(await platform.start(), **kw)  # type: ignore[attr-defined]
    try:
        return await provider.send(BODY)
    finally:
        await provider.close()


async def test_a_cloud_send_posts_the_frozen_body_byte_for_byte_and_returns_the_wamid(
    platform: FakePlatform,
) -> None:
    answer = {"messaging_product": "whatsapp", "messages": [{"id": "wamid.A", "message_status": "accepted"}]}
    result = await send_cloud(platform, json_response(answer))
    assert result == SendResult(wamid="wamid.A", message_status="accepted")
    _, headers, body = platform.received[0]
    assert body == BODY.encode()
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer tok"


async def test_a_send_held_for_quality_assessment_reports_that_status(platform: FakePlatform) -> None:
    answer = {"messages": [{"id": "wamid.H", "message_status": "held_for_quality_assessment"}]}
    result = await send_cloud(platform, json_response(answer))
    assert result.message_status == "held_for_quality_assessment"


@pytest.mark.parametrize("status", [400, 429, 200, 503])
async def test_a_throttle_code_is_a_throttle_whatever_the_http_status(
    platform: FakePlatform, status: int
) -> None:
    handler = json_response(cloud_error(130429, "(#130429) Rate limit hit"), status=status)
    with pytest.raises(ThrottledError) as caught:
        await send_cloud(platform, handler)
    assert caught.value.code == 130429
    assert caught.value.http_status == status


async def test_retry_after_travels_with_the_throttle(platform: FakePlatform) -> None:
    handler = json_response(cloud_error(80007), status=400, headers={"Retry-After": "7"})
    with pytest.raises(ThrottledError) as caught:
        await send_cloud(platform, handler)
    assert caught.value.retry_after_s == 7.0


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (131056, PairRateLimitedError),
        (131057, MaintenanceError),
        (131000, TransientError),
        (131016, TransientError),
        (131049, MarketingLimitError),
        (131050, OptedOutError),
        (131026, RecipientError),
        (132000, RecipientError),
        (132001, CampaignFatalError),
        (131048, CampaignFatalError),
        (190, SenderFatalError),
        (4, ThrottledError),
    ],
)
async def test_errors_are_classified_by_their_code(
    platform: FakePlatform, code: int, expected: type[PlatformError]
) -> None:
    with pytest.raises(expected) as caught:
        await send_cloud(platform, json_response(cloud_error(code, "title of it"), status=400))
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.title == "title of it"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, TransientError), (502, TransientError), (429, ThrottledError), (401, SenderFatalError)],
)
async def test_without_an_error_body_the_http_status_decides(
    platform: FakePlatform, status: int, expected: type[PlatformError]
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="<html>upstream trouble</html>")

    with pytest.raises(expected):
        await send_cloud(platform, handler)


async def test_a_success_status_without_a_message_id_is_an_unknown_outcome(platform: FakePlatform) -> None:
    with pytest.raises(OutcomeUnknownError):
        await send_cloud(platform, json_response({"messaging_product": "whatsapp", "messages": []}))


async def test_a_refused_connection_is_transient_because_nothing_was_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = cloud(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TransientError, match="nothing was sent"):
            await provider.send(BODY)
    finally:
        await provider.close()


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(behaviour: Behaviour) -> AsyncIterator[int]:
    """A bare TCP server on port 0 that reads one HTTP request and then does `behaviour`; yields the port."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        await reader.readexactly(length)
        await behaviour(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def send_to_raw(behaviour: Behaviour, **kw: Any) -> SendResult:
    async with raw_server(behaviour) as port:
        provider = cloud(f"http://127.0.0.1:{port}", **kw)
        try:
            return await provider.send(BODY)
        finally:
            await provider.close()


async def test_a_server_that_reads_the_request_then_closes_the_socket_gives_an_unknown_outcome() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    with pytest.raises(OutcomeUnknownError, match="after the request was sent"):
        await send_to_raw(hang_up)


async def test_a_read_timeout_after_sending_gives_an_unknown_outcome() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    with pytest.raises(OutcomeUnknownError, match="timed out"):
        await send_to_raw(never_answer, transport=transport(request_timeout_s=0.3))


async def test_an_answer_cut_off_midway_gives_an_unknown_outcome() -> None:
    async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"messa'
        )
        await writer.drain()
        writer.close()

    with pytest.raises(OutcomeUnknownError):
        await send_to_raw(cut_off)


async def test_waiting_too_long_for_a_pooled_connection_is_transient_because_nothing_was_sent() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{"messages":[{"id":"w.1"}]}')
        await writer.drain()
        writer.close()

    async with raw_server(slow) as port:
        provider = cloud(f"http://127.0.0.1:{port}", transport=transport(pool=1, connect_timeout_s=0.2))
        try:
            first = asyncio.create_task(provider.send(BODY))
            await asyncio.sleep(0.05)
            with pytest.raises(TransientError, match="nothing was sent"):
                await provider.send(BODY)
            release.set()
            assert (await first).wamid == "w.1"
        finally:
            await provider.close()


async def test_read_limits_reads_tier_throughput_and_quality(platform: FakePlatform) -> None:
    fields = {
        "id": "1001",
        "quality_rating": "GREEN",
        "throughput": {"level": "STANDARD"},
        "whatsapp_business_manager_messaging_limit": "TIER_2K",
    }
    platform.route("GET", "/v23.0/1001", json_response(fields))
    provider = cloud(await platform.start())  # type: ignore[attr-defined]
    try:
        limits = await provider.read_limits()
    finally:
        await provider.close()
    assert limits == PhoneLimits(
        messaging_tier="TIER_2K", throughput_level="STANDARD", quality_rating="GREEN"
    )
    path, _, _ = platform.received[0]
    assert path == "/v23.0/1001"


async def test_read_limits_accepts_a_tier_given_as_an_object_or_a_number(platform: FakePlatform) -> None:
    answers = iter(
        [
            {
                "whatsapp_business_manager_messaging_limit": {"current_limit": "tier_10k"},
                "throughput": "high",
            },
            {"whatsapp_business_manager_messaging_limit": 1000},
        ]
    )

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(next(answers))

    platform.route("GET", "/v23.0/1001", handler)
    provider = cloud(await platform.start())  # type: ignore[attr-defined]
    try:
        first, second = await provider.read_limits(), await provider.read_limits()
    finally:
        await provider.close()
    assert (first.messaging_tier, first.throughput_level) == ("TIER_10K", "HIGH")
    assert (second.messaging_tier, second.throughput_level) == ("1000", None)


async def test_read_limits_retries_a_throttled_read_then_succeeds(platform: FakePlatform) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls < 3:
            return web.json_response(cloud_error(80007), status=400)
        return web.json_response({"whatsapp_business_manager_messaging_limit": "TIER_250"})

    platform.route("GET", "/v23.0/1001", handler)
    provider = cloud(await platform.start())  # type: ignore[attr-defined]
    try:
        limits = await provider.read_limits()
    finally:
        await provider.close()
    assert limits.messaging_tier == "TIER_250"
    assert calls == 3


async def test_read_limits_does_not_retry_an_auth_error(platform: FakePlatform) -> None:
    platform.route(
        "GET", "/v23.0/1001", json_response(cloud_error(190, "Invalid OAuth access token."), status=401)
    )
    provider = cloud(await platform.start())  # type: ignore[attr-defined]
    try:
        with pytest.raises(SenderFatalError):
            await provider.read_limits()
    finally:
        await provider.close()
    assert len(platform.received) == 1


# -- On-Premises ---------------------------------------------------------------------------------


class OnPremFake:
    """Login issuing numbered tokens with a given expiry; sends accepted only with a live token."""

    def __init__(self, platform: FakePlatform, *, expires_after: str = "2099-01-01 00:00:00+00:00") -> None:
        self.platform = platform
        self.expires_after = expires_after
        self.tokens: list[str] = []
        self.revoked: set[str] = set()
        self.login_delay_s = 0.0
        platform.route("POST", "/v1/users/login", self.login)
        platform.route("POST", "/v1/messages", self.send)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Basic YWRtaW46c2VjcmV0":  # admin:secret
            return web.json_response(
                {"meta": {"api_status": "stable"}, "errors": [{"code": 1005, "title": "Access denied"}]},
                status=401,
            )
        await asyncio.sleep(self.login_delay_s)
        token = f"t{len(self.tokens) + 1}"
        self.tokens.append(token)
        return web.json_response({"users": [{"token": token, "expires_after": self.expires_after}]})

    async def send(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.tokens or token in self.revoked:
            return web.json_response(
                {"errors": [{"code": 0, "title": "Invalid or expired token"}]}, status=401
            )
        payload = json.loads(await request.read())
        if payload.get("to") == "blocked":
            errors = [{"code": 131026, "title": "Message undeliverable", "details": "x"}]
            return web.json_response({"meta": {}, "errors": errors}, status=400)
        return web.json_response({"messages": [{"id": f"gBEG-{token}"}], "meta": {"api_status": "stable"}})

    def sends(self) -> list[str]:
        return [
            headers["Authorization"] for path, headers, _ in self.platform.received if path == "/v1/messages"
        ]


def onprem(base_url: str, **kw: Any) -> OnPremProvider:
    return OnPremProvider(
        base_url=base_url,
        username=kw.pop("username", "admin"),
        password="secret",
        transport=transport(),
        **kw,
    )


async def test_on_prem_logs_in_then_sends_with_the_bearer_token(platform: FakePlatform) -> None:
    fake = OnPremFake(platform)
    provider = onprem(await platform.start())  # type: ignore[attr-defined]
    try:
        first = await provider.send('{"to":"393471234567","type":"template"}')
        second = await provider.send('{"to":"393471234568","type":"template"}')
    finally:
        await provider.close()
    assert (first.wamid, second.wamid) == ("gBEG-t1", "gBEG-t1")
    assert first.message_status is None
    assert fake.tokens == ["t1"]
    assert fake.sends() == ["Bearer t1", "Bearer t1"]


async def test_on_prem_refreshes_the_token_before_it_expires(platform: FakePlatform) -> None:
    fake = OnPremFake(platform, expires_after="2030-01-01 12:00:00+00:00")
    now = [datetime(2030, 1, 1, 11, 0, tzinfo=UTC)]
    provider = onprem(await platform.start(), utc_now=lambda: now[0], refresh_margin_s=60)  # type: ignore[attr-defined]
    try:
        await provider.send("{}")
        now[0] = datetime(2030, 1, 1, 11, 58, 30, tzinfo=UTC)
        await provider.send("{}")
        now[0] = datetime(2030, 1, 1, 11, 59, 30, tzinfo=UTC)
        await provider.send("{}")
    finally:
        await provider.close()
    assert fake.tokens == ["t1", "t2"]
    assert fake.sends() == ["Bearer t1", "Bearer t1", "Bearer t2"]


async def test_on_prem_logs_in_again_once_when_a_send_is_refused_for_its_token(
    platform: FakePlatform,
) -> None:
    fake = OnPremFake(platform)
    provider = onprem(await platform.start())  # type: ignore[attr-defined]
    try:
        await provider.send("{}")
        fake.revoked.add("t1")
        result = await provider.send("{}")
    finally:
        await provider.close()
    assert result.wamid == "gBEG-t2"
    assert fake.sends() == ["Bearer t1", "Bearer t1", "Bearer t2"]


async def test_on_prem_concurrent_sends_share_one_login(platform: FakePlatform) -> None:
    fake = OnPremFake(platform)
    fake.login_delay_s = 0.05
    provider = onprem(await platform.start())  # type: ignore[attr-defined]
    try:
        results = await asyncio.gather(*(provider.send("{}") for _ in range(10)))
    finally:
        await provider.close()
    assert fake.tokens == ["t1"]
    assert {r.wamid for r in results} == {"gBEG-t1"}


async def test_on_prem_refused_credentials_stop_the_sender(platform: FakePlatform) -> None:
    OnPremFake(platform)
    provider = onprem(await platform.start(), username="intruder")  # type: ignore[attr-defined]
    try:
        with pytest.raises(SenderFatalError, match="login refused"):
            await provider.send("{}")
    finally:
        await provider.close()


async def test_on_prem_errors_are_classified_by_their_code(platform: FakePlatform) -> None:
    OnPremFake(platform)
    provider = onprem(await platform.start())  # type: ignore[attr-defined]
    try:
        with pytest.raises(RecipientError) as caught:
            await provider.send('{"to":"blocked"}')
        assert await provider.read_limits() == PhoneLimits()
    finally:
        await provider.close()
    assert caught.value.code == 131026
    assert caught.value.title == "Message undeliverable"


async def test_on_prem_login_that_gets_no_answer_is_transient_not_unknown() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with raw_server(hang_up) as port:
        provider = onprem(f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(TransientError, match="login"):
                await provider.send("{}")
        finally:
            await provider.close()


# -- factory -------------------------------------------------------------------------------------


def test_make_provider_builds_the_client_the_sender_asks_for_with_a_pool_sized_to_rate_and_latency() -> None:
    settings, _ = load_settings(
        environ={"WACAMP_API_BASE_URL": "http://127.0.0.1:1", "WACAMP_ACCESS_TOKEN": "x"}
    )
    cloud_sender = SenderSettings(name="c", phone_number_id="42", api="cloud", profile="cloud")
    onprem_sender = SenderSettings(name="o", phone_number_id="43", api="onprem", profile="onprem-single")
    fast = SenderSettings(name="f", phone_number_id="44", api="cloud", profile="cloud-high")
    made = make_provider(settings, cloud_sender)
    assert isinstance(made, CloudProvider)
    assert made.messages_url == "http://127.0.0.1:1/v23.0/42/messages"
    assert made.pool_limit == 40  # 80/s × 0.25 s × 2
    assert isinstance(make_provider(settings, onprem_sender), OnPremProvider)
    assert make_provider(settings, fast).pool_limit == settings.dispatch.max_in_flight


async def test_on_prem_token_expiry_in_the_past_triggers_a_login_before_every_send(
    platform: FakePlatform,
) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S+00:00")
    fake = OnPremFake(platform, expires_after=past)
    provider = onprem(await platform.start())  # type: ignore[attr-defined]
    try:
        await provider.send("{}")
        await provider.send("{}")
    finally:
        await provider.close()
    assert fake.tokens == ["t1", "t2"]

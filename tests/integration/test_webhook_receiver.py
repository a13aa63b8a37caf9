"""The receiver over real HTTP: signature, size limit, verification, durable before 200."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.exceptions import ConfigError
from campaigns.core.models import WEBHOOK_INBOX_TABLE as INBOX
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from scheduler.webhooks.processor import process_pending
from scheduler.webhooks.server import WebhookServer
from scheduler.webhooks.signature import HEADER, sign
from tests.ledger_factory import inbound_body, status_body

SECRET = "sandbox-secret"


def make_settings(**overrides: object) -> Settings:
    settings, _ = load_settings(environ={}, overrides={"whatsapp.verify_token": "tok", **overrides})
    return settings


@pytest.fixture
async def server(engine: Engine) -> AsyncIterator[WebhookServer]:
    async with WebhookServer(
        engine, make_settings(), host="127.0.0.1", port=0, sandbox=True, process=False
    ) as srv:
        yield srv


def inbox_rows(engine: Engine) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(INBOX).order_by(INBOX.c.id)))


async def post(url: str, body: bytes, *, signature: str | None) -> aiohttp.ClientResponse:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[HEADER] = signature
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        await response.read()
        return response


async def test_a_signed_post_is_stored_before_the_200_answer(server: WebhookServer, engine: Engine) -> None:
    body = json.dumps(status_body(wamid="wamid.A", status="sent")).encode()
    response = await post(server.url, body, signature=sign(SECRET, body))
    assert response.status == 200
    rows = inbox_rows(engine)  # no processing step in between: the 200 already meant "stored"
    assert [r.body for r in rows] == [body.decode()]
    assert rows[0].processed_at is None


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "md5=abc", ""])
async def test_an_unsigned_or_badly_signed_post_gets_401_and_nothing_is_stored(
    server: WebhookServer, engine: Engine, signature: str | None
) -> None:
    body = json.dumps(status_body(wamid="wamid.A", status="sent")).encode()
    response = await post(server.url, body, signature=signature)
    assert response.status == 401
    assert inbox_rows(engine) == []


async def test_a_signature_of_other_bytes_is_refused_even_when_the_json_is_the_same(
    server: WebhookServer, engine: Engine
) -> None:
    payload = status_body(wamid="wamid.A", status="sent")
    signed = json.dumps(payload).encode()
    sent = json.dumps(payload, indent=1).encode()  # same JSON, different raw bytes
    response = await post(server.url, sent, signature=sign(SECRET, signed))
    assert response.status == 401
    assert inbox_rows(engine) == []


async def test_a_body_over_the_size_limit_gets_413_and_nothing_is_stored(engine: Engine) -> None:
    settings = make_settings(**{"webhooks.max_body_bytes": 2048})
    async with WebhookServer(engine, settings, port=0, sandbox=True, process=False) as srv:
        body = b'{"entry": []' + b" " * 4096 + b"}"
        response = await post(srv.url, body, signature=sign(SECRET, body))
    assert response.status == 413
    assert inbox_rows(engine) == []


async def test_correctly_signed_malformed_json_is_answered_200_and_kept_with_an_error(
    server: WebhookServer, engine: Engine
) -> None:
    body = b'{"object": "whatsapp_business_account", "entry": [ broken'
    response = await post(server.url, body, signature=sign(SECRET, body))
    assert response.status == 200
    result = process_pending(engine, server.settings)
    assert result.errors == 1
    (row,) = inbox_rows(engine)
    assert row.processed_at is not None
    assert row.error.startswith("malformed JSON")
    assert row.body == body.decode()


async def test_a_body_that_is_not_utf8_is_kept_with_an_error(server: WebhookServer, engine: Engine) -> None:
    body = b'{"entry": ["\xff\xfe"]}'
    response = await post(server.url, body, signature=sign(SECRET, body))
    assert response.status == 200
    process_pending(engine, server.settings)
    (row,) = inbox_rows(engine)
    assert row.error == "body is not UTF-8"


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        (
            {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1158201444"},
            200,
            "1158201444",
        ),
        ({"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}, 403, None),
        ({"hub.mode": "unsubscribe", "hub.verify_token": "tok", "hub.challenge": "1"}, 403, None),
        ({}, 403, None),
    ],
)
async def test_the_verification_get_echoes_the_challenge_only_for_the_right_token(
    server: WebhookServer, query: dict[str, str], status: int, text: str | None
) -> None:
    async with aiohttp.ClientSession() as session, session.get(server.url, params=query) as response:
        assert response.status == status
        if text is not None:
            assert await response.text() == text


def test_the_receiver_refuses_to_start_without_an_app_secret_outside_the_sandbox(engine: Engine) -> None:
    with pytest.raises(ConfigError, match="no app secret"):
        WebhookServer(engine, make_settings(), port=0)


def test_the_receiver_refuses_the_sandbox_secret_as_a_real_app_secret(engine: Engine) -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        WebhookServer(engine, make_settings(**{"whatsapp.app_secret": "sandbox-secret"}), port=0)


async def test_the_receiver_uses_the_configured_app_secret_outside_the_sandbox(engine: Engine) -> None:
    settings = make_settings(**{"whatsapp.app_secret": "real-secret"})
    async with WebhookServer(engine, settings, port=0, process=False) as srv:
        body = b'{"entry": []}'
        assert (await post(srv.url, body, signature=sign(SECRET, body))).status == 401
        assert (await post(srv.url, body, signature=sign("real-secret", body))).status == 200


async def test_many_concurrent_posts_are_all_stored_in_few_transactions(
    server: WebhookServer, engine: Engine
) -> None:
    bodies = [json.dumps(status_body(wamid=f"wamid.{i}", status="sent")).encode() for i in range(300)]
    async with aiohttp.ClientSession() as session:

        async def one(body: bytes) -> int:
            headers = {HEADER: sign(SECRET, body)}
            async with session.post(server.url, data=body, headers=headers) as response:
                return response.status

        statuses = await asyncio.gather(*(one(body) for body in bodies))
    assert statuses == [200] * 300
    assert sorted(r.body for r in inbox_rows(engine)) == sorted(b.decode() for b in bodies)
    assert server.writer.commits < 300  # group commit: requests shared transactions


@pytest.mark.postgres
async def test_the_receiver_stops_with_the_processor_error_instead_of_running_half_alive(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    with engine.begin() as conn:  # a schema the processor cannot work with (not a passing outage)
        conn.exec_driver_sql("DROP TABLE inbound_message")
    try:
        async with WebhookServer(engine, make_settings(), port=0, sandbox=True) as server:
            body = json.dumps(inbound_body(phone="+393470000001", wamid="wamid.IN", text="hi")).encode()
            assert (await post(server.url, body, signature=sign(SECRET, body))).status == 200
            with pytest.raises(sa.exc.ProgrammingError):
                await asyncio.wait_for(server.wait_stopped(asyncio.Event()), timeout=30)
        assert [r.processed_at for r in inbox_rows(engine)] == [None]  # still there for a fixed processor
    finally:
        engine.dispose()

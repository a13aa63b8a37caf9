"""Helpers for tests that talk to the sandbox over real HTTP: request bodies, a client, a webhook receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from sandbox.server import RunningSandbox

TOKEN = "sandbox-token"
PHONE_ID = "100000000000001"


def spring_sale(
    to: str, *, first_name: str = "Marco", discount: str = "20%", callback: str | None = None
) -> dict[str, Any]:
    """A valid Cloud body for the sample `spring_sale` (it) template."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": "spring_sale",
            "language": {"code": "it"},
            "components": [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": first_name}, {"type": "text", "text": discount}],
                },
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "STOP"}],
                },
            ],
        },
    }
    if callback is not None:
        body["biz_opaque_callback_data"] = callback
    return body


def template_body(to: str, name: str, language: str, components: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {"name": name, "language": {"code": language}, "components": components},
    }


def numbers(count: int, *, start: int = 0) -> list[str]:
    """Distinct Italian mobile numbers (E.164)."""
    return [f"+39347{start + i:07d}" for i in range(count)]


@dataclass
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> int | None:
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None


class SandboxClient:
    """A real aiohttp client for one running sandbox."""

    def __init__(self, sandbox: RunningSandbox, session: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.session = session
        self.messages_url = f"{sandbox.base_url}/v23.0/{sandbox.config.phone_number_id}/messages"

    async def send(self, body: dict[str, Any] | bytes, *, token: str = TOKEN) -> Answer:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with self.session.post(self.messages_url, data=data, headers=headers) as response:
            return Answer(response.status, await response.json())

    async def get(self, path: str, *, token: str = TOKEN, **params: str) -> Answer:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.get(
            f"{self.sandbox.base_url}{path}", params=params, headers=headers
        ) as response:
            return Answer(response.status, await response.json())

    async def inbound(self, **data: Any) -> Answer:
        async with self.session.post(f"{self.sandbox.base_url}/_sandbox/inbound", json=data) as response:
            return Answer(response.status, await response.json())


@dataclass
class Receiver:
    """A webhook receiver: a real aiohttp server that records every POST (raw bytes and headers)."""

    url: str = ""
    app_secret: str = "sandbox-secret"
    posts: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    #: Answer this many POSTs with 500 before answering 200 (or always, with a negative number).
    fail_first: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.fail_first != 0:
            self.fail_first -= 1
            return web.Response(status=500)
        self.posts.append((raw, dict(request.headers)))
        self.arrived.set()
        return web.Response(text="ok")

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw, _ in self.posts]

    def signature_ok(self, raw: bytes, headers: dict[str, str]) -> bool:
        expected = "sha256=" + hmac.new(self.app_secret.encode(), raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(headers.get("X-Hub-Signature-256", ""), expected)

    def changes(self, field_name: str) -> list[dict[str, Any]]:
        return [
            change["value"]
            for payload in self.payloads()
            for entry in payload["entry"]
            for change in entry["changes"]
            if change["field"] == field_name
        ]

    def statuses(self) -> list[dict[str, Any]]:
        return [status for value in self.changes("messages") for status in value.get("statuses", [])]


@asynccontextmanager
async def receiving(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """Serve a `Receiver` on a free port for the `async with` body."""
    receiver = receiver or Receiver()
    app = web.Application()
    app.router.add_post("/webhook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/webhook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client_for(sandbox: RunningSandbox) -> AsyncIterator[SandboxClient]:
    async with aiohttp.ClientSession() as session:
        yield SandboxClient(sandbox, session)

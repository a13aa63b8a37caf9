"""The sandbox's On-Premises API: `POST /v1/users/login` (basic auth → token) and `POST /v1/messages`."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime

from aiohttp import web

from sandbox.core import JSON
from sandbox.errors import ONPREM_META, Problem
from sandbox.sending import SendingHandlers


def _basic_credentials(header: str) -> bytes:
    """The `user:password` bytes of a basic Authorization header (empty when it is not one)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return b""
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return b""


class OnPremHandlers(SendingHandlers):
    """The On-Premises login and send endpoints (the send path is the Cloud API's, `SendingHandlers`)."""

    async def handle_onprem_login(self, request: web.Request) -> web.Response:
        """`POST /v1/users/login` with basic auth: a bearer token and when it expires."""
        expected = f"{self.config.onprem_username}:{self.config.onprem_password}".encode()
        if not secrets.compare_digest(_basic_credentials(request.headers.get("Authorization", "")), expected):
            return self._onprem_error(Problem(1005, "Invalid credentials.", http_status=401))
        token = secrets.token_urlsafe(32)
        expires = self.wall() + self.config.onprem_token_ttl_s
        self._onprem_tokens[token] = expires
        expires_after = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")
        body = {"users": [{"token": token, "expires_after": expires_after}], "meta": ONPREM_META}
        return web.Response(body=json.dumps(body).encode(), content_type=JSON)

    def _onprem_authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        expires = self._onprem_tokens.get(token)
        return expires is not None and expires > self.wall()

    async def handle_onprem_send(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/messages` (On-Premises shape: no messaging_product, `{"messages":[{"id"}]}`)."""
        if not self._onprem_authorized(request):
            self.state.note_request(self.clock())
            problem = Problem(
                0, "Invalid or expired token: log in with POST /v1/users/login.", http_status=401
            )
            return self._onprem_error(problem)
        outcome = await self._send(await request.read(), self.config.phone_number_id, cloud=False)
        if isinstance(outcome, Problem):
            return self._onprem_error(outcome)
        body = {"messages": [{"id": outcome.wamid}], "meta": ONPREM_META}
        return self._answer(request, json.dumps(body).encode(), reset=outcome.reset)

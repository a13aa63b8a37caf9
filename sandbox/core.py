"""What every API area of the sandbox shares: its parts, its error answers and its authorization.

`sandbox.server.Sandbox` builds these parts; the handler classes (`sandbox.sending`, `sandbox.onprem_api`,
`sandbox.management`) read them through this base.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from aiohttp import web

from sandbox.config import SandboxConfig
from sandbox.errors import Problem, cloud_error_body, onprem_error_body
from sandbox.faults import FaultPlan
from sandbox.marketing import MarketingDesk
from sandbox.media import MediaStore
from sandbox.pacing import TemplatePacer
from sandbox.state import SandboxState
from sandbox.template_review import TemplateReviewer
from sandbox.templates import TemplateBook
from sandbox.webhooks import WebhookEmitter

JSON = "application/json"


class SandboxCore:
    """The platform simulator's parts and the answers shared by its handlers (built by `Sandbox`)."""

    config: SandboxConfig
    clock: Callable[[], float]
    wall: Callable[[], float]
    state: SandboxState
    book: TemplateBook
    faults: FaultPlan
    emitter: WebhookEmitter | None
    media: MediaStore
    reviewer: TemplateReviewer
    marketing: MarketingDesk
    pacer: TemplatePacer
    _bearer: str
    _onprem_tokens: dict[str, float]

    def _cloud_error(self, problem: Problem) -> web.Response:
        self.state.note_error(problem.code)
        status = problem.status(throttle_status=self.config.throttle_status)
        return web.Response(body=cloud_error_body(problem), status=status, content_type=JSON)

    def _onprem_error(self, problem: Problem) -> web.Response:
        self.state.note_error(problem.code)
        status = problem.status(throttle_status=self.config.throttle_status)
        return web.Response(body=onprem_error_body(problem), status=status, content_type=JSON)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization")
        if header is not None:
            return secrets.compare_digest(header, self._bearer)
        token = request.query.get("access_token", "")
        return bool(token) and secrets.compare_digest(token, self.config.access_token)

    def _answer(self, request: web.Request, body: bytes, *, reset: bool) -> web.StreamResponse:
        if reset:
            self.state.resets_after_accept += 1
            if request.transport is not None:
                request.transport.abort()
        return web.Response(body=body, content_type=JSON)

    def _not_found(self, node_id: str) -> web.Response:
        details = f"Unsupported request. Object with ID '{node_id}' does not exist or lacks permissions."
        return self._cloud_error(Problem(100, details))

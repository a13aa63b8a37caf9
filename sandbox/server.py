"""The sandbox HTTP server: Cloud API and On-Premises API endpoints, plus `/_sandbox/*` controls.

Start it in-process with `running_sandbox(SandboxConfig(...))` (tests, benchmarks) or with
`wacamp sandbox serve` (which calls `serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from sandbox.config import SandboxConfig
from sandbox.core import JSON
from sandbox.errors import Problem
from sandbox.faults import FaultPlan
from sandbox.inbound import inbound_change
from sandbox.management import ManagementHandlers
from sandbox.marketing import MarketingDesk
from sandbox.media import MediaStore
from sandbox.onprem_api import OnPremHandlers
from sandbox.pacing import TemplatePacer
from sandbox.samples import sample_templates
from sandbox.state import SandboxState, SandboxStats
from sandbox.template_review import TemplateReviewer
from sandbox.templates import TemplateBook
from sandbox.webhooks import WebhookEmitter


class Sandbox(OnPremHandlers, ManagementHandlers):
    """The platform simulator: its state, its templates, its faults and its handlers (by API area)."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall
        self.state = SandboxState(clock=clock)
        self.book = TemplateBook(config.templates if config.templates is not None else sample_templates())
        self.faults = FaultPlan(config, started_at=self.state.started_at)
        self.emitter: WebhookEmitter | None = None
        self.media = MediaStore()
        self.reviewer = TemplateReviewer(
            config=config, book=self.book, emitter=lambda: self.emitter, clock=clock
        )
        self.marketing = MarketingDesk(config)
        self.pacer = TemplatePacer(config.pacing, pause_template=self._pause_paced)
        self._bearer = f"Bearer {config.access_token}"
        self._onprem_tokens: dict[str, float] = {}

    # -- application -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """The aiohttp application (webhook emitter started and stopped with it)."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/_sandbox/stats", self.handle_stats)
        app.router.add_post("/_sandbox/inbound", self.handle_inbound)
        app.router.add_post("/v1/users/login", self.handle_onprem_login)
        app.router.add_post("/v1/messages", self.handle_onprem_send)
        app.router.add_post("/{version}/{phone_number_id}/messages", self.handle_cloud_send)
        app.router.add_post("/{version}/{phone_number_id}/marketing_messages", self.handle_marketing_send)
        app.router.add_post("/_sandbox/marketing", self.handle_marketing_control)
        app.router.add_post("/_sandbox/pacing", self.handle_pacing_control)
        app.router.add_post("/{version}/{phone_number_id}/media", self.handle_media_upload)
        app.router.add_get("/_sandbox/media", self.handle_media_list)
        app.router.add_get("/{version}/{waba_id}/message_templates", self.handle_templates)
        app.router.add_post("/{version}/{waba_id}/message_templates", self.handle_template_submit)
        app.router.add_delete("/{version}/{waba_id}/message_templates", self.handle_template_delete)
        app.router.add_get("/{version}/{node_id}", self.handle_phone_number)
        app.on_startup.append(self._start_emitter)
        app.on_cleanup.append(self._stop_emitter)
        return app

    async def _start_emitter(self, _app: web.Application) -> None:
        if self.config.webhook_url:
            self.emitter = WebhookEmitter(
                url=self.config.webhook_url, config=self.config, counts=self.state.webhooks
            )
            await self.emitter.start()

    async def _stop_emitter(self, _app: web.Application) -> None:
        self.pacer.close()
        self.reviewer.close()
        if self.emitter is not None:
            await self.emitter.close()

    def stats(self) -> SandboxStats:
        """A snapshot of the counters."""
        return self.state.snapshot()

    async def handle_marketing_control(self, request: web.Request) -> web.Response:
        """`POST /_sandbox/marketing`: switch terms acceptance and the template warm-up at run time."""
        try:
            data = await request.json()
        except ValueError:
            data = None
        answer = self.marketing.control(data)
        if isinstance(answer, Problem):
            return self._cloud_error(answer)
        return web.Response(body=json.dumps(answer).encode(), content_type=JSON)

    async def handle_pacing_control(self, request: web.Request) -> web.Response:
        """`POST /_sandbox/pacing`: pace a template from now on (`sandbox.pacing`), `{}` stops pacing."""
        try:
            data = await request.json()
        except ValueError:
            data = None
        answer = self.pacer.control(data)
        if isinstance(answer, str):
            return self._cloud_error(Problem(100, answer))
        return web.Response(body=json.dumps(answer).encode(), content_type=JSON)

    # -- sandbox controls --------------------------------------------------------------------------

    async def handle_stats(self, request: web.Request) -> web.Response:
        """`GET /_sandbox/stats[?per_recipient=0]`: the counters as JSON."""
        per_recipient = request.query.get("per_recipient", "1") not in ("0", "false", "no")
        body = self.stats().to_json(per_recipient=per_recipient)
        return web.Response(body=json.dumps(body).encode(), content_type=JSON)

    async def handle_inbound(self, request: web.Request) -> web.Response:
        """`POST /_sandbox/inbound`: a user writes, taps a button or stops marketing; emits its webhook."""
        try:
            data = await request.json()
        except ValueError:
            data = None
        change = inbound_change(data, config=self.config, state=self.state, wall_s=self.wall())
        if isinstance(change, Problem):
            return self._cloud_error(change)
        field, value, message_id = change
        queued = self.emitter is not None
        if self.emitter is not None:
            self.emitter.schedule(field=field, value=value, at=self.clock())
        body = {"queued": queued, "field": field, "message_id": message_id, "value": value}
        return web.Response(body=json.dumps(body).encode(), content_type=JSON)


@dataclass
class RunningSandbox:
    """A sandbox serving on a real port: its base URL, config, stats and webhook drain."""

    sandbox: Sandbox
    base_url: str

    @property
    def config(self) -> SandboxConfig:
        """The configuration it runs with."""
        return self.sandbox.config

    def stats(self) -> SandboxStats:
        """A snapshot of the counters (what `GET /_sandbox/stats` returns)."""
        return self.sandbox.stats()

    async def webhooks_drained(self, *, timeout_s: float = 30.0) -> bool:
        """Wait until every planned webhook was delivered or given up (True) or `timeout_s` passed."""
        if self.sandbox.emitter is None:
            return True
        return await self.sandbox.emitter.drained(timeout_s=timeout_s)


@contextlib.asynccontextmanager
async def running_sandbox(config: SandboxConfig | None = None) -> AsyncIterator[RunningSandbox]:
    """Serve a sandbox on `config.host:config.port` (port 0 = a free one) for the `async with` body."""
    config = config or SandboxConfig()
    sandbox = Sandbox(config)
    runner = web.AppRunner(sandbox.build_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield RunningSandbox(sandbox=sandbox, base_url=f"http://{host}:{port}")
    finally:
        await runner.cleanup()


def listening_line(base_url: str) -> str:
    """The line `wacamp sandbox serve` prints once it listens (tests parse it)."""
    return f"sandbox listening on {base_url}"


async def serve(config: SandboxConfig, *, announce: Callable[[str], None], stop: asyncio.Event) -> None:
    """Serve until `stop` is set; `announce` gets the listening line."""
    async with running_sandbox(config) as running:
        announce(listening_line(running.base_url))
        await stop.wait()

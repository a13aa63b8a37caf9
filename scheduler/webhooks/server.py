"""The webhook receiver: an aiohttp application and `WebhookServer` to run it (CLI, tests, demo).

POST handling, in this order, before any parsing: refuse a body over the size limit (413, from the
Content-Length header, before reading), read the raw bytes, check the HMAC signature over exactly
those bytes (401 and nothing stored when it is missing or wrong), store the raw body in
`webhook_inbox` through the group-commit writer, answer 200. The body is parsed later, by the
processor. A correctly signed body that is not JSON is still stored and answered 200: the processor
marks its inbox row with the error and it stays there for inspection. Answering an error would make
the platform redeliver it for days, and it would never get better.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine

from campaigns.core.exceptions import ConfigError
from campaigns.core.settings import Settings
from scheduler.webhooks.inbox import InboxItem, InboxWriter
from scheduler.webhooks.processor import ProcessResult, pending_count, process_pending, run_processor
from scheduler.webhooks.signature import HEADER, is_valid

log = logging.getLogger(__name__)

_WRITER = web.AppKey("writer", InboxWriter)
#: The processor beside the receiver works in short batches and at most this share of the time, so the
#: event loop (which shares the GIL with the processor's thread) keeps answering fast under load.
PROCESSOR_BUSY_SHARE = 0.5
PROCESSOR_BATCH_ROWS = 100
_CONFIG = web.AppKey("config", dict[str, Any])


def resolve_app_secret(settings: Settings, *, sandbox: bool) -> str:
    """The secret that signs webhooks: [whatsapp] app_secret, or [sandbox] app_secret with --sandbox."""
    if sandbox:
        return settings.sandbox.app_secret
    secret = settings.whatsapp.app_secret
    if not secret:
        raise ConfigError(
            "webhooks: no app secret: set [whatsapp] app_secret (or WACAMP_APP_SECRET), or use --sandbox"
        )
    if secret == settings.sandbox.app_secret:
        raise ConfigError("webhooks: [whatsapp] app_secret is the sandbox's placeholder; set the real one")
    return secret


def make_app(
    *, writer: InboxWriter, app_secret: str, verify_token: str, path: str, max_body_bytes: int
) -> web.Application:
    """The aiohttp application: GET verification and signed POSTs on `path`."""
    app = web.Application(client_max_size=max_body_bytes)
    app[_WRITER] = writer
    app[_CONFIG] = {"secret": app_secret, "verify_token": verify_token, "max_body_bytes": max_body_bytes}
    app.router.add_get(path, _verify)
    app.router.add_post(path, _receive)
    return app


async def _verify(request: web.Request) -> web.Response:
    config = request.app[_CONFIG]
    mode = request.query.get("hub.mode", "")
    token = request.query.get("hub.verify_token", "")
    expected = config["verify_token"]
    if mode == "subscribe" and expected and hmac.compare_digest(token.encode(), expected.encode()):
        return web.Response(text=request.query.get("hub.challenge", ""))
    return web.Response(status=403, text="verification failed")


def _decode(body: bytes) -> InboxItem:
    """The stored text of a body; bytes that cannot be stored as text are replaced and flagged."""
    try:
        text, error = body.decode("utf-8"), None
    except UnicodeDecodeError:
        text, error = body.decode("utf-8", "replace"), "body is not UTF-8"
    if "\x00" in text:  # PostgreSQL text cannot hold NUL: one bad body must not fail its whole batch
        text, error = text.replace("\x00", "\ufffd"), "body contains NUL characters"
    return InboxItem(text, error)


async def _receive(request: web.Request) -> web.Response:
    config = request.app[_CONFIG]
    if request.content_length is not None and request.content_length > config["max_body_bytes"]:
        return web.Response(status=413, text="body too large")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return web.Response(status=413, text="body too large")
    if not is_valid(config["secret"], body, request.headers.get(HEADER)):
        return web.Response(status=401, text="bad signature")
    try:
        await request.app[_WRITER].store(_decode(body))
    except Exception:  # not stored: say so, the platform will deliver it again
        log.exception("webhook body could not be stored")
        return web.Response(status=500, text="not stored")
    return web.Response(text="OK")


class WebhookServer:
    """The receiver (and by default the processor) running in this event loop.

    ::

        async with WebhookServer(engine, settings, port=0, sandbox=True) as server:
            print(server.url)       # http://127.0.0.1:54321/webhook
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
        path: str | None = None,
        sandbox: bool = False,
        process: bool = True,
        app_secret: str | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.host = host if host is not None else settings.webhooks.host
        self.port = port if port is not None else settings.webhooks.port
        self.path = path or settings.webhooks.path
        #: An explicit secret (e.g. an in-process sandbox's) wins over the settings.
        self.app_secret = app_secret or resolve_app_secret(settings, sandbox=sandbox)
        self.process = process
        self.writer = InboxWriter(engine)
        self.processed = ProcessResult()
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._processor: asyncio.Task[ProcessResult] | None = None

    @property
    def url(self) -> str:
        """The URL to give the platform (or the sandbox) as the callback."""
        return f"http://{self.host}:{self.port}{self.path}"

    async def __aenter__(self) -> WebhookServer:
        await self.writer.__aenter__()
        app = make_app(
            writer=self.writer,
            app_secret=self.app_secret,
            verify_token=self.settings.whatsapp.verify_token,
            path=self.path,
            max_body_bytes=self.settings.webhooks.max_body_bytes,
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if self.process:
            self.start_processing()
        return self

    def start_processing(self) -> None:
        """Start the background processor (when built with process=False, e.g. before the schema exists)."""
        if self._processor is None:
            processor = run_processor(
                self.engine,
                self.settings,
                stop=self._stop,
                busy_share=PROCESSOR_BUSY_SHARE,
                batch_rows=min(self.settings.webhooks.process_batch, PROCESSOR_BATCH_ROWS),
            )
            self._processor = asyncio.create_task(processor, name="webhook-processor")

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # stop accepting; requests in flight finish and are stored
        await self.writer.__aexit__(None, None, None)
        self._stop.set()
        if self._processor is not None:
            try:
                self.processed = await self._processor
            except asyncio.CancelledError:
                pass
            except Exception:  # surfaced by wait_stopped when someone waits; never mask the caller's own exit
                log.exception("the webhook processor failed; stored bodies stay in the inbox")

    async def wait_stopped(self, stop: asyncio.Event) -> None:
        """Wait for `stop`; raise if the background processor died first (a half-alive receiver is worse)."""
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait(), name="webhooks-stop")]
        if self._processor is not None:
            waiters.append(self._processor)
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        waiters[0].cancel()
        if self._processor is not None and self._processor in done and not stop.is_set():
            self._processor.result()  # re-raises the processor's error
            raise RuntimeError("the webhook processor stopped unexpectedly")

    async def wait_processed(self, *, timeout_s: float = 10.0) -> None:
        """Wait until every body stored so far has been processed (tests and the demo use it)."""
        async with asyncio.timeout(timeout_s):
            while await asyncio.to_thread(pending_count, self.engine) > 0:
                await asyncio.to_thread(process_pending, self.engine, self.settings)
                await asyncio.sleep(0.02)

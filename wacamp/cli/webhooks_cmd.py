"""`wacamp webhooks serve|process`: receive the platform's webhooks and apply them to the ledger."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import asdict

import click

from scheduler.webhooks.processor import ProcessResult, pending_count, process_pending, run_processor
from scheduler.webhooks.server import WebhookServer
from wacamp.cli.common import AppContext, err_console, json_option, out_console, pass_app, print_json


@click.group("webhooks")
def webhooks_group() -> None:
    """Receive delivery statuses, replies and account events from the platform.

    \b
    Every POST is checked (HMAC-SHA256 with the app secret), stored in the database before the
    200 answer, then applied to the ledger in batches. See docs/webhooks.md.
    """


@webhooks_group.command("serve")
@click.option("--host", help="Interface to listen on. Default: [webhooks] host.")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port (0 = any free port). Default: [webhooks] port."
)
@click.option("--path", "path", help="URL path of the callback. Default: [webhooks] path.")
@click.option(
    "--sandbox", is_flag=True, help="Check signatures with the [sandbox] app_secret (for `wacamp sandbox`)."
)
@click.option(
    "--no-process", is_flag=True, help="Only store webhooks; apply them later with `webhooks process`."
)
@pass_app
def serve_command(
    app: AppContext, host: str | None, port: int | None, path: str | None, sandbox: bool, no_process: bool
) -> None:
    """Run the webhook receiver until Ctrl-C (or SIGTERM).

    \b
    Examples:
      wacamp webhooks serve                        listen on [webhooks] host:port/path
      wacamp webhooks serve --port 9000 --path /wa
      wacamp webhooks serve --sandbox --port 0     receive the sandbox's signed webhooks

    Refuses to start without [whatsapp] app_secret (WACAMP_APP_SECRET) unless --sandbox.
    """
    server = WebhookServer(
        app.engine, app.settings, host=host, port=port, path=path, sandbox=sandbox, process=not no_process
    )
    asyncio.run(_serve(server))


async def _serve(server: WebhookServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        err_console.print(f"webhooks: listening on {server.url} (Ctrl-C stops)")
        await server.wait_stopped(stop)
        err_console.print("webhooks: stopping: finishing requests in flight, processing what was stored")
    err_console.print(
        f"webhooks: stored {server.writer.stored} bodies, processed {server.processed.rows} rows"
    )


@webhooks_group.command("process")
@click.option("--follow", is_flag=True, help="Keep processing as bodies arrive, until Ctrl-C (or SIGTERM).")
@json_option
@pass_app
def process_command(app: AppContext, follow: bool, as_json: bool) -> None:
    """Apply every stored, unprocessed webhook to the ledger now (safe to run at any time, twice).

    \b
    Examples:
      wacamp webhooks process --json
      wacamp webhooks serve --no-process & wacamp webhooks process --follow
                                         receiver and processor in two processes (two cores)
    """
    result = asyncio.run(_follow(app)) if follow else process_pending(app.engine, app.settings)
    data = {**asdict(result), "pending": pending_count(app.engine)}
    if as_json:
        print_json(data)
        return
    out_console.print(
        f"processed {result.rows} webhook bodies ({result.events} events, {result.errors} with errors); "
        f"{data['pending']} pending"
    )


async def _follow(app: AppContext) -> ProcessResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    err_console.print("webhooks: processing the inbox as it fills (Ctrl-C stops)")
    return await run_processor(app.engine, app.settings, stop=stop)


COMMANDS: list[click.Command] = [webhooks_group]

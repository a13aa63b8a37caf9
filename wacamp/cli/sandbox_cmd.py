"""`wacamp sandbox ...`: the embedded WhatsApp platform simulator."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from campaigns.core.exceptions import UserError
from sandbox.config import FAULT_NAMES, SandboxConfig
from sandbox.propensity import Propensity
from sandbox.samples import sample_contacts_text, sample_templates_text
from sandbox.server import serve
from wacamp.cli.common import AppContext, json_option, out_console, pass_app, print_json


@click.group("sandbox")
def sandbox_group() -> None:
    """A local WhatsApp platform simulator: rehearse campaigns without a Meta account.

    \b
    Start it, then point wacamp at it:
      wacamp sandbox serve --port 8900 --webhook-url http://127.0.0.1:8080/webhook
      WACAMP_API_BASE_URL=http://127.0.0.1:8900 WACAMP_ACCESS_TOKEN=sandbox-token wacamp campaigns run spring
    See docs/sandbox.md for its endpoints, behaviours, faults and sample data.
    """


def _fault_names(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in FAULT_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown fault {unknown[0]!r} (known: {', '.join(FAULT_NAMES)})")
    return names


def _behaviours(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Propensity]:
    parsed: dict[str, Propensity] = {}
    for value in values:
        try:
            name, propensity = Propensity.parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        parsed[name] = propensity
    return parsed


@sandbox_group.command("serve")
@click.option("--host", help="Interface to listen on. [default: [sandbox] host]")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port (0 = any free one). [default: [sandbox] port]"
)
@click.option(
    "--mps", type=click.IntRange(min=0), help="Messages/s per phone number before 130429 (0 = off)."
)
@click.option("--webhook-url", help="Where to POST signed webhooks (statuses, replies). Default: none.")
@click.option("--app-secret", help="Signs webhooks (X-Hub-Signature-256). [default: [sandbox] app_secret]")
@click.option(
    "--access-token", help="The bearer token requests must carry. [default: [sandbox] access_token]"
)
@click.option("--seed", type=int, default=0, help="Makes outcomes and faults repeatable.")
@click.option(
    "--faults", default="", callback=_fault_names, help=f"Comma separated: {', '.join(FAULT_NAMES)}."
)
@click.option(
    "--throttle-status",
    type=click.Choice(["400", "429"]),
    help="HTTP status of 130429/131056. [default: [sandbox] throttle_status]",
)
@click.option(
    "--pair-spacing-s",
    type=click.FloatRange(min=0),
    help="131056 below this gap (0 = off). [default: [limits] pair_spacing_s]",
)
@click.option(
    "--not-on-whatsapp-share",
    type=click.FloatRange(0, 1),
    default=0.02,
    help="Share of numbers (by seed) that fail later with 131026.",
)
@click.option(
    "--marketing-limit-share",
    type=click.FloatRange(0, 1),
    default=0.02,
    help="Share of numbers (by seed) whose marketing sends fail later with 131049.",
)
@click.option(
    "--review-s",
    type=click.FloatRange(min=0),
    default=2.0,
    help="Templates submitted with `wacamp templates create` are reviewed this many seconds later: "
    "a name containing 'reject' is REJECTED, any other APPROVED (status webhook sent).",
)
@click.option(
    "--template-behaviour",
    "behaviour",
    multiple=True,
    callback=_behaviours,
    metavar="NAME[/LANG]:read=S,reply=S,optout=S",
    help="How recipients react to one template (shares, by seed): read it, reply, answer STOP. "
    "For rollout and A/B rehearsals, e.g. spring_sale:optout=0.3 or spring_sale/en:read=0.6.",
)
@pass_app
def serve_command(
    app: AppContext,
    host: str | None,
    port: int | None,
    mps: int | None,
    webhook_url: str | None,
    app_secret: str | None,
    access_token: str | None,
    seed: int,
    faults: tuple[str, ...],
    throttle_status: str | None,
    pair_spacing_s: float | None,
    not_on_whatsapp_share: float,
    marketing_limit_share: float,
    review_s: float,
    behaviour: dict[str, Propensity],
) -> None:
    """Serve the sandbox until Ctrl-C. Prints `sandbox listening on http://HOST:PORT` on stdout.

    \b
    Examples:
      wacamp sandbox serve
      wacamp sandbox serve --port 0 --mps 0 --pair-spacing-s 0        limits off (benchmarks)
      wacamp sandbox serve --webhook-url http://127.0.0.1:8080/webhook --faults flaky,slow --seed 7
      wacamp sandbox serve --webhook-url URL --template-behaviour spring_sale:optout=0.3   STOP from 30 %
    """
    defaults = app.settings.sandbox
    config = SandboxConfig(
        host=host or defaults.host,
        port=defaults.port if port is None else port,
        mps=defaults.mps if mps is None else mps,
        access_token=access_token or defaults.access_token,
        app_secret=app_secret or defaults.app_secret,
        phone_number_id=defaults.phone_number_id,
        waba_id=defaults.waba_id,
        webhook_url=webhook_url or None,
        seed=seed,
        faults=faults,
        throttle_status=int(throttle_status) if throttle_status else defaults.throttle_status,
        pair_spacing_s=app.settings.limits.pair_spacing_s if pair_spacing_s is None else pair_spacing_s,
        not_on_whatsapp_share=not_on_whatsapp_share,
        marketing_limit_share=marketing_limit_share,
        template_review_s=review_s,
        template_behaviour=behaviour,
    )
    asyncio.run(_serve_until_signal(config))


@sandbox_group.command("samples")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="Folder to write templates.json and contacts.csv into.",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
@json_option
def samples_command(out_dir: Path, force: bool, as_json: bool) -> None:
    """Write the sandbox's sample templates (listing JSON) and 1,000 sample contacts (CSV).

    \b
    Examples:
      wacamp sandbox samples --out demo/
      wacamp templates import demo/templates.json
      wacamp contacts import demo/contacts.csv --list demo
    """
    files = {"templates.json": sample_templates_text(), "contacts.csv": sample_contacts_text()}
    existing = [name for name in files if (out_dir / name).exists()]
    if existing and not force:
        raise UserError(f"{out_dir / existing[0]} exists: use --force to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
        written.append(str(out_dir / name))
    if as_json:
        print_json({"written": written})
    else:
        for path in written:
            click.echo(path)


def _default_url(app: AppContext) -> str:
    return f"http://{app.settings.sandbox.host}:{app.settings.sandbox.port}"


def _call(url: str, *, data: dict[str, Any] | None = None) -> Any:
    """GET (or POST `data` as JSON to) a sandbox control endpoint; the JSON answer."""
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(
            f"no sandbox answers at {url} ({exc}); start one with `wacamp sandbox serve`"
        ) from exc


url_option = click.option("--url", help="The sandbox's base URL. [default: http://[sandbox] host:port]")


@sandbox_group.command("stats")
@url_option
@json_option
@pass_app
def stats_command(app: AppContext, url: str | None, as_json: bool) -> None:
    """Show what a running sandbox has seen: acceptances, busiest second, duplicates, errors, webhooks.

    \b
    Examples:
      wacamp sandbox stats
      wacamp sandbox stats --url http://127.0.0.1:8901 --json | jq .errors_by_code
    """
    stats = _call(f"{(url or _default_url(app)).rstrip('/')}/_sandbox/stats?per_recipient=0")
    if as_json:
        print_json(stats)
        return
    table = Table(title="Sandbox", show_header=False)
    rows = [
        ("requests", stats["requests"]),
        ("accepted", stats["accepted"]),
        (
            "busiest 1 s window (requests / accepted)",
            f"{stats['largest_request_window']} / {stats['largest_accepted_window']}",
        ),
        ("most accepted in any sliding second", stats["max_accepted_trailing_1s"]),
        ("duplicates (same content, same recipient)", stats["duplicates"]),
        ("errors answered, by code", _codes(stats["errors_by_code"])),
        ("failed later by webhook, by code", _codes(stats["async_failures_by_code"])),
        ("connections reset after accepting", stats["resets_after_accept"]),
        ("webhook statuses delivered", _codes(stats["webhooks"]["statuses"])),
        ("webhook POSTs given up", stats["webhooks"]["posts_given_up"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    out_console.print(table)


def _codes(counts: dict[str, int]) -> str:
    return ", ".join(f"{code}: {n}" for code, n in sorted(counts.items())) or "none"


@sandbox_group.command("reply")
@click.argument("number")
@click.option("--text", help="The user writes this text.")
@click.option("--stop", "kind", flag_value="stop", help="The user writes STOP.")
@click.option("--tap", "payload", help="The user taps a quick-reply button with this payload (e.g. STOP).")
@click.option("--opt-out", "kind", flag_value="user_preferences", help="The user stops marketing messages.")
@url_option
@json_option
@pass_app
def reply_command(
    app: AppContext,
    number: str,
    text: str | None,
    kind: str | None,
    payload: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Make a user of a running sandbox reply; the sandbox sends the matching webhook.

    \b
    Examples:
      wacamp sandbox reply +393471234567 --text "Quanto costa?"
      wacamp sandbox reply +393471234567 --stop
      wacamp sandbox reply +393471234567 --tap STOP       (answers the last message sent to that number)
      wacamp sandbox reply +393471234567 --opt-out        (user_preferences stop)
    """
    data: dict[str, Any] = {"from": number, "kind": kind or ("button" if payload else "text")}
    if text is not None:
        data["text"] = text
    if payload is not None:
        data["payload"] = payload
    answer = _call(f"{(url or _default_url(app)).rstrip('/')}/_sandbox/inbound", data=data)
    if "error" in answer:
        raise UserError(f"the sandbox refused it: {answer['error']['error_data']['details']}")
    if as_json:
        print_json(answer)
    elif answer["queued"]:
        click.echo(f"{answer['field']} webhook queued for {number}")
    else:
        click.echo("the sandbox has no --webhook-url: nothing was sent", err=True)


def _announce(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


async def _serve_until_signal(config: SandboxConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(config, announce=_announce, stop=stop)
    click.echo("sandbox stopped", err=True)


COMMANDS: list[click.Command] = [sandbox_group]

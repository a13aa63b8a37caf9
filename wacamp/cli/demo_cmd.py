"""`wacamp demo`: the whole path on embedded defaults, no Meta account needed.

A sequence of small steps (`DEMO_STEPS`), each a function of the `Demo` state, so later features
(the webhook receiver, the report) add a step instead of rewriting the demo:

    webhook receiver + sandbox (in-process, port 0) → db upgrade → webhook processing
    → templates import → contacts import → campaigns create → campaigns plan
    → campaigns run (progress) → summary → last status webhooks → report table + HTML report
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.db import make_engine, upgrade
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from sandbox.config import SandboxConfig
from sandbox.samples import sample_contacts_text, sample_templates_text
from sandbox.server import RunningSandbox, running_sandbox
from scheduler.sending.run_report import RunReport
from scheduler.webhooks.server import WebhookServer
from wacamp.cli.common import AppContext, err_console, out_console, pass_app
from wacamp.cli.run_cmd import ProgressDisplay, print_report, run_campaign

DEMO_CAMPAIGN = "demo-spring"
DEMO_LIST = "demo"
#: A MARKETING template (what campaigns send): its STOP button's payload comes back as an opt-out.
DEMO_TEMPLATE = ("spring_sale", "en")
DEMO_PARAMS = {"1": "{first_name}", "2": "20%"}
DEMO_BUTTONS = {"0": "STOP"}


@dataclass
class Demo:
    """What the steps share: the working directory, the sandbox, settings, engine and results."""

    workdir: Path
    sandbox: RunningSandbox | None = None
    receiver: WebhookServer | None = None
    settings: Settings | None = None
    engine: Engine | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    report: RunReport | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def need(self) -> tuple[Settings, Engine]:
        assert self.settings is not None and self.engine is not None, "the sandbox step comes first"
        return self.settings, self.engine


Step = Callable[[Demo], Awaitable[None]]


def say(text: str) -> None:
    err_console.print(f"[bold cyan]»[/] {text}")


def demo_settings(workdir: Path, base_url: str, sandbox: SandboxConfig) -> Settings:
    """Embedded defaults pointed at the in-process sandbox and a SQLite file in `workdir`."""
    settings, _ = load_settings(
        environ={},
        overrides={
            "database.url": f"sqlite:///{workdir / 'wacamp.db'}",
            "whatsapp.base_url": base_url,
            "whatsapp.access_token": sandbox.access_token,
            "whatsapp.app_secret": sandbox.app_secret,
            "whatsapp.phone_number_id": sandbox.phone_number_id,
            "whatsapp.waba_id": sandbox.waba_id,
        },
    )
    return settings


async def step_database(demo: Demo) -> None:
    _, engine = demo.need()
    await asyncio.to_thread(upgrade, engine)
    say(f"database {demo.workdir / 'wacamp.db'} created (`wacamp db upgrade`)")


async def step_webhooks(demo: Demo) -> None:
    assert demo.receiver is not None
    demo.receiver.start_processing()
    say(f"webhook receiver on {demo.receiver.url} stores and applies the sandbox's signed webhooks")


async def step_templates(demo: Demo) -> None:
    from campaigns.templates.catalog import load_templates_file, store_templates

    _, engine = demo.need()
    path = demo.workdir / "templates.json"
    path.write_text(sample_templates_text(), encoding="utf-8")
    stored = store_templates(engine, load_templates_file(path), mark_missing_gone=False)
    say(f"{stored.added} sample templates imported (`wacamp templates import {path.name}`)")


async def step_contacts(demo: Demo) -> None:
    from campaigns.contacts.csvfiles import CsvSource
    from campaigns.contacts.importer import ImportOptions, import_contacts

    _, engine = demo.need()
    path = demo.workdir / "contacts.csv"
    path.write_text(sample_contacts_text(), encoding="utf-8")
    with CsvSource(path) as source:
        summary = import_contacts(
            engine, source, options=ImportOptions(list_name=DEMO_LIST), on_reject=lambda _reject: None
        )
    demo.notes["contacts"] = summary
    say(
        f"sample contacts imported into list {DEMO_LIST!r} (`wacamp contacts import {path.name} --list demo`)"
    )


async def step_campaign(demo: Demo) -> None:
    from campaigns.definitions import CampaignDefinition, create_campaign
    from campaigns.planning.planner import plan_campaign

    settings, engine = demo.need()
    name, language = DEMO_TEMPLATE
    definition = CampaignDefinition(
        name=DEMO_CAMPAIGN,
        list_name=DEMO_LIST,
        template_name=name,
        language=language,
        params=DEMO_PARAMS,
        button_payloads=DEMO_BUTTONS,
    )
    create_campaign(engine, settings=settings, definition=definition)
    outcome = plan_campaign(engine, settings=settings, campaign=DEMO_CAMPAIGN)
    skipped = sum(outcome.skipped.values())
    say(
        f"campaign {DEMO_CAMPAIGN!r} ({name}/{language}) planned: {outcome.planned:,} to send, "
        f"{skipped:,} skipped (no consent)"
    )


async def step_run(demo: Demo) -> None:
    settings, engine = demo.need()
    ref = control.CampaignRef.of(control.find_campaign(engine, DEMO_CAMPAIGN))
    rate = settings.sender_rate_per_s(settings.sender(ref.sender_name))
    say(f"sending at {rate:,.0f} msg/s, the Cloud API default (`wacamp campaigns run {DEMO_CAMPAIGN}`)")
    with ProgressDisplay() as display:
        demo.report = await run_campaign(
            engine=engine, settings=settings, campaign=ref, stop=demo.stop, display=display
        )


async def step_summary(demo: Demo) -> None:
    assert demo.report is not None and demo.sandbox is not None
    print_report(demo.report)
    stats = demo.sandbox.stats()
    out_console.print(
        f"\nThe sandbox accepted {stats.accepted:,} messages, busiest second "
        f"{stats.largest_accepted_window}, {stats.duplicates} duplicates, "
        f"{sum(stats.errors_by_code.values())} errors."
    )
    out_console.print(
        f"Everything is in {demo.workdir}: try `wacamp --database-url sqlite:///{demo.workdir / 'wacamp.db'} "
        f"campaigns show {DEMO_CAMPAIGN}`."
    )


async def step_settle(demo: Demo) -> None:
    assert demo.sandbox is not None and demo.receiver is not None
    say("waiting for the last status webhooks (read receipts come a few seconds after delivery)")
    await demo.sandbox.webhooks_drained(timeout_s=60)
    await demo.receiver.wait_processed(timeout_s=60)


async def step_report(demo: Demo) -> None:
    from campaigns.report.facts import campaign_facts
    from campaigns.report.html_page import render_html
    from campaigns.report.table import render_table

    settings, engine = demo.need()
    facts = await asyncio.to_thread(campaign_facts, engine, settings=settings, campaign=DEMO_CAMPAIGN)
    path = demo.workdir / "report.html"
    path.write_text(render_html(facts), encoding="utf-8")
    out_console.print()
    render_table(facts, out_console)
    say(f"HTML report with charts: {path} (`wacamp report {DEMO_CAMPAIGN} --format html -o report.html`)")


#: The demo, in order; each step is small so later features can add their own.
DEMO_STEPS: list[Step] = [
    step_database,
    step_webhooks,
    step_templates,
    step_contacts,
    step_campaign,
    step_run,
    step_summary,
    step_settle,
    step_report,
]


@contextlib.asynccontextmanager
async def demo_sandbox(demo: Demo) -> AsyncIterator[None]:
    """The webhook receiver and the sandbox platform in this process on free ports, settings pointed at them.

    The receiver starts first (storing only: the schema does not exist yet) so the sandbox can be
    given its URL; the sandbox stops first, then the receiver applies what it stored.
    """
    bootstrap = demo_settings(demo.workdir, "http://127.0.0.1", SandboxConfig())
    demo.engine = make_engine(bootstrap.database.url)
    secret = SandboxConfig().app_secret
    try:
        async with WebhookServer(
            demo.engine, bootstrap, port=0, process=False, app_secret=secret
        ) as receiver:
            demo.receiver = receiver
            config = SandboxConfig(port=0, webhook_url=receiver.url)
            async with running_sandbox(config) as sandbox:
                demo.sandbox = sandbox
                demo.settings = demo_settings(demo.workdir, sandbox.base_url, config)
                say(f"sandbox platform listening on {sandbox.base_url} (`wacamp sandbox serve`)")
                yield
    finally:
        demo.engine.dispose()


async def run_demo(workdir: Path, *, steps: list[Step] | None = None) -> Demo:
    """Run the demo steps in `workdir` with the sandbox up; returns the final state.

    Ctrl-C stops the send cleanly (the summary still comes); a second one stops at once.
    """
    demo = Demo(workdir=workdir)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if demo.stop.is_set() and main is not None:
            main.cancel()
        demo.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with demo_sandbox(demo):
            for step in steps or DEMO_STEPS:
                await step(demo)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return demo


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Working directory to keep (default: a fresh temporary one).",
)
@pass_app
def demo_command(app: AppContext, /, directory: Path | None) -> None:
    """Run the whole path on the embedded sandbox: no Meta account, about 30 seconds.

    Starts the sandbox platform and the webhook receiver in this process, creates a SQLite
    database, imports the sample templates and 1,000 sample contacts, plans a campaign and sends it
    at 80 msg/s with a live progress line, prints the summary, waits for the last status webhooks,
    then prints the report and writes it as an HTML page with charts (report.html).

    \b
    Examples:
      wacamp demo
      wacamp demo --dir ./demo     keep the database to look at afterwards
    """
    del app  # the demo uses its own embedded settings, never the user's
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "wacamp.db").exists():
            raise click.UsageError(f"{directory} already holds a demo database: pick an empty --dir")
        workdir = directory.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="wacamp-demo-"))
    asyncio.run(run_demo(workdir))


COMMANDS: list[click.Command] = [demo_command]

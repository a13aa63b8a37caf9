"""`wacamp run-due` (for cron / systemd timers) and `wacamp worker` (long-running), for unattended use.

Exit codes of `run-due` (docs/operations.md):

- 0  nothing is left for now (every due campaign completed, or nothing was due);
- 75 work remains for a later run (tier budget spent, window closed, --until/--max-duration reached,
  a signal), or another `run-due`/`worker` holds the database's send lock (this one sent nothing);
- 1  an error: a campaign was stopped by the platform or failed, or the run itself failed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from rich.status import Status

from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import LockedError
from campaigns.core.exit_codes import ExitCode
from campaigns.core.logging_setup import configure_logging
from campaigns.core.settings import Settings
from campaigns.core.settings_sections import SenderSettings
from campaigns.rollout.review import Reviewer
from campaigns.schedule import parse_duration_s, parse_until
from scheduler.providers.base import Provider
from scheduler.runs.dispatch_runner import DispatcherRunner
from scheduler.runs.due import DueSummary, lanes_for, run_due
from scheduler.runs.metrics import WorkerMetrics
from scheduler.runs.scaleout import scale_out_parts
from scheduler.runs.worker import Worker, build_app, serving
from scheduler.sending.locks import exclusive_lock, worker_lock
from scheduler.sending.run_report import Progress
from wacamp.cli.common import AppContext, err_console, json_option, pass_app, print_json

log = logging.getLogger("wacamp.run_due")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def log_options(func: F) -> F:
    """``--log-format``, ``--log-file``, ``--log-level`` (defaults from [logging])."""
    options = [
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default=None,
            help="Log lines as text or one JSON object per line.  [default: [logging] format]",
        ),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="Append logs to this file (reopened after logrotate moves it).  [default: stderr]",
        ),
        click.option("--log-level", default=None, help="DEBUG, INFO, WARNING …  [default: [logging] level]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def setup_logging(
    app: AppContext, *, log_format: str | None, log_file: str | None, log_level: str | None
) -> None:
    """Configure logging from the options, falling back on the [logging] settings."""
    conf = app.settings.logging
    level = log_level or ("DEBUG" if app.debug else conf.level)
    configure_logging(log_format=log_format or conf.format, log_file=log_file or conf.file, level=level)


def make_provider_factory(settings: Settings) -> Callable[[SenderSettings], Provider]:
    """The real providers (Cloud or On-Premises client per sender)."""
    from scheduler.providers.factory import make_provider

    return lambda sender: make_provider(settings, sender)


def run_with_signals(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run `main(stop)` in a new loop; SIGINT/SIGTERM set `stop`, a second one cancels (forces)."""

    async def wrapper() -> T:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()

        def on_signal() -> None:
            if stop.is_set() and task is not None:
                task.cancel()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(wrapper())


def progress_printer() -> tuple[Callable[[Progress], None] | None, Status | None]:
    """A one-line live status on stderr, only when stderr is a terminal (never in cron logs)."""
    if not err_console.is_terminal:
        return None, None
    status = Status("", console=err_console)

    def show(progress: Progress) -> None:
        status.update(
            f"{progress.campaign}: {progress.accepted} accepted, {progress.failed} failed, "
            f"{progress.remaining} left, {progress.rate_per_s:.0f}/s"
        )

    return show, status


def run_deadline(*, max_duration: str | None, until: str | None, tz: str, now: datetime) -> datetime | None:
    """When the run must stop: now + --max-duration, or --until (HH:MM in --tz, or a full time)."""
    if max_duration and until:
        raise click.UsageError("give --max-duration or --until, not both")
    if max_duration:
        return now + timedelta(seconds=parse_duration_s(max_duration))
    if until:
        return parse_until(until, tz_name=tz, now=now)
    return None


def log_summary(summary: DueSummary, *, deadline: datetime | None) -> None:
    """The one summary line at the end of a run (text or JSON, per --log-format)."""
    data = summary.as_dict()
    runs = data.pop("runs")
    message = (
        f"run-due finished: {data['outcome']} (exit {data['exit_code']}), {data['campaigns']} campaign(s), "
        f"{data['accepted']} accepted, {data['failed']} failed, {data['unknown']} unknown"
    )
    for paused in summary.guardrail_pauses:
        message += f"; paused {paused.name}: {paused.outcome}"
    for warning in summary.warnings:
        message += f"; warning {warning}"
    level = logging.ERROR if summary.errors else logging.INFO
    log.log(level, message, extra={**data, "until": deadline, "campaign_runs": runs})


@click.command("run-due")
@click.option(
    "--max-duration", metavar="DURATION", help="Stop cleanly after this long: 6h, 90m, 1h30m, 3600."
)
@click.option(
    "--until",
    metavar="HH:MM|WHEN",
    help="Stop cleanly at this time: HH:MM (next occurrence in --tz) or a full time.",
)
@click.option("--tz", default="UTC", show_default=True, metavar="ZONE", help="Time zone of --until.")
@click.option(
    "--fail-on-guardrail",
    is_flag=True,
    help="Exit 1 when a rollout stage crossed a guardrail and its campaign was paused (for alerting).",
)
@log_options
@json_option
@pass_app
def run_due_command(
    app: AppContext,
    max_duration: str | None,
    until: str | None,
    tz: str,
    fail_on_guardrail: bool,
    log_format: str | None,
    log_file: str | None,
    log_level: str | None,
    as_json: bool,
) -> None:
    """Send every campaign that is due, oldest first, then exit: the command for cron.

    \b
    Due: scheduled (`campaigns schedule`) and its time has come; waiting for tier budget or a send
    window that has now opened; or interrupted (its last run was killed); or a staged rollout whose
    stage is due for review (the guardrails judge it: the next stage goes out, or the campaign pauses).
    \b
    Examples:
      wacamp run-due                                   until nothing is due now
      wacamp run-due --until 06:00 --tz Europe/Rome    a nightly run that stops at 6 in the morning
      wacamp run-due --max-duration 6h --log-format json --log-file /var/log/wacamp/run-due.log
      wacamp run-due --fail-on-guardrail               exit 1 when a rollout stage paused its campaign
    \b
    At most one run-due (or worker) sends per database: a second one exits at once, sends nothing.
    Exit codes: 0 nothing left for now; 75 work remains for a later run (or another run holds the
    lock); 1 an error. Stopping (deadline, SIGTERM) leaves every campaign resumable.
    """
    setup_logging(app, log_format=log_format, log_file=log_file, log_level=log_level)
    deadline = run_deadline(max_duration=max_duration, until=until, tz=tz, now=utcnow())
    engine = app.engine
    settings = app.settings
    try:
        with exclusive_lock(engine):
            summary = run_with_signals(lambda stop: _run_due(engine, settings, stop=stop, deadline=deadline))
    except LockedError as exc:
        log.warning("run-due skipped: %s", exc, extra={"outcome": "locked", "exit_code": ExitCode.LATER})
        if as_json:
            print_json({"outcome": "locked", "exit_code": ExitCode.LATER, "message": str(exc)})
        sys.exit(ExitCode.LATER)
    log_summary(summary, deadline=deadline)
    if as_json:
        print_json(summary.as_dict())
    # sys.exit, not click's Exit: `main` runs click with standalone_mode=False, which swallows Exit codes.
    if fail_on_guardrail and summary.guardrail_pauses:
        sys.exit(ExitCode.FAILED)
    sys.exit(summary.exit_code())


async def _run_due(
    engine: Any, settings: Settings, *, stop: asyncio.Event, deadline: datetime | None
) -> DueSummary:
    show, status = progress_printer()
    runner = DispatcherRunner(
        engine=engine, settings=settings, provider_for=make_provider_factory(settings), on_progress=show
    )
    if status is not None:
        status.start()
    try:
        return await run_due(
            engine,
            runner=runner,
            stop_event=stop,
            until=deadline,
            planner=make_planner(engine, settings),
            lane_of=lanes_for(engine, settings),
            reviewer=Reviewer(settings),
        )
    finally:
        if status is not None:
            status.stop()
        await runner.close()


def make_planner(engine: Any, settings: Settings) -> Callable[[int], object]:
    """Plans a scheduled draft when it comes due (writes its ledger from the list as it is then)."""
    from campaigns.planning.planner import plan_campaign

    def plan(campaign_id: int) -> object:
        return plan_campaign(engine, settings=settings, campaign=campaign_id)

    return plan


@click.command("worker")
@click.option(
    "--poll-s",
    type=float,
    default=None,
    help="Look for due campaigns this often.  [default: [worker] poll_s]",
)
@click.option(
    "--metrics-host",
    default=None,
    help="Serve /healthz and /metrics here.  [default: [worker] metrics_host]",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Port of /healthz and /metrics (0: any free one).  [default: [worker] metrics_port]",
)
@log_options
@pass_app
def worker_command(
    app: AppContext,
    poll_s: float | None,
    metrics_host: str | None,
    metrics_port: int | None,
    log_format: str | None,
    log_file: str | None,
    log_level: str | None,
) -> None:
    """Run due campaigns as they come due, until SIGTERM: the long-running alternative to cron.

    \b
    Serves GET /healthz (200 JSON, 503 when the database is unreachable) and GET /metrics
    (Prometheus: ledger rows by state, per-sender rate and throttle events, tier budget left,
    webhook lag) on [worker] metrics_host:metrics_port.
    \b
    Examples:
      wacamp worker
      wacamp worker --log-format json --log-file /var/log/wacamp/worker.log --metrics-port 9108
    \b
    SIGTERM/SIGINT: stop claiming, let in-flight requests finish, write results, exit 0 (a second
    signal forces). On SQLite, like run-due, it holds the database's send lock: if a run-due or
    another worker holds it, it exits 75 at once without sending. On PostgreSQL any number of
    workers, on any machines, share the database: each sender is sent by one worker at a time
    (sender leases), and every worker reaps the in-flight rows of a worker that died
    (docs/architecture.md, "Scale-out"); a run-due still never sends beside them.
    """
    setup_logging(app, log_format=log_format, log_file=log_file, log_level=log_level)
    conf = app.settings.worker
    engine = app.engine
    settings = app.settings
    try:
        with worker_lock(engine):
            run_with_signals(
                lambda stop: _run_worker(
                    engine,
                    settings,
                    stop=stop,
                    poll_s=poll_s or conf.poll_s,
                    host=metrics_host or conf.metrics_host,
                    port=conf.metrics_port if metrics_port is None else metrics_port,
                )
            )
    except LockedError as exc:
        log.warning("worker not started: %s", exc, extra={"outcome": "locked", "exit_code": ExitCode.LATER})
        sys.exit(ExitCode.LATER)
    sys.exit(ExitCode.OK)


async def _run_worker(
    engine: Any, settings: Settings, *, stop: asyncio.Event, poll_s: float, host: str, port: int
) -> None:
    runner = DispatcherRunner(engine=engine, settings=settings, provider_for=make_provider_factory(settings))
    metrics = WorkerMetrics(engine, settings, runner=runner)
    scale_out = scale_out_parts(engine, settings)
    worker = Worker(
        engine,
        runner=runner,
        poll_s=poll_s,
        metrics=metrics,
        planner=make_planner(engine, settings),
        gate=scale_out.gate,
        reviewer=Reviewer(settings),
        outage_wait_s=settings.database.outage_wait_s,
    )
    reaping = asyncio.create_task(scale_out.reaper.run(stop), name="reaper") if scale_out.reaper else None
    try:
        async with serving(build_app(worker, metrics), host=host, port=port) as url:
            log.info(
                "worker serving %s/healthz and %s/metrics", url, url, extra={"metrics_url": f"{url}/metrics"}
            )
            await worker.run(stop)
    finally:
        if reaping is not None:
            reaping.cancel()
        await runner.close()


COMMANDS: list[click.Command] = [run_due_command, worker_command]

"""`wacamp campaigns run | pause | resume | resolve`: send a campaign and steer it from any shell.

Exit codes of `campaigns run` (docs/running.md): 0 completed, 75 stopped early but resumable (tier
budget spent, paused, rows deferred, Ctrl-C/SIGTERM), 1 stopped by an error (template paused by the
platform, sender unusable, a defect), 130 forced by a second Ctrl-C.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.exit_codes import ExitCode
from campaigns.core.models import CampaignState
from campaigns.core.settings import Settings
from campaigns.rollout.review import override as override_rollout_guardrail
from scheduler.providers.base import Provider
from scheduler.sending import resolve
from scheduler.sending.dispatch import Dispatcher
from scheduler.sending.preview import RunPreview, preview_run
from scheduler.sending.run_report import Progress, RunReport
from wacamp.cli.common import AppContext, err_console, json_option, out_console, pass_app, print_json
from wacamp.cli.ops_cmd import run_with_signals

#: Plain progress lines (stderr is not a terminal) come this often.
PLAIN_PROGRESS_EVERY_S = 10.0


def format_duration_s(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` / ``—`` for an ETA or an elapsed time."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(progress: Progress) -> str:
    """One line: sent, failed, deferred, unknown, current rate and ETA."""
    parts = [
        f"{progress.campaign}: {progress.accepted:,} sent",
        f"{progress.failed:,} failed",
        f"{progress.deferred:,} deferred",
    ]
    if progress.unknown:
        parts.append(f"{progress.unknown:,} unknown")
    parts += [
        f"{progress.remaining:,} left",
        f"{progress.rate_per_s:,.1f}/s (target {progress.target_rate_per_s:,.0f}/s)",
        f"ETA {format_duration_s(progress.eta_s)}",
    ]
    return " · ".join(parts)


class ProgressDisplay:
    """A live line on stderr when it is a terminal (rich), else a plain line every few seconds."""

    def __init__(self, *, live: bool | None = None, every_s: float = PLAIN_PROGRESS_EVERY_S) -> None:
        self.live = err_console.is_terminal if live is None else live
        self.every_s = every_s
        self._last_s = 0.0
        self._live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self._live = Live(Text(""), console=err_console, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def show(self, progress: Progress) -> None:
        """Update the line (live) or print it when `every_s` has passed (plain)."""
        if self._live is not None:
            self._live.update(Text(progress_line(progress)))
            return
        now = time.monotonic()
        if now - self._last_s >= self.every_s:
            self._last_s = now
            err_console.print(progress_line(progress))

    def announce(self, line: str) -> None:
        """A notice above the progress line (tier, recovered rows)."""
        err_console.print(line)


def make_provider(settings: Settings, sender_name: str) -> Provider:
    """The real provider (Cloud or On-Premises) of a campaign's sender."""
    from scheduler.providers.factory import make_provider as factory

    return factory(settings, settings.sender(sender_name))


def plan_if_draft(engine: Engine, settings: Settings, ref: control.CampaignRef) -> control.CampaignRef:
    """Implicit planning: a draft campaign's ledger is written before the first send."""
    if ref.state != CampaignState.DRAFT:
        return ref
    from campaigns.planning.planner import plan_campaign

    outcome = plan_campaign(engine, settings=settings, campaign=ref.id)
    skipped = sum(outcome.skipped.values())
    err_console.print(f"Planned {ref.name}: {outcome.planned:,} to send, {skipped:,} skipped")
    with engine.connect() as conn:
        return control.reload(conn, ref.id)


async def run_campaign(
    *,
    engine: Engine,
    settings: Settings,
    campaign: control.CampaignRef,
    stop: asyncio.Event,
    display: ProgressDisplay,
    provider: Provider | None = None,
) -> RunReport:
    """Send a campaign with progress on `display`; returns the report (also after a forced stop)."""
    provider = provider or make_provider(settings, campaign.sender_name)
    dispatcher = Dispatcher(
        engine=engine,
        settings=settings,
        campaign=campaign,
        provider=provider,
        stop=stop,
        on_progress=display.show,
        announce=display.announce,
    )
    try:
        return await dispatcher.run()
    except asyncio.CancelledError:
        if dispatcher.last_report is not None:
            raise ForcedStop(dispatcher.last_report) from None
        raise
    finally:
        await provider.close()


class ForcedStop(Exception):
    """A second Ctrl-C ended the run at once; the report says what was written."""

    def __init__(self, report: RunReport) -> None:
        super().__init__(report.message)
        self.report = report


def print_report(report: RunReport) -> None:
    """The end-of-run summary for people (stdout)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("campaign", report.campaign)
    table.add_row("outcome", f"{report.reason.value} (exit {report.exit_code})")
    table.add_row("", report.message)
    table.add_row("accepted", f"{report.accepted:,}")
    table.add_row("failed", f"{report.failed:,}")
    table.add_row(
        "unknown",
        f"{report.unknown:,}"
        + (f" (+{report.recovered_unknown:,} from an earlier run)" if report.recovered_unknown else ""),
    )
    table.add_row("requeued", f"{report.requeued:,} ({report.throttled:,} throttled)")
    table.add_row("rate", f"{report.rate_per_s:,.1f}/s, busiest second {report.busiest_second:,}")
    table.add_row("time", format_duration_s(report.elapsed_s))
    if report.tier is not None:
        table.add_row("tier", f"{report.tier.name} ({report.tier.source})")
    if report.resume_after is not None:
        table.add_row("resume after", f"{report.resume_after:%Y-%m-%d %H:%M:%S} UTC")
    table.add_row("ledger", ", ".join(f"{state} {n:,}" for state, n in sorted(report.counts.items())))
    out_console.print(table)


def print_preview(preview: RunPreview) -> None:
    """The dry-run summary for people (stdout)."""
    limit = "unlimited" if preview.tier.limit is None else f"{preview.tier.limit:,}"
    budget = "unlimited" if preview.budget_remaining is None else f"{preview.budget_remaining:,} left"
    out_console.print(f"[bold]{preview.campaign}[/] ({preview.state}): dry run, nothing sent")
    out_console.print(
        f"  rows due now     {preview.due:,}" + (f" (+{preview.later:,} later)" if preview.later else "")
    )
    out_console.print(
        f"  messaging tier   {preview.tier.name} ({limit}, {preview.tier.source}); budget {budget}"
    )
    out_console.print(f"  would send now   {preview.would_send:,} at {preview.rate_per_s:,.0f}/s")
    out_console.print(f"  would take       {format_duration_s(preview.eta_s)}")


@click.command("run")
@click.argument("name")
@click.option(
    "--dry-run", is_flag=True, help="Say what a run would send now and how long it would take; send nothing."
)
@json_option
@pass_app
def run_command(app: AppContext, /, name: str, dry_run: bool, as_json: bool) -> None:
    """Send a planned campaign at the sender's exact rate; run it again to resume.

    A draft is planned first. Progress goes to stderr; the summary to stdout. Ctrl-C (or SIGTERM)
    stops claiming, lets requests in flight finish, writes every result and leaves the campaign
    resumable; a second Ctrl-C stops at once.

    \b
    Exit codes:
      0   completed: every row has an outcome
      75  stopped early, resumable: tier budget spent, paused, rows deferred, Ctrl-C/SIGTERM
      1   stopped by an error: template or account unusable, sender unusable (the reason is shown)
    \b
    Examples:
      wacamp campaigns run spring-sale
      wacamp campaigns run spring-sale --dry-run
      wacamp campaigns run spring-sale --json > run.json
    """
    engine, settings = app.engine, app.settings
    ref = control.CampaignRef.of(control.find_campaign(engine, name))
    if dry_run:
        _dry_run(engine, settings, ref, as_json=as_json)
        return
    ref = plan_if_draft(engine, settings, ref)
    display = ProgressDisplay()
    try:
        with display:
            report = run_with_signals(
                lambda stop: run_campaign(
                    engine=engine, settings=settings, campaign=ref, stop=stop, display=display
                )
            )
    except ForcedStop as forced:
        _show(forced.report, as_json=as_json)
        err_console.print("Forced stop: requests that were in flight are `unknown`.")
        sys.exit(ExitCode.INTERRUPTED)
    _show(report, as_json=as_json)
    # sys.exit, not click's Exit: `main` runs click with standalone_mode=False, which swallows Exit codes.
    sys.exit(report.exit_code)


def _show(report: RunReport, *, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
    else:
        print_report(report)


def _dry_run(engine: Engine, settings: Settings, ref: control.CampaignRef, *, as_json: bool) -> None:
    if ref.state == CampaignState.DRAFT:
        err_console.print(
            f"{ref.name} is a draft: a run plans it first (see `wacamp campaigns plan {ref.name}`)."
        )

    async def preview() -> RunPreview:
        provider = make_provider(settings, ref.sender_name)
        try:
            return await preview_run(engine=engine, settings=settings, campaign=ref, provider=provider)
        finally:
            await provider.close()

    result = asyncio.run(preview())
    if as_json:
        print_json(result.as_dict())
    else:
        print_preview(result)


@click.command("pause")
@click.argument("name")
@click.option("--reason", default="paused by a person", help="Shown by `campaigns show` and the report.")
@json_option
@pass_app
def pause_command(app: AppContext, /, name: str, reason: str, as_json: bool) -> None:
    """Pause a campaign; a run in progress stops within a second (it exits 75).

    \b
    Example (from another shell while `campaigns run` sends):
      wacamp campaigns pause spring-sale --reason "wrong coupon"
    """
    ref = control.pause(app.engine, name, reason=reason)
    _print_state(ref, as_json=as_json)


@click.command("resume")
@click.argument("name")
@click.option(
    "--override-guardrail",
    is_flag=True,
    help="A staged rollout paused by a guardrail: release the next stage anyway (without it, the "
    "paused stage is judged again).",
)
@json_option
@pass_app
def resume_command(app: AppContext, /, name: str, override_guardrail: bool, as_json: bool) -> None:
    """Make a paused or waiting campaign runnable again; `campaigns run` continues where it stopped.

    \b
    Examples:
      wacamp campaigns resume spring-sale && wacamp campaigns run spring-sale
      wacamp campaigns resume careful --override-guardrail     the next rollout stage goes out
    """
    if override_guardrail:
        ref = override_rollout_guardrail(app.engine, name)
    else:
        ref = control.resume(app.engine, name)
    _print_state(ref, as_json=as_json)


def _print_state(ref: control.CampaignRef, *, as_json: bool) -> None:
    if as_json:
        print_json({"campaign": ref.name, "state": ref.state, "pause_reason": ref.pause_reason})
    else:
        reason = f" ({ref.pause_reason})" if ref.pause_reason else ""
        out_console.print(f"{ref.name}: {ref.state}{reason}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` → seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration (examples: 30s, 15m, 1h, 2d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _duration(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    return parse_duration_s(value)


@click.command("resolve")
@click.argument("name")
@click.option(
    "--resend-unknown",
    is_flag=True,
    help="Move `unknown` rows back to planned so the next run sends them (the only way they are resent).",
)
@click.option(
    "--older-than",
    "older_than_s",
    default="1h",
    callback=_duration,
    metavar="DURATION",
    help="Only rows claimed longer ago than this (status webhooks may still settle newer ones).",
)
@json_option
@pass_app
def resolve_command(
    app: AppContext, /, name: str, resend_unknown: bool, older_than_s: float, as_json: bool
) -> None:
    """Settle `unknown` rows: requests that may or may not have reached the platform.

    Status webhooks settle most of them (the row id travels in `biz_opaque_callback_data`). Without
    --resend-unknown this only counts what is left; with it, those rows go back to `planned` and the
    next `campaigns run` sends them: a recipient may then get the message twice, which is why wacamp
    never does it by itself.

    \b
    Examples:
      wacamp campaigns resolve spring-sale                                    count only
      wacamp campaigns resolve spring-sale --resend-unknown --older-than 1h
    """
    result = resolve.resolve_unknown(app.engine, name, older_than_s=older_than_s, resend=resend_unknown)
    if as_json:
        print_json(
            {
                "campaign": result.campaign,
                "unknown": result.unknown,
                "eligible": result.eligible,
                "resent": result.resent,
            }
        )
        return
    age = format_duration_s(older_than_s)
    if resend_unknown:
        out_console.print(
            f"{result.campaign}: {result.resent:,} unknown rows older than {age} moved back to planned "
            f"({result.unknown - result.resent:,} unknown left); "
            f"`wacamp campaigns run {result.campaign}` sends them"
        )
    else:
        out_console.print(
            f"{result.campaign}: {result.unknown:,} unknown rows, {result.eligible:,} older than {age} "
            "(add --resend-unknown to send those again)"
        )


COMMANDS: list[click.Command] = [run_command, pause_command, resume_command, resolve_command]


def register(group: click.Group) -> None:
    """Add these commands to the `campaigns` group."""
    for command in COMMANDS:
        group.add_command(command)

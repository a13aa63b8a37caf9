"""`wacamp campaigns schedule`, and the same schedule options for `campaigns create`.

`schedule_options` adds ``--at --tz --window --recipient-local-time --deadline`` to any command;
`schedule_request` collects them and `apply_schedule` stores them on a campaign, so `create` needs
one decorator line and one call.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from sqlalchemy.engine import Engine

from campaigns.control import find_campaign
from campaigns.core.dbtypes import utcnow
from campaigns.schedule import (
    ResolvedSchedule,
    ScheduleRequest,
    SendWindow,
    resolve_schedule,
    store_schedule,
)
from wacamp.cli.common import AppContext, err_console, json_option, out_console, pass_app, print_json

F = TypeVar("F", bound=Callable[..., Any])

WHEN_HELP = "ISO 8601 (2026-12-01T09:00+01:00) or plain '2026-12-01 09:00' (read in --tz)"


def schedule_options(*, at_required: bool = False) -> Callable[[F], F]:
    """Add the schedule options (``--at`` required or not) to a click command."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                "--at", "at", required=at_required, metavar="WHEN", help=f"When to start: {WHEN_HELP}."
            ),
            click.option(
                "--tz",
                "tz",
                metavar="ZONE",
                help="IANA time zone of --at, --deadline and --window (default: the campaign's, else UTC).",
            ),
            click.option(
                "--window",
                metavar="HH:MM-HH:MM",
                help="Send only between these hours (e.g. 09:00-20:00; 22:00-06:00 crosses midnight).",
            ),
            click.option(
                "--recipient-local-time",
                is_flag=True,
                help="Apply --window in each recipient's own time zone (from the phone number).",
            ),
            click.option("--deadline", metavar="WHEN", help="Rows not sent by then end as skipped: expired."),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def schedule_request(params: dict[str, Any]) -> ScheduleRequest:
    """The schedule options out of a command's keyword arguments."""
    return ScheduleRequest(
        at=params.get("at"),
        tz=params.get("tz"),
        window=params.get("window"),
        recipient_local_time=bool(params.get("recipient_local_time")),
        deadline=params.get("deadline"),
    )


def checked_schedule(params: dict[str, Any]) -> ResolvedSchedule | None:
    """For `create`: the schedule options checked before the campaign exists (None when none given)."""
    request = schedule_request(params)
    return resolve_schedule(request) if request.given else None


def store_new_schedule(engine: Engine, campaign_id: int, schedule: ResolvedSchedule | None) -> None:
    """For `create`: store a schedule checked by `checked_schedule` on the new campaign."""
    if schedule is not None:
        store_schedule(engine, campaign_id, schedule, now=utcnow())


def apply_schedule(engine: Engine, campaign_ref: str, request: ScheduleRequest) -> dict[str, Any]:
    """Check and store a schedule on a campaign; what it now says, as JSON-ready data."""
    campaign = find_campaign(engine, campaign_ref)
    campaign_id = int(campaign.id or 0)
    resolved = resolve_schedule(request, campaign_tz=campaign.timezone or "UTC")
    store_schedule(engine, campaign_id, resolved, now=utcnow())
    return describe(engine, campaign_id)


def describe(engine: Engine, campaign_id: int) -> dict[str, Any]:
    """A campaign's schedule: UTC instants and the same in its own zone."""
    campaign = find_campaign(engine, campaign_id)
    tz = ZoneInfo(campaign.timezone or "UTC")
    window = SendWindow.of(campaign.window_start, campaign.window_end)

    def both(at: datetime | None) -> dict[str, str] | None:
        return None if at is None else {"utc": at.isoformat(), "local": at.astimezone(tz).isoformat()}

    return {
        "campaign": campaign.name,
        "state": campaign.state,
        "timezone": campaign.timezone,
        "scheduled_at": both(campaign.scheduled_at),
        "window": None if window is None else str(window),
        "recipient_local_time": campaign.recipient_local_time,
        "deadline": both(campaign.deadline),
    }


def print_schedule(data: dict[str, Any]) -> None:
    """The schedule for people (stdout), with a hint on stderr when the start has already passed."""
    local = (data["scheduled_at"] or {}).get("local", "not scheduled")
    out_console.print(f"[bold]{data['campaign']}[/] ({data['state']}) starts {local} ({data['timezone']})")
    if data["window"]:
        where = "each recipient's own time zone" if data["recipient_local_time"] else data["timezone"]
        out_console.print(f"  sends only {data['window']} in {where}")
    if data["deadline"]:
        out_console.print(
            f"  deadline {data['deadline']['local']}: rows not sent by then are skipped: expired"
        )
    at = data["scheduled_at"]
    if at and datetime.fromisoformat(at["utc"]) <= utcnow():
        err_console.print("The start time has passed: the next `wacamp run-due` sends it.")


@click.command("schedule")
@click.argument("name")
@schedule_options(at_required=True)
@json_option
@pass_app
def schedule_command(app: AppContext, /, name: str, as_json: bool, **options: Any) -> None:
    """Schedule campaign NAME: `wacamp run-due` (cron) or `wacamp worker` sends it from --at on.

    \b
    Examples:
      wacamp campaigns schedule spring-sale --at '2026-12-01 09:00' --tz Europe/Rome
      wacamp campaigns schedule spring-sale --at 2026-12-01T09:00+01:00 --window 09:00-20:00
      wacamp campaigns schedule world-promo --at '2026-12-01 00:00' --window 10:00-19:00 \\
          --recipient-local-time --deadline '2026-12-03 23:59'

    A draft campaign is planned when it comes due, so the list is read at that moment. Times without
    an offset are read in --tz (default: the campaign's time zone, else UTC); a wall-clock time that a
    DST change skips means the moment the clock jumps over it. Each call sets the whole schedule:
    an option left out (say --window) is cleared.
    """
    data = apply_schedule(app.engine, name, schedule_request(options))
    at = data["scheduled_at"]
    if at and datetime.fromisoformat(at["utc"]) <= utcnow():
        err_console.print("The start time has passed: the next `wacamp run-due` sends it.")
    if as_json:
        print_json(data)
    else:
        print_schedule(data)


#: Registered onto the `campaigns` group in wacamp/cli/__init__.py.
CAMPAIGN_COMMANDS: list[click.Command] = [schedule_command]

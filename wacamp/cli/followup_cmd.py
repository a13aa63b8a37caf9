"""`wacamp campaigns retry NAME`: a follow-up campaign for the recipients whose failure is worth retrying."""

from __future__ import annotations

import click

from campaigns.followup import DEFAULT_RETRY_CODES, create_retry_campaign
from wacamp.cli.common import AppContext, json_option, out_console, pass_app, print_json


def _codes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if value is None:
        return DEFAULT_RETRY_CODES
    try:
        codes = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of error codes", ctx=ctx, param=param
        ) from None
    if not codes:
        raise click.BadParameter("give at least one error code", ctx=ctx, param=param)
    return codes


@click.command("retry")
@click.argument("campaign")
@click.option(
    "--codes",
    callback=_codes,
    metavar="CODE,CODE,…",
    help="Error codes to retry. Default: "
    + ",".join(str(c) for c in DEFAULT_RETRY_CODES)
    + " (transient errors and the 24 h marketing limit).",
)
@json_option
@pass_app
def retry_command(app: AppContext, campaign: str, codes: tuple[int, ...], as_json: bool) -> None:
    """Plan CAMPAIGN-retry-N for the recipients of CAMPAIGN that failed with one of --codes.

    \b
    The follow-up gets its own contact list and the parent's template, parameters, sender and
    send window, and is planned with the usual rules: opted-out contacts are skipped, contacts
    deferred by 131049 wait until their 24 h are over, nobody gets the same content twice.
    Send it with `wacamp campaigns run CAMPAIGN-retry-N`.

    \b
    Examples:
      wacamp campaigns retry spring
      wacamp campaigns retry spring --codes 131049 --json
    """
    outcome = create_retry_campaign(app.engine, settings=app.settings, parent=campaign, codes=codes)
    if as_json:
        print_json(outcome.as_dict())
        return
    skipped = ", ".join(f"{reason} {count}" for reason, count in outcome.skipped.items()) or "none"
    out_console.print(
        f"{outcome.campaign}: {outcome.recipients} recipients of {outcome.parent} that failed with "
        f"{','.join(map(str, outcome.codes))}; planned {outcome.planned} "
        f"({outcome.deferred} deferred until their wait is over), skipped: {skipped}\n"
        f"send it with: wacamp campaigns run {outcome.campaign}"
    )


COMMANDS: list[click.Command] = [retry_command]

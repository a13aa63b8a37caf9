"""`wacamp campaigns ...`: create, plan, list, show, preview and cancel campaigns.

Other engineers register `run`, `pause`, `resume`, … onto `campaigns_group` from their own modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click
from rich.progress import Progress
from rich.table import Table

from campaigns.caps import describe_setting, rule_for, waiting_for_cap
from campaigns.control import find_campaign, ledger_counts
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import UserError
from campaigns.core.models import Campaign
from campaigns.definitions import (
    CampaignDefinition,
    cancel_campaign,
    create_campaign,
    list_campaigns,
    list_name,
    preview_bodies,
)
from campaigns.planning.planner import plan_campaign
from campaigns.planning.summary import PlanSummary, format_duration, plan_summary
from campaigns.rollout.review import describe as describe_rollout
from campaigns.rollout.variants import describe_ab
from campaigns.segments.audience import count_segment
from campaigns.templates.drift import category_drift
from scheduler.sending.test_send import SentTest, recorded_test_sends
from wacamp.cli.common import AppContext, err_console, json_option, out_console, pass_app, print_json
from wacamp.cli.rollout_cmd import ab_bindings, checked_rollout, rollout_options, store_rollout
from wacamp.cli.schedule_cmd import checked_schedule, schedule_options, store_new_schedule


@click.group("campaigns")
def campaigns_group() -> None:
    """Campaigns: a template bound to a contact list, planned into a per-recipient ledger.

    \b
    A campaign's life:
      wacamp campaigns create spring --list spring --template promo --language it --param 1={first_name}
      wacamp campaigns plan spring          write the ledger; shows recipients, skips, time and cost
      wacamp campaigns preview spring       the first request bodies exactly as they will be sent
      wacamp campaigns run spring           send
      wacamp campaigns show spring          state and ledger counts

    Every command takes a campaign's name or its id.
    """


def _assignments(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx=ctx, param=param)
        parsed[key.strip()] = text
    return parsed


@campaigns_group.command("create")
@click.argument("name")
@click.option("--list", "list_name_", required=True, help="The contact list to send to.")
@click.option("--template", help="Template name (see `wacamp templates list`); or two --variant.")
@click.option("--language", help="Template language code, e.g. it or en_US (also of --variant without one).")
@click.option(
    "--param",
    "params",
    multiple=True,
    callback=_assignments,
    metavar="KEY=VALUE",
    help="Fill a placeholder: KEY is 1, first_name, header.1, body.2 or button.0; {column} in VALUE "
    "is the contact's attribute, {phone} the number.",
)
@click.option(
    "--default",
    "defaults",
    multiple=True,
    callback=_assignments,
    metavar="COLUMN=VALUE",
    help="Value of a column for contacts that lack it (else they are skipped as missing_param).",
)
@click.option(
    "--header-media-url", help="Link of the header image/video/document (templates with a media header)."
)
@click.option(
    "--header-media-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Or a local file for that header: type and size checked now, uploaded once per sender when "
    "the campaign is planned ([media] settings).",
)
@click.option(
    "--button-payload",
    "button_payloads",
    multiple=True,
    callback=_assignments,
    metavar="INDEX=PAYLOAD",
    help="Payload of a quick-reply button (echoed back when tapped).",
)
@schedule_options()
@rollout_options()
@click.option("--sender", help="Sender name from the config (default: the first configured sender).")
@click.option(
    "--where",
    metavar="EXPR",
    help="Send only to the list members this segment expression keeps, e.g. "
    "'citta = \"Milano\" and eta >= 30' (the language: `wacamp segments --help`).",
)
@click.option(
    "--segment", metavar="NAME", help="Like --where, with a saved segment (`wacamp segments list`)."
)
@click.option(
    "--via",
    type=click.Choice(["marketing", "cloud"]),
    help="Send through the Marketing Messages API (MARKETING templates only) or the Cloud API; "
    "default: the sender's api, and for a MARKETING template on a Cloud sender [marketing] default_via.",
)
@click.option(
    "--cap",
    metavar="COUNT/WINDOW",
    help="This campaign's frequency cap per contact across every campaign of the portfolio, e.g. 1/30d, "
    "or none; default: [limits] marketing_cap / utility_cap.",
)
@click.option(
    "--cap-policy",
    type=click.Choice(["wait", "skip"]),
    help="A recipient at the cap waits until the window frees it, or is skipped as `capped` "
    "(default: [limits] cap_policy).",
)
@json_option
@pass_app
def create_cmd(
    app: AppContext,
    /,
    name: str,
    list_name_: str,
    template: str | None,
    language: str | None,
    params: dict[str, str],
    defaults: dict[str, str],
    header_media_url: str | None,
    header_media_file: Path | None,
    button_payloads: dict[str, str],
    sender: str | None,
    where: str | None,
    segment: str | None,
    via: Literal["marketing", "cloud"] | None,
    cap: str | None,
    cap_policy: str | None,
    as_json: bool,
    **schedule: Any,
) -> None:
    """Define a campaign: NAME sends TEMPLATE (in LANGUAGE) to the contacts of LIST.

    Every placeholder of the template must be bound with --param (see `wacamp templates show`); a
    refusal lists every problem at once.

    \b
    Examples:
      wacamp campaigns create spring --list spring --template spring_promo --language it \\
          --param header.1={first_name} --param 1="Ciao {first_name}" --param 2=SPRING20 \\
          --default first_name=amico --button-payload 0=STOP
      wacamp campaigns create welcome --list new --template welcome --language en_US \\
          --param first_name={first_name} --at 2026-03-01T09:00+01:00
      wacamp campaigns create night --list it --template promo --language it --param 1={first_name} \\
          --at '2026-03-01 22:00' --tz Europe/Rome --window 22:00-06:00 --deadline '2026-03-03 06:00'
      wacamp campaigns create careful --list it --template promo --language it --param 1={first_name} \\
          --at 2026-03-01T09:00+01:00 --rollout 2%,10%,100% --rollout-wait 30m \\
          --guardrail max_optout_rate=0.01
      wacamp campaigns create milan --list customers --template promo --language it \\
          --param 1={first_name} --where 'citta = "Milano" and eta >= 30'
      wacamp campaigns create gentle --list it --template promo --language it \\
          --param 1={first_name} --cap 2/7d --cap-policy skip

    An A/B test instead of --template: two variants (templates, or one template with other
    parameters) drawn for the first 10 % of the list; after --rollout-wait the one read more often
    goes to the rest if the difference is significant (two-proportion test at --ab-alpha), else the
    default (the first, or --ab-default):

    \b
      wacamp campaigns create ab --list it --language it --param 1={first_name} --param 2=20% \\
          --variant a:spring_sale --variant b:spring_sale --variant-param b:2=30% \\
          --ab-test 10% --ab-metric read --rollout-wait 2h --at 2026-03-01T09:00+01:00

    With --rollout the campaign goes out in stages: after each one `run-due` / `worker` wait
    --rollout-wait, then judge the stage by the [rollout] guardrails (failures, 131049, opt-outs,
    template and sender downgrades): the next stage goes out by itself, or the campaign pauses with
    the reason (`campaigns show`; `campaigns resume --override-guardrail` goes on anyway).

    With --via marketing the messages go to the Marketing Messages API (automatic delivery
    optimisation; the report's "accepted by API" line tells which API took each message); if the business
    has not accepted its terms (131055) they go through the Cloud API when [marketing] product_policy
    is CLOUD_API_FALLBACK (the default), else the campaign pauses and says what to do.

    With --where or --segment only the list members the segment keeps are planned (`campaigns plan`
    says how many it kept and dropped). With a frequency cap (--cap, or [limits] marketing_cap) a
    contact gets at most COUNT templates of the category in any WINDOW across every campaign of the
    portfolio: the others wait for the window (or are skipped with --cap-policy skip).

    With --at the campaign is sent by `wacamp run-due` /
    `wacamp worker` (see `campaigns schedule`).
    """
    bindings = ab_bindings(params, defaults, button_payloads, header_media_url)
    staged = checked_rollout(
        app.engine,
        app.settings,
        schedule,
        list_name=list_name_,
        template=template,
        language=language,
        bindings=bindings,
        seed=name,
    )
    checked = checked_schedule(schedule)
    definition = CampaignDefinition(
        name=name,
        list_name=list_name_,
        template_name=staged.template,
        language=staged.language,
        params=params,
        defaults=defaults,
        header_media_url=header_media_url,
        header_media_file=header_media_file,
        button_payloads=button_payloads,
        sender_name=sender,
        where=where,
        segment=segment,
        via=via,
        cap=cap,
        cap_policy=cap_policy,
    )
    campaign = create_campaign(app.engine, settings=app.settings, definition=definition)
    if campaign.id is not None:
        store_rollout(app.engine, campaign.id, staged)
    if checked is not None and campaign.id is not None:
        store_new_schedule(app.engine, campaign.id, checked)
    campaign = find_campaign(app.engine, int(campaign.id or 0))
    if as_json:
        print_json(_definition(app, campaign))
        return
    click.echo(
        f"campaign {campaign.name!r} created (id {campaign.id}); next: wacamp campaigns plan {campaign.name}"
    )


@campaigns_group.command("plan")
@click.argument("campaign")
@json_option
@pass_app
def plan_cmd(app: AppContext, campaign: str, as_json: bool) -> None:
    """Write the ledger of CAMPAIGN (safe to run again: only new list members are added).

    Prints who will get the message, who is skipped and why, how long it takes at the sender's
    rate and messaging tier, and what it costs by the rate card.
    """
    target = find_campaign(app.engine, campaign)
    err_console.print(f"planning {target.name!r} …")
    with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("ledger rows", total=None)
        outcome = plan_campaign(
            app.engine, settings=app.settings, campaign=target, progress=lambda n: bar.advance(task, n)
        )
    err_console.print(f"added {outcome.added} ledger rows ({outcome.planned} to send)")
    summary = plan_summary(app.engine, settings=app.settings, campaign=find_campaign(app.engine, target.name))
    kept = _segment_counts(app, target)
    if as_json:
        print_json({**summary.as_dict(), "added": outcome.added, "segment": kept})
        return
    if kept is not None:
        click.echo(
            f"segment: kept {kept['kept']} of {kept['members']} list members, dropped {kept['dropped']} "
            f"({kept['where']})"
        )
    _print_summary(summary)


def _segment_counts(app: AppContext, campaign: Campaign) -> dict[str, Any] | None:
    """How many list members the campaign's segment keeps and drops (None without a segment)."""
    if campaign.audience_where is None:
        return None
    counts = count_segment(app.engine, campaign.list_id, campaign.audience_where)
    return {
        "where": campaign.audience_where,
        "saved_segment": campaign.audience_segment,
        "members": counts.members,
        "kept": counts.kept,
        "dropped": counts.dropped,
    }


def _print_summary(summary: PlanSummary) -> None:
    deferred = f" ({summary.deferred} deferred by the per-user marketing limit)" if summary.deferred else ""
    click.echo(f"{summary.campaign}: {summary.to_send} to send{deferred}")
    skipped = ", ".join(f"{reason} {count}" for reason, count in summary.skipped_by_reason.items())
    click.echo(f"skipped: {skipped or 'none'}")
    duration = format_duration(summary.send_time_s)
    click.echo(f"time: {duration} at {summary.rate_per_s:g} msg/s (sender {summary.sender})")
    limit = "unlimited" if summary.tier_limit is None else f"{summary.tier_limit} unique recipients / 24 h"
    click.echo(f"tier: {summary.messaging_tier} ({limit}): {summary.days_needed} day(s)")
    if summary.frequency_cap is not None:
        click.echo(summary.frequency_cap["summary"])
    example = " (example prices)" if summary.example_prices else ""
    click.echo(
        f"cost: about {summary.currency} {summary.estimated_cost:,.2f} for {summary.category.lower()} "
        f"messages if all are delivered{example}"
    )
    for note in summary.notes:
        click.echo(f"note: {note}")


def _definition(app: AppContext, campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "state": campaign.state,
        "pause_reason": campaign.pause_reason,
        "list": list_name(app.engine, campaign.list_id),
        "template": campaign.template_name,
        "language": campaign.language,
        "category": campaign.category,
        "sender": campaign.sender_name,
        "via": campaign.via,
        "product_policy": campaign.product_policy,
        "params": campaign.params,
        "defaults": campaign.defaults,
        "header_media_url": campaign.header_media_url,
        "header_media_file": campaign.header_media_file,
        "button_payloads": campaign.button_payloads,
        "where": campaign.audience_where,
        "segment": campaign.audience_segment,
        "scheduled_at": campaign.scheduled_at.isoformat() if campaign.scheduled_at else None,
        "created_at": campaign.created_at.isoformat(),
        "planned_at": campaign.planned_at.isoformat() if campaign.planned_at else None,
        "started_at": campaign.started_at.isoformat() if campaign.started_at else None,
        "finished_at": campaign.finished_at.isoformat() if campaign.finished_at else None,
        "resume_after": campaign.resume_after.isoformat() if campaign.resume_after else None,
    }


@campaigns_group.command("list")
@json_option
@pass_app
def list_cmd(app: AppContext, as_json: bool) -> None:
    """List the campaigns with their state and ledger size."""
    rows = []
    for campaign in list_campaigns(app.engine):
        counts = ledger_counts(app.engine, int(campaign.id or 0))
        rows.append({**_definition(app, campaign), "ledger": counts.as_dict()})
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "state", "template", "list", "ledger", "planned", "skipped")
    for row in rows:
        by_state = row["ledger"]["by_state"]
        table.add_row(
            str(row["id"]),
            row["name"],
            row["state"],
            f"{row['template']} ({row['language']})",
            row["list"],
            str(row["ledger"]["total"]),
            str(by_state.get("planned", 0)),
            str(by_state.get("skipped", 0)),
        )
    out_console.print(table)


@campaigns_group.command("show")
@click.argument("campaign")
@json_option
@pass_app
def show_cmd(app: AppContext, campaign: str, as_json: bool) -> None:
    """Show a campaign: its definition, state (and pause reason) and ledger counts."""
    target = find_campaign(app.engine, campaign)
    drift = category_drift(app.engine, target)
    data = {
        **_definition(app, target),
        "category_drift": drift.warning if drift else None,
        "ledger": ledger_counts(app.engine, int(target.id or 0)).as_dict(),
    }
    with app.engine.connect() as conn:
        data["rollout"] = describe_rollout(conn, target, now=utcnow())
        data["frequency_cap"] = describe_setting(rule_for(target, app.settings))
        data["waiting_for_cap"] = waiting_for_cap(conn, int(target.id or 0), now=utcnow()) or None
    data["ab"] = describe_ab(target)
    data["test_sends"] = [_test_send(sent) for sent in recorded_test_sends(app.engine, int(target.id or 0))]
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        if key not in ("ledger", "test_sends") and value not in (None, {}, ""):
            text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
            out_console.print(f"{key}: {text}", markup=False)
    table = Table("state / skip reason", "rows")
    for state, count in data["ledger"]["by_state"].items():
        table.add_row(state, str(count))
    for reason, count in data["ledger"]["skipped_by_reason"].items():
        table.add_row(f"  skipped: {reason}", str(count))
    out_console.print(table)
    if data["test_sends"]:
        tests = Table("test send to", "as", "sent at", "outcome", title="test sends (campaigns test)")
        for sent in data["test_sends"]:
            outcome = sent["wamid"] or f"failed: {sent['error']}"
            tests.add_row(sent["to"], sent["as"], sent["sent_at"], outcome)
        out_console.print(tests)


def _test_send(sent: SentTest) -> dict[str, Any]:
    return {
        "to": sent.phone,
        "as": sent.as_phone,
        "sent_at": sent.sent_at.isoformat(timespec="seconds"),
        "wamid": sent.wamid,
        "error": sent.error,
    }


@campaigns_group.command("preview")
@click.argument("campaign")
@click.option("--limit", default=3, type=click.IntRange(min=1), help="How many bodies.")
@click.option("--raw", is_flag=True, help="One body per line, byte for byte as stored and POSTed.")
@pass_app
def preview_cmd(app: AppContext, campaign: str, limit: int, raw: bool) -> None:
    """Print the first request bodies of CAMPAIGN exactly as they will be sent (JSON).

    \b
    Examples:
      wacamp campaigns preview spring --limit 1
      wacamp campaigns preview spring --raw | head -c 400
    """
    target = find_campaign(app.engine, campaign)
    if target.planned_at is None:
        raise UserError(
            f"campaign {target.name!r} is not planned yet: run `wacamp campaigns plan {target.name}`"
        )
    bodies = preview_bodies(app.engine, int(target.id or 0), limit=limit)
    if raw:
        for body in bodies:
            click.echo(body)
        return
    print_json([json.loads(body) for body in bodies])


@campaigns_group.command("cancel")
@click.argument("campaign")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def cancel_cmd(app: AppContext, campaign: str, yes: bool) -> None:
    """Cancel CAMPAIGN: nothing more is sent; its planned rows become skipped (cancelled)."""
    target = find_campaign(app.engine, campaign)
    if not yes:
        click.confirm(
            f"Cancel campaign {target.name!r}? Its unsent messages will never be sent", abort=True, err=True
        )
    skipped = cancel_campaign(app.engine, target)
    click.echo(f"campaign {target.name!r} cancelled; {skipped} planned messages will not be sent")


COMMANDS: list[click.Command] = [campaigns_group]

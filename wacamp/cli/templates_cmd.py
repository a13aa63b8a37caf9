"""`wacamp templates ...`: sync, import, list, show, and create / wait / delete message templates."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from campaigns.core.exceptions import UserError
from campaigns.core.exit_codes import ExitCode
from campaigns.core.models import Template
from campaigns.templates.catalog import (
    StoreResult,
    TemplateShape,
    find_templates,
    get_template,
    load_templates_file,
    parse_templates,
    record_of,
    store_templates,
)
from campaigns.templates.submission import (
    campaigns_needing,
    check_submission,
    delete_on_platform,
    mark_deleted,
    store_submitted,
    submit,
    wait_for_review,
)
from campaigns.templates.sync import SyncConfig, fetch_templates
from wacamp.cli.common import AppContext, err_console, json_option, out_console, pass_app, print_json


@click.group("templates")
def templates_group() -> None:
    """Message templates: read them from the platform (or a file) and see what they ask for.

    \b
    Examples:
      wacamp templates sync                       read every template of the WABA
      wacamp templates import templates.json      the same JSON, offline
      wacamp templates list --status APPROVED
      wacamp templates show spring_promo --language it
      wacamp templates create autumn.yaml         submit a new template for review
      wacamp templates wait autumn_promo --language it --timeout 30m
      wacamp templates delete autumn_promo
    """


def _report(result: StoreResult, *, as_json: bool, source: str) -> None:
    data = {"source": source, "added": result.added, "updated": result.updated, "gone": result.gone}
    if as_json:
        print_json(data)
    else:
        click.echo(f"{source}: {result.added} added, {result.updated} updated, {result.gone} marked gone")


@templates_group.command("sync")
@json_option
@pass_app
def sync_cmd(app: AppContext, as_json: bool) -> None:
    """Read every template of the WABA from the Graph API (all pages) and store them.

    Templates that no longer exist on the platform are marked gone, never deleted. Throttled calls
    (errors 4, 80007, HTTP 429) are retried with backoff, honouring Retry-After, at most
    `whatsapp.management_max_retries` times. Needs whatsapp.waba_id and whatsapp.access_token.
    """
    config = SyncConfig.from_settings(app.settings)
    engine = app.engine
    err_console.print(f"reading {config.first_url} …")
    items = asyncio.run(fetch_templates(config))
    records = parse_templates(items, source=f"GET {config.first_url}")
    _report(store_templates(engine, records, mark_missing_gone=True), as_json=as_json, source="sync")


@templates_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_app
def import_cmd(app: AppContext, file: Path, as_json: bool) -> None:
    """Load templates from FILE.json: a listing page ({"data": [...]}) or a list of templates.

    All or nothing: one bad template refuses the whole file, naming the template and the field.
    Templates not in the file are left as they are.

    \b
    Example:
      wacamp templates import templates.json
    """
    records = load_templates_file(file)
    _report(store_templates(app.engine, records, mark_missing_gone=False), as_json=as_json, source=str(file))


def _summary(template: Template) -> dict[str, Any]:
    shape = record_of(template).shape()
    return {
        "name": template.name,
        "language": template.language,
        "status": template.status,
        "category": template.category,
        "parameter_format": template.parameter_format,
        "header_format": shape.header_format,
        "placeholders": [p.label for p in shape.placeholders()],
        "quick_reply_buttons": shape.quick_reply_indexes(),
        "platform_id": template.platform_id,
        "gone_at": template.gone_at.isoformat() if template.gone_at else None,
        "synced_at": template.synced_at.isoformat() if template.synced_at else None,
    }


@templates_group.command("list")
@click.option("--status", help="Only templates with this status (APPROVED, PENDING, REJECTED, PAUSED, …).")
@json_option
@pass_app
def list_cmd(app: AppContext, status: str | None, as_json: bool) -> None:
    """List the stored templates with their placeholders (gone ones are marked)."""
    rows = [_summary(t) for t in find_templates(app.engine, status=status)]
    if as_json:
        print_json(rows)
        return
    table = Table("name", "language", "status", "category", "format", "header", "placeholders")
    for row in rows:
        status_text = row["status"] + (" (gone)" if row["gone_at"] else "")
        table.add_row(
            row["name"],
            row["language"],
            status_text,
            row["category"],
            row["parameter_format"],
            row["header_format"] or "-",
            ", ".join(row["placeholders"]) or "-",
        )
    out_console.print(table)
    if not rows:
        err_console.print(
            "no templates stored: run `wacamp templates sync` or `wacamp templates import FILE`"
        )


def _placeholder_rows(shape: TemplateShape) -> list[dict[str, Any]]:
    return [
        {"label": p.label, "component": p.component, "key": p.key, "example": p.example}
        for p in shape.placeholders()
    ]


@templates_group.command("show")
@click.argument("name")
@click.option("--language", help="Language code (needed when the template exists in several).")
@json_option
@pass_app
def show_cmd(app: AppContext, name: str, language: str | None, as_json: bool) -> None:
    """Show one template: its placeholders (header, body, buttons) and an example rendering.

    The placeholder labels are what `campaigns create --param LABEL=VALUE` binds.

    \b
    Example:
      wacamp templates show spring_promo --language it
    """
    template = get_template(app.engine, name=name, language=language)
    shape = record_of(template).shape()
    data = {
        **_summary(template),
        "placeholders": _placeholder_rows(shape),
        "buttons": [{"index": b.index, "type": b.type, "text": b.text, "url": b.url} for b in shape.buttons],
        "example": shape.render_example(),
        "components": template.components,
    }
    if as_json:
        print_json(data)
        return
    _print_show(data)


def _print_show(data: dict[str, Any]) -> None:
    gone = f", gone since {data['gone_at']}" if data["gone_at"] else ""
    out_console.print(
        f"[bold]{data['name']}[/] ({data['language']}) {data['status']} {data['category']}, "
        f"{data['parameter_format']} parameters{gone}"
    )
    table = Table("placeholder", "component", "example")
    for row in data["placeholders"]:
        table.add_row(row["label"], row["component"], row["example"] or "-")
    for button in data["buttons"]:
        if button["type"] == "QUICK_REPLY":
            table.add_row(f"(payload) button.{button['index']}", "quick reply", button["text"])
    out_console.print(table)
    example = data["example"]
    out_console.print("[bold]Example:[/]")
    for key in ("header", "body", "footer"):
        if example.get(key):
            out_console.print(f"  {key}: {example[key]}", markup=False)
    for button in example["buttons"]:
        out_console.print(f"  button: {button}", markup=False)


def _duration_s(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    from campaigns.schedule import parse_duration_s

    if value is None:
        return None
    try:
        return parse_duration_s(value)
    except UserError as exc:
        raise click.BadParameter(str(exc)) from exc


@templates_group.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check FILE and print what would be submitted; submit nothing.")
@json_option
@pass_app
def create_cmd(app: AppContext, file: Path, dry_run: bool, as_json: bool) -> None:
    """Submit the template in FILE (JSON, or YAML when it ends in .yaml/.yml) for Meta's review.

    FILE holds name, language, category (MARKETING, UTILITY, AUTHENTICATION), components with an
    example for every placeholder, optional parameter_format (POSITIONAL or NAMED) and
    message_send_ttl_seconds. It is checked here first (name, lengths, placeholders numbered {{1}},
    {{2}} … or named consistently, examples, TTL range): a refusal is one line naming the field.
    Then POST /{waba_id}/message_templates, and the template is stored PENDING. Review takes minutes
    to 24 h: `templates wait` waits for it; `templates sync` and the message_template_status_update
    webhook record the outcome. See docs/templates.md.

    \b
    Example (autumn.yaml):
      name: autumn_promo
      language: it
      category: MARKETING
      components:
        - type: BODY
          text: "Ciao {{1}}, usa il codice {{2}}"
          example: {body_text: [["Giulia", "AUTUNNO"]]}
    """
    submission = check_submission(file)
    if dry_run:
        print_json(submission.body)
        return
    config = SyncConfig.from_settings(app.settings)
    record = asyncio.run(submit(config, submission))
    store_submitted(app.engine, record)
    data = {
        "name": record.name,
        "language": record.language,
        "status": record.status,
        "id": record.platform_id,
    }
    if as_json:
        print_json(data)
        return
    click.echo(f"{record.name} ({record.language}) submitted: {record.status}, id {record.platform_id}")
    err_console.print(f"next: wacamp templates wait {record.name} --language {record.language}")


@templates_group.command("wait")
@click.argument("name")
@click.option("--language", required=True, help="The template's language code.")
@click.option(
    "--timeout",
    "timeout_s",
    callback=_duration_s,
    help="Give up after this long (30m, 2h, 45s).  [default: [templates] wait_timeout_s]",
)
@json_option
@pass_app
def wait_cmd(app: AppContext, name: str, language: str, timeout_s: float | None, as_json: bool) -> None:
    """Wait until template NAME is reviewed: exit 0 when APPROVED, 1 when REJECTED (with the reason).

    Reads the template's status from the platform's listing every [templates] wait_poll_s seconds
    (so no webhook receiver is needed) and stores it. Exits 75 (try later) when --timeout passes
    first. For scripts: `wacamp templates wait promo --language it && wacamp campaigns run spring`.
    """
    config = SyncConfig.from_settings(app.settings)
    outcome = asyncio.run(
        wait_for_review(
            app.engine,
            config,
            name=name,
            language=language,
            timeout_s=timeout_s or app.settings.templates.wait_timeout_s,
            poll_s=app.settings.templates.wait_poll_s,
        )
    )
    record = outcome.record
    status = record.status if record else "NOT FOUND"
    reason = record.status_reason if record else None
    code = ExitCode.LATER if outcome.timed_out else ExitCode.OK if status == "APPROVED" else ExitCode.FAILED
    if as_json:
        print_json(
            {"name": name, "language": language, "status": status, "reason": reason, "exit_code": code}
        )
    elif outcome.timed_out:
        err_console.print(f"{name} ({language}) is still {status} after the timeout: try again later")
    else:
        why = f": {reason}" if reason else ""
        click.echo(f"{name} ({language}) {status}{why}")
    sys.exit(code)


@templates_group.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete even when campaigns not yet finished still send it.")
@json_option
@pass_app
def delete_cmd(app: AppContext, name: str, force: bool, as_json: bool) -> None:
    """Delete template NAME (every language) on the platform, and mark it deleted here.

    Refused while a campaign that is not completed or cancelled sends it (they would fail with
    132001), unless --force. The local rows are kept as DELETED and gone, so finished campaigns'
    reports still name them; new campaigns cannot use them.
    """
    needing = campaigns_needing(app.engine, name)
    if needing and not force:
        raise UserError(
            f"template {name!r} is still needed by campaign(s) {', '.join(needing)}: "
            "finish or cancel them first, or pass --force"
        )
    config = SyncConfig.from_settings(app.settings)
    asyncio.run(delete_on_platform(config, name))
    marked = mark_deleted(app.engine, name)
    if as_json:
        print_json({"name": name, "deleted": True, "local_rows": marked, "campaigns": needing})
        return
    click.echo(f"{name} deleted on the platform ({marked} local row(s) marked deleted)")


COMMANDS: list[click.Command] = [templates_group]

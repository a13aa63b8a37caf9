"""`wacamp templates ...`: sync, import, list and show message templates."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
from rich.table import Table

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


COMMANDS: list[click.Command] = [templates_group]

"""`wacamp segments ...`: save, list, show and delete named segment expressions."""

from __future__ import annotations

import click
from rich.table import Table

from campaigns.segments.saved import delete_segment, find_segment, list_segments, save_segment
from wacamp.cli.common import AppContext, json_option, out_console, pass_app, print_json


@click.group("segments")
def segments_group() -> None:
    """Segments: who of a list a campaign goes to, as an expression over the contacts.

    \b
    Use an expression with `campaigns create --where EXPR`, `contacts count --list L --where EXPR`,
    `contacts export --list L --where EXPR`, or save it here and use `--segment NAME`.

    \b
    The language (docs/contacts.md, "Segments"):
      citta = "Milano" and eta >= 30             attributes are the CSV header's columns
      iscritto >= '2026-01-01' or tags contains 'vip'
      not (citta in ("Roma", "Napoli")) and email is empty
      country = 'IT' and consent and replied_within(30d)
      `Data iscrizione` < 2026-01-01             backticks for names with spaces or like keywords
    Operators: = != < <= > >= in (…) not in (…) contains starts_with is empty is not empty,
    combined with and, or, not and parentheses. Strings in single or double quotes (\\' and \\"
    inside). A number compares numerically with values that are numbers, a date (YYYY-MM-DD) with
    values that start with one; a missing attribute makes a comparison false (so != keeps it).
    Built-ins: country (from the number), consent, list, imported_at, last_sent_at, last_read_at,
    replied_within(30d | 12h).
    """


@segments_group.command("create")
@click.argument("name")
@click.option("--where", "expression", metavar="EXPR", required=True, help="The segment expression.")
@click.option("--replace", is_flag=True, help="Change the expression of an existing segment.")
@pass_app
def create_cmd(app: AppContext, name: str, expression: str, replace: bool) -> None:
    """Save EXPR as segment NAME (checked first: a bad expression is refused, nothing stored).

    \b
    Examples:
      wacamp segments create milan-30 --where 'citta = "Milano" and eta >= 30'
      wacamp campaigns create spring --list customers --template promo --language it \\
          --param 1={first_name} --segment milan-30
    """
    saved = save_segment(app.engine, name, expression, replace=replace)
    click.echo(f"segment {saved.name!r} saved: {saved.expression}")


@segments_group.command("list")
@json_option
@pass_app
def list_cmd(app: AppContext, as_json: bool) -> None:
    """List the saved segments."""
    segments = list_segments(app.engine)
    if as_json:
        print_json(
            [
                {"name": s.name, "where": s.expression, "updated_at": s.updated_at.isoformat()}
                for s in segments
            ]
        )
        return
    table = Table("name", "where", "updated")
    for segment in segments:
        table.add_row(segment.name, segment.expression, f"{segment.updated_at:%Y-%m-%d %H:%M}")
    out_console.print(table)


@segments_group.command("show")
@click.argument("name")
@json_option
@pass_app
def show_cmd(app: AppContext, name: str, as_json: bool) -> None:
    """Show the expression of segment NAME."""
    segment = find_segment(app.engine, name)
    if as_json:
        print_json(
            {"name": segment.name, "where": segment.expression, "updated_at": segment.updated_at.isoformat()}
        )
        return
    click.echo(segment.expression)


@segments_group.command("delete")
@click.argument("name")
@pass_app
def delete_cmd(app: AppContext, name: str) -> None:
    """Delete segment NAME (campaigns created with it keep their own copy of the expression)."""
    delete_segment(app.engine, name)
    click.echo(f"segment {name!r} deleted")


COMMANDS: list[click.Command] = [segments_group]

"""`wacamp report CAMPAIGN`: how a campaign went, as a table, JSON, per-recipient CSV or an HTML page."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import click
from rich.console import Console

from campaigns.control import find_campaign
from campaigns.core.exceptions import InputFileError
from campaigns.report.facts import campaign_facts
from campaigns.report.html_page import render_html
from campaigns.report.recipients_csv import write_recipients_csv
from campaigns.report.table import render_table
from wacamp.cli.common import AppContext, out_console, pass_app

FORMATS = ("table", "json", "csv", "html")


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a file that appears (replacing an old one) only once it is completely written."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    try:
        fd, temp = tempfile.mkstemp(
            prefix=f".{target.name}.", dir=target.parent if str(target.parent) else "."
        )
    except OSError as exc:
        raise InputFileError(f"{target}: cannot be written ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@click.command("report")
@click.argument("campaign")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    help="table: for people; json: every fact; csv: one row per recipient; html: one page with charts.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@pass_app
def report_command(app: AppContext, campaign: str, fmt: str, output: str | None, as_json: bool) -> None:
    """How CAMPAIGN (name or id) went: funnel, failures and what was done, throughput, replies, cost.

    \b
    Examples:
      wacamp report spring                              tables in the terminal
      wacamp report spring --format json | jq .counts   the funnel as JSON (keys: docs/reports.md)
      wacamp report spring --format csv -o spring.csv   one row per recipient, safe for spreadsheets
      wacamp report spring --format html -o spring.html one self-contained page with charts, no network

    The JSON, table and HTML formats read the same facts; counts are a funnel
    (accepted ⊇ sent ⊇ delivered ⊇ read) beside failed, unknown and pending.
    """
    fmt = "json" if as_json else fmt
    target = find_campaign(app.engine, campaign)
    if fmt == "csv":
        with _output(output) as out:
            write_recipients_csv(app.engine, int(target.id or 0), out)
        return
    facts = campaign_facts(app.engine, settings=app.settings, campaign=target)
    renderers: dict[str, Callable[[TextIO], object]] = {
        "json": lambda out: out.write(json.dumps(facts, indent=2, ensure_ascii=False) + "\n"),
        "html": lambda out: out.write(render_html(facts)),
        "table": lambda out: render_table(
            facts, out_console if out is sys.stdout else Console(file=out, width=120, no_color=True)
        ),
    }
    with _output(output) as out:
        renderers[fmt](out)


COMMANDS: list[click.Command] = [report_command]

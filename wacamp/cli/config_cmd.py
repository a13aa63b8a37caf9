"""`wacamp config ...`: what is in effect, and where it came from."""

from __future__ import annotations

import click
from rich.table import Table

from campaigns.core.settings_loading import flat_settings
from wacamp.cli.common import AppContext, json_option, out_console, pass_app, print_json


@click.group("config")
def config_group() -> None:
    """Inspect the configuration (defaults < config file < environment < options)."""


@config_group.command("show")
@json_option
@pass_app
def show(app: AppContext, as_json: bool) -> None:
    """Print every effective setting and where it came from. Secrets are masked."""
    values = flat_settings(app.settings)
    if as_json:
        print_json({key: {"value": value, "source": app.provenance.of(key)} for key, value in values.items()})
        return
    table = Table("setting", "value", "source", title="effective configuration")
    for key, value in values.items():
        table.add_row(key, repr(value) if isinstance(value, str) else str(value), app.provenance.of(key))
    out_console.print(table)


COMMANDS = [config_group]

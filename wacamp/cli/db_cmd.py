"""`wacamp db ...`: the schema. Migrations never run implicitly; these commands run them."""

from __future__ import annotations

import click

from campaigns.core.db import current_revision, head_revision, safe_url, upgrade
from wacamp.cli.common import AppContext, err_console, json_option, pass_app, print_json


@click.group("db")
def db_group() -> None:
    """Create or upgrade the database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", help="Target revision.")
@pass_app
def upgrade_cmd(app: AppContext, revision: str) -> None:
    """Create the schema, or bring it up to date (safe to run again)."""
    engine = app.raw_engine
    before = current_revision(engine)
    upgrade(engine, revision)
    after = current_revision(engine)
    if before == after:
        err_console.print(f"{safe_url(engine)}: already at schema {after}")
    else:
        err_console.print(f"{safe_url(engine)}: schema {before or 'none'} -> {after}")


@db_group.command("current")
@json_option
@pass_app
def current_cmd(app: AppContext, as_json: bool) -> None:
    """Show the database's schema revision and the one this wacamp needs."""
    engine = app.raw_engine
    current, head = current_revision(engine), head_revision()
    if as_json:
        print_json(
            {"database": safe_url(engine), "current": current, "head": head, "up_to_date": current == head}
        )
        return
    state = "up to date" if current == head else "behind: run `wacamp db upgrade`"
    click.echo(f"{safe_url(engine)}: schema {current or 'none'} (needs {head}, {state})")


COMMANDS = [db_group]

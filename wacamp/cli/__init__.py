"""The `wacamp` command line. Each command group lives in its own module next to this one."""

from __future__ import annotations

import logging
import sys
import traceback

import click
import sqlalchemy as sa

from campaigns.core.exceptions import (
    DatabaseUnavailableError,
    LockedError,
    WacampError,
    is_passing_database_trouble,
)
from campaigns.core.exit_codes import ExitCode
from wacamp.cli import (
    campaigns_cmd,
    config_cmd,
    contacts_cmd,
    db_cmd,
    demo_cmd,
    followup_cmd,
    ops_cmd,
    report_cmd,
    run_cmd,
    sandbox_cmd,
    schedule_cmd,
    segments_cmd,
    templates_cmd,
    test_send_cmd,
    webhooks_cmd,
)
from wacamp.cli.common import AppContext

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="WACAMP_CONFIG",
    help="Config file (TOML). Default: ./wacamp.toml if it exists, else the shipped defaults.",
)
@click.option("--database-url", help="Database URL; overrides [database] url and WACAMP_DATABASE_URL.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="wacamp")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, database_url: str | None, debug: bool) -> None:
    """wacamp: WhatsApp Business marketing campaigns, at exactly the platform's throughput, never twice.

    \b
    A first session:
      wacamp db upgrade                             create the database schema
      wacamp contacts import people.csv --list spring --region IT
      wacamp templates sync                         or: wacamp templates import templates.json
      wacamp campaigns create spring-sale --list spring --template promo --language it --param 1={first_name}
      wacamp campaigns plan spring-sale             see who gets what, how long, what it costs
      wacamp campaigns run spring-sale              send (Ctrl-C stops cleanly; run again to resume)
      wacamp report spring-sale

    Try it all without a Meta account: `wacamp demo`.
    """
    overrides = {"database.url": database_url}
    ctx.obj = AppContext(config_file=config_file, overrides=overrides, debug=debug)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr)


for _module in (
    config_cmd,
    db_cmd,
    contacts_cmd,
    segments_cmd,
    templates_cmd,
    campaigns_cmd,
    sandbox_cmd,
    webhooks_cmd,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
for _command in ops_cmd.COMMANDS:
    cli.add_command(_command)
for _command in report_cmd.COMMANDS:
    cli.add_command(_command)
campaigns_cmd.campaigns_group.add_command(schedule_cmd.schedule_command)
campaigns_cmd.campaigns_group.add_command(followup_cmd.retry_command)
campaigns_cmd.campaigns_group.add_command(test_send_cmd.test_command)
run_cmd.register(campaigns_cmd.campaigns_group)
cli.add_command(demo_cmd.demo_command)


def main() -> None:
    """Entry point of the `wacamp` console script: every error ends as one line on stderr and an `ExitCode`.

    `WacampError`s carry their own code (`LockedError`: 75, try later; the others 1); a SQLite
    "database is locked" that outlasted the busy timeout is a `LockedError` too; click's usage errors
    keep click's text and code 2; anything else is a defect: one line, exit 1 (`--debug`: traceback).
    """
    debug = "--debug" in sys.argv
    try:
        # In non-standalone mode click returns the code of `ctx.exit(code)` / `raise Exit(code)`
        # instead of exiting: pass it on, or exit codes like 75 would become 0.
        code = cli.main(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        click.echo("Aborted." if isinstance(exc, click.exceptions.Abort) else "Interrupted.", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _print_traceback(debug)
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        sys.exit(_report_error(as_wacamp_error(exc), debug=debug))
    if isinstance(code, int) and code:
        sys.exit(code)


def as_wacamp_error(exc: Exception) -> Exception:
    """A SQLite "database is locked" (another process kept writing past the busy timeout) as a LockedError."""
    if isinstance(exc, sa.exc.OperationalError) and "database is locked" in str(exc.orig):
        return LockedError(
            "the database is busy: another wacamp process is writing to it; try again when it is done"
        )
    if is_passing_database_trouble(exc):  # unreachable, restarting: nothing was half-done, try later
        orig = getattr(exc, "orig", exc)
        return DatabaseUnavailableError(
            f"the database did not answer ({str(orig).strip()[:200]}); try again later"
        )
    return exc


def _report_error(exc: Exception, *, debug: bool) -> ExitCode:
    """Print the one line for an error that ended a command; the code to exit with."""
    if isinstance(exc, WacampError):
        _print_traceback(debug)
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    if debug:
        raise exc
    click.echo(f"Error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
    return ExitCode.FAILED


def _print_traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc()

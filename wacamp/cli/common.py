"""What every command shares: the application context, `--json`, and the consoles.

Data goes to stdout (so `wacamp ... --json | jq` works); progress and chatter go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import click
from rich.console import Console
from sqlalchemy.engine import Engine

from campaigns.core.db import engine_from_settings, require_schema
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import Provenance, load_settings
from scheduler.sending.journal import replay_journal

F = TypeVar("F", bound=Callable[..., Any])

#: Progress, warnings and summaries for people.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
#: Data (tables) for people; `--json` output bypasses it.
out_console = Console(highlight=False, soft_wrap=True)


@dataclass
class AppContext:
    """Built once by the top-level group; commands reach it with `@pass_app`."""

    config_file: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    debug: bool = False

    @cached_property
    def _loaded(self) -> tuple[Settings, Provenance]:
        return load_settings(config_file=self.config_file, overrides=self.overrides)

    @property
    def settings(self) -> Settings:
        return self._loaded[0]

    @property
    def provenance(self) -> Provenance:
        return self._loaded[1]

    @cached_property
    def raw_engine(self) -> Engine:
        """The engine without the schema check (for `db upgrade` / `db current`)."""
        return engine_from_settings(self.settings)

    @cached_property
    def engine(self) -> Engine:
        """The engine, after checking that the schema is at the head revision.

        Results an earlier run could not write (the database was down when it stopped or was
        killed) are replayed from the outcome journal first, so every command sees them.
        """
        engine = self.raw_engine
        require_schema(engine)
        replay_journal(engine, self.settings)
        return engine


pass_app = click.make_pass_decorator(AppContext)


def json_option(func: F) -> F:
    """Add `--json`: print machine-readable data on stdout instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")(
        func
    )


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))

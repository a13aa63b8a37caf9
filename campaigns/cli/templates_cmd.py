"""`wacamp templates ...`."""

from __future__ import annotations

import click


@click.group("templates")
def templates_group() -> None:
    """Templates."""


COMMANDS: list[click.Command] = [templates_group]

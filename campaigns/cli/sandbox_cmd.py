"""`wacamp sandbox ...`."""

from __future__ import annotations

import click


@click.group("sandbox")
def sandbox_group() -> None:
    """Sandbox."""


COMMANDS: list[click.Command] = [sandbox_group]

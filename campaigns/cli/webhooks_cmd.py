"""`wacamp webhooks ...`."""

from __future__ import annotations

import click


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhooks."""


COMMANDS: list[click.Command] = [webhooks_group]

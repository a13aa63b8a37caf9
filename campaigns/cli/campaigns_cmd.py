"""`wacamp campaigns ...`."""

from __future__ import annotations

import click


@click.group("campaigns")
def campaigns_group() -> None:
    """Campaigns."""


COMMANDS: list[click.Command] = [campaigns_group]

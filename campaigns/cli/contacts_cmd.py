"""`wacamp contacts ...`."""

from __future__ import annotations

import click


@click.group("contacts")
def contacts_group() -> None:
    """Contacts."""


COMMANDS: list[click.Command] = [contacts_group]

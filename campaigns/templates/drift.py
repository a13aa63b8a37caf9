"""Category drift: the platform recategorised (or announced it will recategorise) a campaign's template.

A campaign records its template's category when it is created. A ``template_category_update``
webhook (`scheduler.webhooks.account_events`) changes the stored template's category, keeping the old one
and when it changed, or records an announced change (``correct_category``). `category_drift` compares
the two for one campaign: `campaigns show`, `run-due`'s summary and the report print its warning, and
the cost estimates use `effective_category` (a utility template turned MARKETING costs more and counts
for the per-user marketing limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.core.models import TEMPLATE_TABLE as TEMPLATE
from campaigns.core.models import Campaign


@dataclass(frozen=True)
class CategoryDrift:
    """The category a campaign was created with, the template's now, and any announced next one."""

    template: str
    language: str
    created_as: str
    current: str
    upcoming: str | None

    @property
    def warning(self) -> str:
        """One line for people."""
        label = f"template {self.template} ({self.language})"
        if self.current != self.created_as:
            why = (
                " (costs more, counts for the marketing per-user limit)"
                if self.current == "MARKETING"
                else ""
            )
            return (
                f"{label} is now {self.current}, it was {self.created_as} when the campaign was created: "
                f"priced as {self.current}{why}"
            )
        return f"{label} will become {self.upcoming} (announced by the platform; now {self.current})"


def category_drift(source: Engine | Connection, campaign: Campaign) -> CategoryDrift | None:
    """How the campaign's template category moved since the campaign was created, or None."""
    query = sa.select(TEMPLATE.c.category, TEMPLATE.c.upcoming_category).where(
        TEMPLATE.c.name == campaign.template_name, TEMPLATE.c.language == campaign.language
    )
    if isinstance(source, Connection):
        row = source.execute(query).first()
    else:
        with source.connect() as conn:
            row = conn.execute(query).first()
    if row is None:
        return None
    created_as, current = campaign.category.upper(), str(row.category).upper()
    upcoming = str(row.upcoming_category).upper() if row.upcoming_category else None
    if current == created_as and (upcoming is None or upcoming == current):
        return None
    return CategoryDrift(campaign.template_name, campaign.language, created_as, current, upcoming)


def effective_category(source: Engine | Connection, campaign: Campaign) -> str:
    """The category a campaign's messages are priced as now: its template's, after any drift."""
    drift = category_drift(source, campaign)
    return drift.current if drift is not None else campaign.category

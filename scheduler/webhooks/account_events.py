"""Template, sender and account events applied: template status and category, sender tier, pauses.

Template and sender updates are plain overwrites of the same values; a PAUSED or DISABLED template,
or an account restriction, pauses the campaigns it concerns (`campaigns.control`), an APPROVED
template resumes the campaigns its pause stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns import control
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import SENDER_TABLE as SENDER
from campaigns.core.models import TEMPLATE_TABLE as TEMPLATE
from campaigns.core.models import (
    CampaignState,
)
from campaigns.core.settings import Settings
from scheduler.webhooks.events import (
    SenderCapabilityEvent,
    TemplateCategoryEvent,
    TemplateStatusEvent,
)

#: Campaign states that a template or account problem pauses.
_PAUSABLE = (CampaignState.RUNNING, CampaignState.WAITING, CampaignState.PLANNED)
_PAUSING_TEMPLATE_EVENTS = frozenset({"PAUSED", "DISABLED"})


@dataclass(frozen=True)
class AccountEventApplier:
    """Applies a batch's template, sender and account events inside its transaction."""

    conn: Connection
    settings: Settings
    now: datetime

    def apply_template_status(self, event: TemplateStatusEvent) -> None:
        match = self._template_match(event)
        if match is None:
            return
        found = self.conn.execute(sa.select(TEMPLATE.c.name, TEMPLATE.c.language).where(match))
        pairs = {(row.name, row.language) for row in found}
        self.conn.execute(
            sa.update(TEMPLATE).where(match).values(status=event.event, status_reason=event.reason)
        )
        if event.name and event.language:
            pairs.add((event.name, event.language))
        if event.event == "APPROVED":  # approved again: the campaigns its pause stopped go on
            for name, language in sorted(pairs):
                control.resume_template_paused(self.conn, name=name, language=language, now=self.now)
            return
        if event.event not in _PAUSING_TEMPLATE_EVENTS:
            return
        for name, language in sorted(pairs):
            reason = control.template_pause_reason(name, language, event=event.event, detail=event.reason)
            self._pause(
                sa.and_(CAMPAIGN.c.template_name == name, CAMPAIGN.c.language == language), reason=reason
            )

    def apply_category(self, event: TemplateCategoryEvent) -> None:
        """Category drift: the new category (the old one kept), or the one announced for later."""
        match = self._template_match(event)
        if match is None:
            return
        if event.new_category:
            changed = TEMPLATE.c.category != event.new_category  # a duplicate webhook changes nothing
            t = TEMPLATE.c
            values: dict[str, Any] = {
                "category": event.new_category,
                "previous_category": sa.case((changed, t.category), else_=t.previous_category),
                "category_changed_at": sa.case((changed, self.now), else_=t.category_changed_at),
                "upcoming_category": None,
            }
        elif event.correct_category:
            values = {"upcoming_category": event.correct_category}
        else:
            return
        self.conn.execute(sa.update(TEMPLATE).where(match).values(values))

    @staticmethod
    def _template_match(event: TemplateStatusEvent | TemplateCategoryEvent) -> sa.ColumnElement[bool] | None:
        clauses: list[sa.ColumnElement[bool]] = []
        if event.platform_id:
            clauses.append(TEMPLATE.c.platform_id == event.platform_id)
        if event.name and event.language:
            clauses.append(sa.and_(TEMPLATE.c.name == event.name, TEMPLATE.c.language == event.language))
        return sa.or_(*clauses) if clauses else None

    def _pause(self, where: sa.ColumnElement[bool], *, reason: str) -> None:
        matching = self.conn.execute(sa.select(CAMPAIGN.c.id).where(where, CAMPAIGN.c.state.in_(_PAUSABLE)))
        for campaign_id in matching.scalars().all():
            control.change_state(
                self.conn,
                campaign_id,
                CampaignState.PAUSED,
                now=self.now,
                pause_reason=reason[:500],
                only_from=_PAUSABLE,
            )

    def pause_all(self, reason: str) -> None:
        self._pause(sa.true(), reason=reason)

    def apply_sender(self, event: SenderCapabilityEvent) -> None:
        values: dict[str, Any] = {"updated_at": self.now}
        if event.messaging_tier:
            values["messaging_tier"] = event.messaging_tier[:32]
        if event.throughput_level:
            values["throughput_level"] = event.throughput_level[:32]
        if len(values) == 1:
            return
        stmt = sa.update(SENDER).values(**values)
        if event.phone_number_id:
            stmt = stmt.where(SENDER.c.phone_number_id == event.phone_number_id)
        self.conn.execute(stmt)

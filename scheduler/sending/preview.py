"""The dry run of `campaigns run --dry-run`: what a run would do now, without sending or writing anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.dbtypes import utcnow
from campaigns.core.settings import Settings
from scheduler.providers.base import Provider
from scheduler.sending import ledger
from scheduler.sending.budget import TierBudget, TierChoice, resolve_tier


@dataclass(frozen=True)
class RunPreview:
    """What `campaigns run --dry-run` says a run would do now, without sending or writing anything."""

    campaign: str
    state: str
    due: int
    later: int
    next_due_at: datetime | None
    tier: TierChoice
    budget_remaining: int | None
    would_send: int
    rate_per_s: float
    counts: dict[str, int]

    @property
    def eta_s(self) -> float:
        return self.would_send / self.rate_per_s if self.rate_per_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The preview as JSON-ready data."""
        return {
            "campaign": self.campaign,
            "state": self.state,
            "due": self.due,
            "later": self.later,
            "next_due_at": self.next_due_at.isoformat() if self.next_due_at else None,
            "tier": {"name": self.tier.name, "limit": self.tier.limit, "source": self.tier.source},
            "budget_remaining": self.budget_remaining,
            "would_send": self.would_send,
            "rate_per_s": self.rate_per_s,
            "eta_s": round(self.eta_s, 1),
            "counts": self.counts,
        }


async def preview_run(
    *, engine: Engine, settings: Settings, campaign: control.CampaignRef, provider: Provider | None
) -> RunPreview:
    """A dry run: the queue, the tier budget and how long sending would take (reads only).

    `would_send` counts every due row against the budget, so it can only be too low (recipients
    already counted or in a service window cost nothing).
    """
    sender = settings.sender(campaign.sender_name)
    tier = await resolve_tier(settings=settings, sender=sender, provider=provider)
    budget = TierBudget(
        portfolio=sender.portfolio, limit=tier.limit, window_s=settings.limits.tier_window_h * 3600
    )
    now = utcnow()
    with engine.connect() as conn:
        queue = ledger.queue_state(conn, campaign_id=campaign.id, now=now)
        remaining = budget.remaining(conn, now)
        counts = ledger.counts_by_state(conn, campaign_id=campaign.id)
    would_send = queue.due if remaining is None else min(queue.due, remaining)
    return RunPreview(
        campaign=campaign.name,
        state=campaign.state,
        due=queue.due,
        later=queue.later,
        next_due_at=queue.next_due_at,
        tier=tier,
        budget_remaining=remaining,
        would_send=would_send,
        rate_per_s=settings.sender_rate_per_s(sender),
        counts=counts,
    )

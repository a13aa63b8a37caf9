"""What a planned campaign will take: recipients, skips by reason, duration, tier days and cost.

Duration is the number of recipients to send at the sender's rate (`Settings.sender_rate_per_s`).
The messaging tier caps unique recipients per moving 24 h for the whole business portfolio: a
campaign larger than that budget needs several days (the dispatcher waits and resumes). With
``messaging_tier = "auto"`` the tier is read from the platform when a run starts; the estimate uses
TIER_250, the tier a new portfolio starts with. Cost is the rate card's price per delivered template
of the campaign's category, by the recipients' country calling codes, as if every message is delivered.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.caps import preview, rule_for
from campaigns.control import ledger_counts
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, MessageState
from campaigns.core.settings import Settings
from campaigns.planning.pricing import RateCard, load_rate_card
from campaigns.templates.drift import category_drift

AUTO_TIER_ESTIMATE = "TIER_250"


@dataclass(frozen=True)
class CountryCost:
    """Recipients to send and their estimated cost for one country calling code."""

    country_code: int | None
    recipients: int
    unit_price: float
    total: float


@dataclass(frozen=True)
class PlanSummary:
    """The plan of a campaign as people read it (and as `--json` prints it)."""

    campaign: str
    campaign_id: int
    state: str
    to_send: int
    deferred: int
    skipped_by_reason: dict[str, int]
    by_state: dict[str, int]
    sender: str
    rate_per_s: float
    send_time_s: float
    messaging_tier: str
    tier_limit: int | None
    days_needed: int
    category: str
    currency: str
    estimated_cost: float
    example_prices: bool
    cost_by_country: list[CountryCost] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The frequency cap (`campaigns.caps`): cap, policy, portfolio, how many are at it now; None = no cap.
    frequency_cap: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def country_code_of_prefix(prefix: str) -> int | None:
    """The calling code an E.164 number starting with `prefix` (``+391``) belongs to."""
    digits = prefix.lstrip("+")
    for length in (1, 2, 3):  # calling codes are prefix-free
        code = int(digits[:length]) if digits[:length].isdigit() else None
        if code is not None and code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return code
    return None


def _recipients_by_country(engine: Engine, campaign_id: int) -> dict[int | None, int]:
    prefix = sa.func.substr(MESSAGE.c.phone, 1, 4)
    query = (
        sa.select(prefix, sa.func.count())
        .where(MESSAGE.c.campaign_id == campaign_id, MESSAGE.c.state == MessageState.PLANNED.value)
        .group_by(prefix)
    )
    counts: dict[int | None, int] = {}
    with engine.connect() as conn:
        for value, count in conn.execute(query):
            code = country_code_of_prefix(str(value or ""))
            counts[code] = counts.get(code, 0) + int(count)
    return counts


def _deferred(engine: Engine, campaign_id: int, now: datetime) -> int:
    query = sa.select(sa.func.count()).where(
        MESSAGE.c.campaign_id == campaign_id,
        MESSAGE.c.state == MessageState.PLANNED.value,
        MESSAGE.c.next_attempt_at > now,
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _frequency_cap(
    engine: Engine, settings: Settings, campaign: Campaign, now: datetime
) -> dict[str, Any] | None:
    """The campaign's cap and how many of its planned rows are at it now (None without a cap)."""
    rule = rule_for(campaign, settings)
    if rule is None:
        return None
    with engine.connect() as conn:
        shown = preview(conn, rule, campaign_id=int(campaign.id or 0), now=now)
    return {
        "cap": rule.cap.text,
        "policy": rule.policy,
        "portfolio": rule.portfolio,
        "at_cap_now": shown.at_cap,
        "first_free_at": shown.first_free_at.isoformat() if shown.first_free_at else None,
        "summary": shown.describe(),
    }


def _tier(settings: Settings, sender_tier: str) -> tuple[str, list[str]]:
    tier = sender_tier or settings.limits.messaging_tier
    if tier == "auto":
        note = (
            "messaging tier is read from the platform when the run starts; "
            f"estimated with {AUTO_TIER_ESTIMATE}"
        )
        return AUTO_TIER_ESTIMATE, [note]
    return tier, []


def _costs(card: RateCard, *, category: str, counts: dict[int | None, int]) -> list[CountryCost]:
    rows = []
    for code, recipients in sorted(counts.items(), key=lambda item: -item[1]):
        price = card.price(category=category, country_code=code)
        rows.append(CountryCost(code, recipients, price, round(price * recipients, 4)))
    return rows


def plan_summary(
    engine: Engine, *, settings: Settings, campaign: Campaign, now: datetime | None = None
) -> PlanSummary:
    """The summary of a campaign's ledger as it stands."""
    campaign_id = int(campaign.id or 0)
    counts = ledger_counts(engine, campaign_id)
    to_send = counts.by_state.get(MessageState.PLANNED.value, 0)
    sender = settings.sender(campaign.sender_name)
    rate = settings.sender_rate_per_s(sender)
    tier, notes = _tier(settings, sender.messaging_tier)
    limit = settings.limits.tier_limit(tier)
    days = max(1, math.ceil(to_send / limit)) if limit and to_send else 1
    if days > 1:
        notes.append(
            f"{to_send} recipients exceed the {tier} budget of {limit} unique recipients per "
            f"{settings.limits.tier_window_h:g} h: the campaign needs {days} days"
        )
    card = load_rate_card(settings.rate_card_path())
    drift = category_drift(engine, campaign)
    category = drift.current if drift is not None else campaign.category
    if drift is not None:
        notes.append(drift.warning)
    costs = _costs(card, category=category, counts=_recipients_by_country(engine, campaign_id))
    if card.example_values:
        notes.append(f"prices are EXAMPLE values from {card.source}: put your own rate card there")
    return PlanSummary(
        campaign=campaign.name,
        campaign_id=campaign_id,
        state=campaign.state,
        to_send=to_send,
        deferred=_deferred(engine, campaign_id, now or utcnow()),
        skipped_by_reason=counts.skipped_by_reason,
        by_state=counts.by_state,
        sender=sender.name,
        rate_per_s=rate,
        send_time_s=to_send / rate if rate > 0 else 0.0,
        messaging_tier=tier,
        tier_limit=limit,
        days_needed=days,
        category=category,
        currency=card.currency,
        estimated_cost=round(sum(c.total for c in costs), 2),
        example_prices=card.example_values,
        cost_by_country=costs,
        notes=notes,
        frequency_cap=_frequency_cap(engine, settings, campaign, now or utcnow()),
    )


def format_duration(seconds: float) -> str:
    """``3h 12m``, ``4m 10s``, ``12s``."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"

"""The report per rollout stage: funnel, replies, opt-outs, cost and the guardrails against their
thresholds, for every stage of a campaign sent with ``--rollout`` (None for the others).

Counted with one GROUP BY over the campaign's rows (stage x state x number prefix) and one over its
attributed inbound messages; the guardrails are judged exactly as the review judges them
(`campaigns.rollout.guardrails`), so the report shows the figures the decision was made on.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, MessageState
from campaigns.core.settings import Settings
from campaigns.planning.pricing import RateCard, country_code_of
from campaigns.rollout.guardrails import judge, stage_facts
from campaigns.rollout.review import describe
from campaigns.rollout.stages import Rollout, rollout_of, stage_label

S = MessageState
m = MESSAGE.c
_ACCEPTED = {S.ACCEPTED, S.SENT, S.DELIVERED, S.READ, "held"}
_DELIVERED = {S.DELIVERED, S.READ}


def rollout_report(
    conn: Connection, campaign: Campaign, *, settings: Settings, card: RateCard, now: datetime
) -> dict[str, Any] | None:
    """Per stage: members, funnel, rates, replies, cost and guardrail checks; None without a rollout."""
    rollout = rollout_of(campaign)
    if rollout is None:
        return None
    funnel = _funnel(conn, campaign, card)
    replies = _replies(conn, campaign)
    stages = [
        _stage(conn, campaign, rollout, stage, funnel.get(stage, {}), replies.get(stage, {}), settings)
        for stage in range(len(rollout.shares))
    ]
    return {**(describe(conn, campaign, now=now) or {}), "per_stage": stages}


def _funnel(conn: Connection, campaign: Campaign, card: RateCard) -> dict[int, dict[str, float]]:
    prefix = sa.func.substr(m.phone, 1, 4)
    rows = conn.execute(
        sa.select(m.stage, m.state, prefix, sa.func.count())
        .where(m.campaign_id == campaign.id)
        .group_by(m.stage, m.state, prefix)
    )
    out: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for stage, state, head, count in rows:
        counts = out[int(stage or 0)]
        counts["members"] += count
        counts["skipped"] += count if state == S.SKIPPED else 0
        counts["accepted"] += count if state in _ACCEPTED else 0
        counts["delivered"] += count if state in _DELIVERED else 0
        counts["read"] += count if state == S.READ else 0
        counts["failed"] += count if state == S.FAILED else 0
        counts["pending"] += count if state == S.PLANNED else 0
        if state in _ACCEPTED:
            code = _calling_code(str(head or ""))
            counts["cost"] += count * card.price(category=campaign.category, country_code=code)
    return out


def _calling_code(prefix: str) -> int | None:
    """The calling code of numbers starting with `prefix` (+39… → 39), as the rate card prices it."""
    return country_code_of(prefix.ljust(12, "0"))


def _replies(conn: Connection, campaign: Campaign) -> dict[int, dict[str, int]]:
    taps = sa.func.sum(sa.case((INBOUND.c.type.in_(["button", "interactive"]), 1), else_=0))
    optouts = sa.func.sum(sa.case((INBOUND.c.is_optout.is_(True), 1), else_=0))
    rows = conn.execute(
        sa.select(m.stage, sa.func.count(), taps, optouts)
        .select_from(INBOUND.join(MESSAGE, m.id == INBOUND.c.message_id))
        .where(INBOUND.c.campaign_id == campaign.id)
        .group_by(m.stage)
    )
    return {
        int(stage or 0): {"messages": int(n), "button_taps": int(t or 0), "opt_out_messages": int(o or 0)}
        for stage, n, t, o in rows
    }


def _stage(
    conn: Connection,
    campaign: Campaign,
    rollout: Rollout,
    stage: int,
    funnel: dict[str, float],
    replies: dict[str, int],
    settings: Settings,
) -> dict[str, Any]:
    facts = stage_facts(conn, campaign, stage)
    judgement = judge(facts, rollout, settings=settings.rollout, limits=settings.limits)
    sends = facts.sends
    messages = replies.get("messages", 0)
    taps = replies.get("button_taps", 0)
    return {
        "stage": stage + 1,
        "label": stage_label(stage, rollout),
        "released": campaign.rollout_stage is not None and stage <= campaign.rollout_stage,
        "members": int(funnel.get("members", 0)),
        "sends": sends,
        **{key: int(funnel.get(key, 0)) for key in ("accepted", "delivered", "read", "failed", "pending")},
        "replies": messages - taps,
        "button_taps": taps,
        "opt_outs": facts.optouts,
        "read_rate": _share(funnel.get("read", 0), funnel.get("delivered", 0)),
        "reply_rate": _share(messages - taps, sends),
        "button_rate": _share(taps, sends),
        "opt_out_rate": _share(facts.optouts, sends),
        "cost": round(funnel.get("cost", 0.0), 4),
        "guardrails": judgement.as_dict() if sends else None,
    }


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None

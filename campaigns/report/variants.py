"""The report per A/B variant: members, funnel, read / reply / button / opt-out rates and cost of each
variant, and the decision with its numbers (the stored one, or the test as it stands now)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, MessageState
from campaigns.planning.pricing import RateCard, country_code_of
from campaigns.rollout.ab_test import decide, proportions
from campaigns.rollout.variants import ab_of

S = MessageState
m = MESSAGE.c
_ACCEPTED = {S.ACCEPTED, S.SENT, S.DELIVERED, S.READ, "held"}
_DELIVERED = {S.DELIVERED, S.READ}


def ab_report(conn: Connection, campaign: Campaign, *, card: RateCard) -> dict[str, Any] | None:
    """Per variant: its template and figures; the decision (stored, or as the test stands); None: no A/B."""
    ab = ab_of(campaign)
    if ab is None:
        return None
    counts = _counts(conn, campaign, card)
    replies = _replies(conn, campaign)
    per_variant = [
        _variant(v.name, v.template, v.language, counts[v.name], replies[v.name]) for v in ab.variants
    ]
    stage = 0 if ab.test_share is not None else None
    decision = ab.decision or decide(proportions(conn, campaign, ab, stage=stage), ab).as_json()
    return {
        "metric": ab.metric,
        "alpha": ab.alpha,
        "default": ab.default,
        "test_share": ab.test_share,
        "split": dict(zip(ab.names, ab.weights, strict=True)),
        "decided": ab.decision is not None,
        "decision": decision,
        "per_variant": per_variant,
    }


def _counts(conn: Connection, campaign: Campaign, card: RateCard) -> dict[str, dict[str, float]]:
    head = sa.func.substr(m.phone, 1, 4)
    rows = conn.execute(
        sa.select(m.variant, m.state, head, sa.func.count())
        .where(m.campaign_id == campaign.id, m.variant.is_not(None))
        .group_by(m.variant, m.state, head)
    )
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for variant, state, prefix, count in rows:
        c = out[str(variant)]
        c["members"] += count
        c["accepted"] += count if state in _ACCEPTED else 0
        c["delivered"] += count if state in _DELIVERED else 0
        c["read"] += count if state == S.READ else 0
        c["failed"] += count if state == S.FAILED else 0
        if state in _ACCEPTED:
            code = country_code_of(str(prefix or "").ljust(12, "0"))
            c["cost"] += count * card.price(category=campaign.category, country_code=code)
    return out


def _replies(conn: Connection, campaign: Campaign) -> dict[str, dict[str, int]]:
    taps = sa.func.sum(sa.case((INBOUND.c.type.in_(["button", "interactive"]), 1), else_=0))
    optouts = sa.func.sum(sa.case((INBOUND.c.is_optout.is_(True), 1), else_=0))
    rows = conn.execute(
        sa.select(m.variant, sa.func.count(), taps, optouts)
        .select_from(INBOUND.join(MESSAGE, m.id == INBOUND.c.message_id))
        .where(INBOUND.c.campaign_id == campaign.id, m.variant.is_not(None))
        .group_by(m.variant)
    )
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for variant, n, t, o in rows:
        out[str(variant)] = {"messages": int(n), "button_taps": int(t or 0), "opt_outs": int(o or 0)}
    return out


def _variant(
    name: str, template: str, language: str, counts: dict[str, float], replies: dict[str, int]
) -> dict[str, Any]:
    sends = counts.get("accepted", 0) + counts.get("failed", 0)
    delivered = counts.get("delivered", 0)
    taps = replies.get("button_taps", 0)
    answers = replies.get("messages", 0) - taps
    return {
        "variant": name,
        "template": f"{template} ({language})",
        **{key: int(counts.get(key, 0)) for key in ("members", "accepted", "delivered", "read", "failed")},
        "replies": answers,
        "button_taps": taps,
        "opt_outs": replies.get("opt_outs", 0),
        "read_rate": _share(counts.get("read", 0), delivered),
        "reply_rate": _share(answers, delivered),
        "button_rate": _share(taps, delivered),
        "opt_out_rate": _share(replies.get("opt_outs", 0), sends),
        "cost": round(counts.get("cost", 0.0), 4),
    }


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None

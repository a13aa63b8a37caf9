"""The facts of a campaign report, computed from the ledger with aggregate SQL (no row is loaded).

`campaign_facts` returns a JSON-ready dict whose keys are documented in docs/reports.md and are
stable: renderers (table, json, html) only read it. Every count comes from GROUP BY queries on the
campaign's ledger rows (index `ix_message_claim` starts with campaign_id), so a 1M-row campaign is
summarised in a few table scans of that campaign only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.caps import CAPPED, describe_setting, rule_for, waiting_for_cap
from campaigns.control import find_campaign
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import ConfigError
from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import SENDER_TABLE as SENDER
from campaigns.core.models import THROTTLE_EVENT_TABLE as THROTTLE
from campaigns.core.models import (
    Campaign,
    MessageState,
)
from campaigns.core.settings import Settings
from campaigns.core.settings_sections import LimitsSettings
from campaigns.definitions import list_name
from campaigns.planning.pricing import (
    CHARGED_PRICING_TYPE,
    FREE_PRICING_TYPES,
    RateCard,
    load_rate_card,
)
from campaigns.report.error_catalog import error_info
from campaigns.report.stages import rollout_report
from campaigns.report.variants import ab_report
from campaigns.templates.drift import category_drift, effective_category

REPORT_VERSION = 1

S = MessageState
#: The funnel: each count includes the states after it (a read message was delivered, sent, accepted).
FUNNEL: dict[str, tuple[S, ...]] = {
    "accepted": (S.ACCEPTED, S.HELD, S.SENT, S.DELIVERED, S.READ),
    "sent": (S.SENT, S.DELIVERED, S.READ),
    "delivered": (S.DELIVERED, S.READ),
    "read": (S.READ,),
}
PENDING_STATES = (S.PLANNED, S.CLAIMED, S.SENDING)
#: When a send happened, as the platform saw it: its answer (accepted or failed), else the claim time.
#: (`sending_at` is written by the group commit just before the requests go out.)
SENT_AT = sa.func.coalesce(MESSAGE.c.accepted_at, MESSAGE.c.failed_at, MESSAGE.c.sending_at)
#: At most this many points per time series in the timeline (buckets grow with the campaign).
MAX_POINTS = 1500


def campaign_facts(
    engine: Engine, *, settings: Settings, campaign: str | int | Campaign, now: datetime | None = None
) -> dict[str, Any]:
    """Every fact of the report of one campaign, as a JSON-ready dict (see docs/reports.md)."""
    target = campaign if isinstance(campaign, Campaign) else find_campaign(engine, campaign)
    campaign_id = int(target.id or 0)
    card = load_rate_card(settings.rate_card_path())
    with engine.connect() as conn:
        groups = _ledger_groups(conn, target)
        counts, skipped = _counts(conn, groups, target.list_id)
        series = {
            name: per_second(conn, campaign_id, column)
            for name, column in (
                ("sends", SENT_AT),
                ("delivered", MESSAGE.c.delivered_at),
                ("read", MESSAGE.c.read_at),
            )
        }
        facts: dict[str, Any] = {
            "report_version": REPORT_VERSION,
            "generated_at": _iso(now or utcnow()),
            "campaign": _campaign(engine, conn, target),
            "counts": counts,
            "rates": _rates(counts),
            "skipped": skipped,
            "errors": _errors(groups, settings.limits),
            "throughput": _throughput(conn, campaign_id, series["sends"]),
            "tier": _tier(conn, settings, target, counts),
            "frequency_cap": _frequency_cap(conn, settings, target, skipped, now or utcnow()),
            "replies": _replies(conn, campaign_id),
            "paths": _paths(conn, campaign_id),
            "cost": _cost(groups, target, card, category=effective_category(conn, target)),
            "timeline": _timeline(series),
            "rollout": rollout_report(conn, target, settings=settings, card=card, now=now or utcnow()),
            "ab": ab_report(conn, target, card=card),
        }
    return facts


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _campaign(engine: Engine, conn: Connection, campaign: Campaign) -> dict[str, Any]:
    parent = None
    if campaign.parent_id is not None:
        parent = find_campaign(conn, campaign.parent_id).name
    return {
        "id": campaign.id,
        "name": campaign.name,
        "state": campaign.state,
        "pause_reason": campaign.pause_reason,
        "template": campaign.template_name,
        "language": campaign.language,
        "category": campaign.category,
        "category_drift": drift.warning if (drift := category_drift(conn, campaign)) else None,
        "sender": campaign.sender_name,
        "via": campaign.via,
        "product_policy": campaign.product_policy,
        "list": list_name(engine, campaign.list_id),
        "parent": parent,
        "created_at": _iso(campaign.created_at),
        "scheduled_at": _iso(campaign.scheduled_at),
        "planned_at": _iso(campaign.planned_at),
        "started_at": _iso(campaign.started_at),
        "finished_at": _iso(campaign.finished_at),
        "deadline": _iso(campaign.deadline),
    }


@dataclass(frozen=True)
class _Group:
    """Ledger rows sharing state, skip reason, error code, number prefix and billed pricing category."""

    state: str
    skip_reason: str | None
    error_code: int | None
    error_title: str | None
    prefix: str
    billed: str | None
    count: int


def _ledger_groups(conn: Connection, campaign: Campaign) -> list[_Group]:
    """ONE pass over the campaign's rows for the funnel, skip reasons, errors and both costs."""
    prefix = sa.func.substr(MESSAGE.c.phone, 1, 4).label("prefix")
    delivered = MESSAGE.c.state.in_([S.DELIVERED.value, S.READ.value])
    priced = sa.func.lower(sa.func.coalesce(MESSAGE.c.pricing_category, campaign.category))
    billed = sa.case((sa.and_(delivered, _charged()), priced)).label("billed")
    keys = (MESSAGE.c.state, MESSAGE.c.skip_reason, MESSAGE.c.error_code, prefix, billed)
    rows = conn.execute(
        sa.select(*keys, sa.func.max(MESSAGE.c.error_title), sa.func.count())
        .where(MESSAGE.c.campaign_id == campaign.id)
        .group_by(*keys)
    )
    return [
        _Group(str(state), skip, code, title, str(value or ""), cat, int(n))
        for state, skip, code, value, cat, title, n in rows
    ]


def _charged() -> sa.ColumnElement[bool]:
    """Whether a delivered row is charged: never a free pricing.type (free_customer_service,
    free_entry_point) nor ``billable: false``; ``billable: true``, or no flag with type ``regular``."""
    kind, billable = MESSAGE.c.pricing_type, MESSAGE.c.billable
    not_free = sa.or_(kind.is_(None), kind.not_in(FREE_PRICING_TYPES))
    flagged = sa.or_(billable.is_(True), sa.and_(billable.is_(None), kind == CHARGED_PRICING_TYPE))
    return sa.and_(not_free, flagged)


def _counts(conn: Connection, groups: list[_Group], list_id: int) -> tuple[dict[str, int], dict[str, int]]:
    list_size = conn.execute(
        sa.select(sa.func.count()).select_from(MEMBER).where(MEMBER.c.list_id == list_id)
    ).scalar_one()
    by_state: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for group in groups:
        by_state[group.state] = by_state.get(group.state, 0) + group.count
        if group.state == S.SKIPPED:
            reason = group.skip_reason or "unknown"
            reasons[reason] = reasons.get(reason, 0) + group.count

    def total(states: Iterable[str]) -> int:
        return sum(by_state.get(str(state), 0) for state in states)

    ledger, skipped = sum(by_state.values()), total([S.SKIPPED])
    counts = {
        "list_size": int(list_size),
        "ledger": ledger,
        "planned": ledger - skipped,
        "skipped": skipped,
        **{stage: total(states) for stage, states in FUNNEL.items()},
        "held": total([S.HELD]),
        "failed": total([S.FAILED]),
        "unknown": total([S.UNKNOWN]),
        "pending": total(PENDING_STATES),
    }
    return counts, dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))


def _paths(conn: Connection, campaign_id: int) -> dict[str, int]:
    """Accepted messages by the API that took them (`via`: cloud, marketing, onprem)."""
    accepted = [state.value for state in FUNNEL["accepted"]]
    query = (
        sa.select(MESSAGE.c.via, sa.func.count())
        .where(MESSAGE.c.campaign_id == campaign_id, MESSAGE.c.state.in_(accepted))
        .group_by(MESSAGE.c.via)
    )
    return {str(via or "unrecorded"): int(n) for via, n in conn.execute(query)}


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _rates(counts: dict[str, int]) -> dict[str, float | None]:
    return {
        "accepted": _ratio(counts["accepted"], counts["planned"]),
        "delivered": _ratio(counts["delivered"], counts["accepted"]),
        "read": _ratio(counts["read"], counts["delivered"]),
        "failed": _ratio(counts["failed"], counts["planned"]),
    }


def _errors(groups: list[_Group], limits: LimitsSettings) -> list[dict[str, Any]]:
    by_code: dict[int | None, tuple[int, str | None]] = {}
    for group in groups:
        if group.state != S.FAILED:
            continue
        count, title = by_code.get(group.error_code, (0, None))
        by_code[group.error_code] = (
            count + group.count,
            max(filter(None, (title, group.error_title)), default=None),
        )
    errors = []
    for code, (count, title) in by_code.items():
        info = error_info(code, limits=limits)
        errors.append(
            {"code": code, "title": title, "count": count, "meaning": info.meaning, "action": info.action}
        )
    return sorted(errors, key=lambda e: (-e["count"], e["code"] if e["code"] is not None else -1))


def second_key(column: Any, dialect: str) -> Any:
    """The calendar second of a timestamp column, in SQL, cheap enough to GROUP BY on 1M rows."""
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff': the first 19 characters
        return sa.func.substr(column, 1, 19)
    return sa.func.date_trunc("second", column)


def _as_second(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def per_second(conn: Connection, campaign_id: int, column: Any) -> dict[int, int]:
    """Rows of the campaign by the unix second of `column` (rows where it is NULL left out)."""
    key = second_key(column, conn.dialect.name).label("second")
    rows = conn.execute(
        sa.select(key, sa.func.count())
        .where(MESSAGE.c.campaign_id == campaign_id, column.is_not(None))
        .group_by(key)
    )
    return {int(_as_second(second).timestamp()): int(n) for second, n in rows}


def _throughput(conn: Connection, campaign_id: int, sends: dict[int, int]) -> dict[str, Any]:
    """Mean and busiest second from the per-second sends (to the second), plus the throttle events."""
    throttles = conn.execute(
        sa.select(THROTTLE.c.code, sa.func.count())
        .where(THROTTLE.c.campaign_id == campaign_id)
        .group_by(THROTTLE.c.code)
    ).all()
    count = sum(sends.values())
    busiest = max(sends.items(), key=lambda item: (item[1], -item[0]), default=None)
    first, last = (min(sends), max(sends)) if sends else (None, None)
    duration_s = float(last - first + 1) if first is not None and last is not None else 0.0
    return {
        "attempted": count,
        "first_send_at": _iso(datetime.fromtimestamp(first, tz=UTC)) if first is not None else None,
        "last_send_at": _iso(datetime.fromtimestamp(last, tz=UTC)) if last is not None else None,
        "duration_s": duration_s,
        "mean_per_s": round(count / duration_s, 2) if count else 0.0,
        "busiest_second": busiest[1] if busiest else 0,
        "busiest_second_at": _iso(datetime.fromtimestamp(busiest[0], tz=UTC)) if busiest else None,
        "throttle_events": sum(int(n) for _, n in throttles),
        "throttle_by_code": {str(code): int(n) for code, n in throttles},
    }


def _tier(conn: Connection, settings: Settings, campaign: Campaign, counts: dict[str, int]) -> dict[str, Any]:
    """The sender's tier: configured, else what the platform last said (sender row), else "auto"."""
    sender = settings.sender(campaign.sender_name)
    tier = sender.messaging_tier or settings.limits.messaging_tier
    source = "config"
    if tier == "auto":
        known = conn.execute(sa.select(SENDER.c.messaging_tier).where(SENDER.c.name == sender.name)).scalar()
        tier, source = (str(known), "platform") if known else ("auto", "unknown")
    try:
        limit = settings.limits.tier_limit(tier) if tier != "auto" else None
    except ConfigError:
        limit = None
    # every recipient the platform took (or may have taken) counts against the moving-window budget
    used = counts["accepted"] + counts["failed"] + counts["unknown"]
    return {"messaging_tier": tier, "source": source, "limit": limit, "recipients_counted": used}


def _frequency_cap(
    conn: Connection, settings: Settings, campaign: Campaign, skipped: dict[str, int], now: datetime
) -> dict[str, Any]:
    """The campaign's cap rule, its rows waiting for it now and those it skipped."""
    rule = rule_for(campaign, settings)
    return {
        "cap": rule.cap.text if rule else None,
        "policy": rule.policy if rule else None,
        "rule": describe_setting(rule),
        "waiting": waiting_for_cap(conn, int(campaign.id or 0), now=now),
        "skipped": skipped.get(CAPPED, 0),
    }


def _replies(conn: Connection, campaign_id: int) -> dict[str, int]:
    taps = sa.func.sum(sa.case((INBOUND.c.type.in_(["button", "interactive"]), 1), else_=0))
    optouts = sa.func.sum(sa.case((INBOUND.c.is_optout.is_(True), 1), else_=0))
    total, button_taps, opt_outs, repliers = conn.execute(
        sa.select(sa.func.count(), taps, optouts, sa.func.count(sa.distinct(INBOUND.c.phone))).where(
            INBOUND.c.campaign_id == campaign_id
        )
    ).one()
    return {
        "messages": int(total or 0),
        "replies": int((total or 0) - (button_taps or 0)),
        "button_taps": int(button_taps or 0),
        "opt_outs": int(opt_outs or 0),
        "repliers": int(repliers or 0),
    }


def calling_code(prefix: str) -> int | None:
    """The country calling code an E.164 number starting with `prefix` belongs to (+39… → 39)."""
    digits = prefix.lstrip("+")
    for length in (1, 2, 3):  # calling codes are prefix-free
        if digits[:length].isdigit() and int(digits[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return int(digits[:length])
    return None


def _cost(groups: list[_Group], campaign: Campaign, card: RateCard, *, category: str) -> dict[str, Any]:
    """Estimate (rate card x planned / accepted rows, at the template's current `category`) and actual
    (charged delivered rows, at the category each was billed as)."""
    category = category.lower()
    accepted_states = {s.value for s in FUNNEL["accepted"]}
    estimate: dict[int | None, list[int]] = {}
    actual: dict[tuple[str, int | None], int] = {}
    for group in groups:
        if group.state == S.SKIPPED:
            continue
        code = calling_code(group.prefix)
        entry = estimate.setdefault(code, [0, 0])
        entry[0] += group.count
        entry[1] += group.count if group.state in accepted_states else 0
        if group.billed is not None:
            actual[(group.billed, code)] = actual.get((group.billed, code), 0) + group.count
    by_country: list[dict[str, Any]] = [
        {
            "country_code": code,
            "planned": n[0],
            "accepted": n[1],
            "unit_price": card.price(category=category, country_code=code),
        }
        for code, n in sorted(estimate.items(), key=lambda item: -item[1][0])
    ]
    return {
        "currency": card.currency,
        "example_prices": card.example_values,
        "rate_card": card.source,
        "category": category,
        "estimate": {
            "planned": round(sum(c["planned"] * c["unit_price"] for c in by_country), 4),
            "accepted": round(sum(c["accepted"] * c["unit_price"] for c in by_country), 4),
            "by_country": by_country,
        },
        "actual": _actual_cost(actual, card),
    }


def _actual_cost(counts: dict[tuple[str, int | None], int], card: RateCard) -> dict[str, Any]:
    lines: list[dict[str, Any]] = []
    for (cat, code), n in sorted(counts.items(), key=lambda item: -item[1]):
        price = card.price(category=cat, country_code=code)
        lines.append(
            {
                "category": cat,
                "country_code": code,
                "messages": n,
                "unit_price": price,
                "total": round(n * price, 4),
            }
        )
    return {
        "billable_messages": sum(line["messages"] for line in lines),
        "total": round(sum(line["total"] for line in lines), 4),
        "by_category_country": lines,
    }


def _timeline(series: dict[str, dict[int, int]]) -> dict[str, Any]:
    """Sends, deliveries and reads over time, in buckets sized so no series exceeds MAX_POINTS."""
    seconds = [second for counts in series.values() for second in counts]
    if not seconds:
        return {"start": None, "bucket_s": 1, **{name: [] for name in series}}
    start, end = min(seconds), max(seconds)
    bucket_s = max(1, math.ceil((end - start + 1) / MAX_POINTS))
    timeline: dict[str, Any] = {
        "start": datetime.fromtimestamp(start, tz=UTC).isoformat(),
        "bucket_s": bucket_s,
    }
    for name, counts in series.items():
        buckets: dict[int, int] = {}
        for second, n in counts.items():
            offset = (second - start) // bucket_s * bucket_s
            buckets[offset] = buckets.get(offset, 0) + n
        timeline[name] = [[offset, n] for offset, n in sorted(buckets.items())]
    return timeline

"""Frequency caps: at most N templates of a category per contact in any rolling window, across campaigns.

A cap is written ``COUNT/WINDOW`` (``2/7d``, ``1/30d``, ``3/36h``; units ``m``, ``h``, ``d``) or
``none``. The configured caps are ``[limits] marketing_cap`` and ``[limits] utility_cap`` (both
``none`` by default); a campaign may carry its own (``campaigns create --cap 1/30d`` or ``--cap none``),
which replaces the configured one for its category. ``[limits] cap_policy`` (or ``--cap-policy``) says
what a recipient at the cap gets: ``wait`` (its row waits until the window frees it, as rows wait
for the tier budget) or ``skip`` (its row is skipped as ``capped``).

What counts, per contact: the ledger rows of every campaign of the same category whose sender
belongs to the same business portfolio, from the moment they are claimed (``claimed_at``), while
they are claimed, sending, accepted, held, sent, delivered, read or unknown (maybe sent: counted, so the
cap can only be kept too well). A row that failed, was skipped or went back unsent does not count;
test sends (`campaigns test`) are recorded apart and never count.

The check is made where rows are claimed (`scheduler.sending.caps`), in the claim's write
transaction under the portfolio's lock, so workers on PostgreSQL and several `run-due` processes
never both spend a contact's last send. The platform's own per-user marketing limit (131049) feeds
the same wait: the contact's marketing is deferred (`campaigns.contacts.effects.defer_marketing`)
and its planned rows wait with ``next_attempt_at`` until the deferral ends, like a capped row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.frequency_cap import NO_CAP, Cap, CapPolicy, check_policy, parse_cap
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import DEDUP_BLOCKING_STATES, MessageState
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.settings import Settings

#: The skip reason of a row skipped at the cap (``--cap-policy skip``).
CAPPED = "capped"
#: How a row waiting for the cap is titled (``error_title``), so the plan and the report can count it.
WAIT_TITLE = "frequency cap"

#: States of a row that count for its contact's cap: those that block the same content again (it was
#: given, or may have been), but `planned` (not yet: claimed rows count, from their claim).
COUNTED = tuple(sorted(state.value for state in DEDUP_BLOCKING_STATES - {MessageState.PLANNED}))


class CappedCampaign(Protocol):
    """What a cap rule reads of a campaign (a `Campaign` row or a `campaigns.control.CampaignRef`)."""

    @property
    def category(self) -> str: ...
    @property
    def sender_name(self) -> str: ...
    @property
    def frequency_cap(self) -> str | None: ...
    @property
    def cap_policy(self) -> str | None: ...


@dataclass(frozen=True)
class CapRule:
    """The cap a campaign's recipients are held to, and the campaigns whose sends count for it."""

    cap: Cap
    policy: CapPolicy
    category: str
    portfolio: str
    #: The senders of the portfolio: campaigns sent by any of them count.
    senders: tuple[str, ...]

    def describe(self) -> str:
        action = "wait" if self.policy == "wait" else "are skipped as capped"
        return (
            f"frequency cap {self.cap.text} ({self.category.lower()} templates per contact, every campaign "
            f"of portfolio {self.portfolio}); recipients at the cap {action}"
        )


def rule_for(campaign: CappedCampaign, settings: Settings) -> CapRule | None:
    """The cap rule of a campaign: its own --cap or the configured cap of its category (None: no cap)."""
    spec = campaign.frequency_cap
    if spec is None:
        spec = _configured(settings, campaign.category)
    cap = parse_cap(spec)
    if cap is None:
        return None
    sender = settings.sender(campaign.sender_name)
    senders = tuple(s.name for s in settings.all_senders() if s.portfolio == sender.portfolio)
    policy = check_policy(campaign.cap_policy or settings.limits.cap_policy)
    return CapRule(cap, policy, campaign.category, sender.portfolio, senders)


def _configured(settings: Settings, category: str) -> str:
    limits = settings.limits
    if category == "MARKETING":
        return limits.marketing_cap
    if category == "UTILITY":
        return limits.utility_cap
    return NO_CAP


def checked_override(
    cap: str | None, policy: str | None, problems: list[str]
) -> tuple[str | None, str | None]:
    """A campaign's --cap and --cap-policy as stored (canonical), or the problem added to `problems`."""
    try:
        parsed = parse_cap(cap) if cap is not None else None
        stored_cap = None if cap is None else (parsed.text if parsed else NO_CAP)
        return stored_cap, None if policy is None else check_policy(policy)
    except ValueError as exc:
        problems.append(str(exc))
        return None, None


# ------------------------------------------------------------------------------------ counting
def _counted(rule: CapRule, now: datetime) -> tuple[Any, sa.Select[Any]]:
    """The counted sends of the contact of the outer ledger row (MESSAGE), and their claim time."""
    sent = MESSAGE.alias("cap_sent")
    of = CAMPAIGN.alias("cap_campaign")
    at = sa.func.coalesce(sent.c.claimed_at, sent.c.accepted_at)
    query = (
        sa.select(sent.c.id)
        .select_from(sent.join(of, of.c.id == sent.c.campaign_id))
        .where(sent.c.contact_id == MESSAGE.c.contact_id, sent.c.state.in_(COUNTED))
        .where(at > now - rule.cap.window)
        .where(of.c.category == rule.category, of.c.sender_name.in_(rule.senders))
    )
    return at, query


def at_cap(rule: CapRule, now: datetime) -> sa.ColumnElement[bool]:
    """Ledger rows (MESSAGE) whose contact has had the cap's count of sends in the window ending now."""
    _, query = _counted(rule, now)
    count = query.with_only_columns(sa.func.count()).scalar_subquery()
    return count >= rule.cap.count


def oldest_counted(rule: CapRule, now: datetime) -> sa.ScalarSelect[Any]:
    """The claim time of the oldest counted send of the row's contact in the window (frees it + window)."""
    at, query = _counted(rule, now)
    oldest: sa.ScalarSelect[Any] = query.with_only_columns(
        sa.type_coerce(sa.func.min(at), UTCDateTime())
    ).scalar_subquery()
    return oldest


@dataclass(frozen=True)
class CapPreview:
    """How many planned rows of a campaign are at the cap now, and when the first of them frees."""

    rule: CapRule
    at_cap: int
    first_free_at: datetime | None

    def describe(self) -> str:
        if not self.at_cap:
            return f"{self.rule.describe()}: nobody is at the cap now"
        if self.rule.policy == "skip":
            return f"{self.rule.describe()}: {self.at_cap} at the cap now (skipped when reached)"
        when = f" (the first frees at {self.first_free_at:%Y-%m-%d %H:%M} UTC)" if self.first_free_at else ""
        return f"{self.rule.describe()}: {self.at_cap} at the cap now wait{when}"


def preview(conn: sa.Connection, rule: CapRule, *, campaign_id: int, now: datetime) -> CapPreview:
    """The campaign's planned rows at the cap now (one index lookup per planned row)."""
    oldest = oldest_counted(rule, now)
    query = sa.select(sa.func.count(), sa.type_coerce(sa.func.min(oldest), UTCDateTime())).where(
        MESSAGE.c.campaign_id == campaign_id,
        MESSAGE.c.state == MessageState.PLANNED.value,
        at_cap(rule, now),
    )
    count, first = conn.execute(query).one()
    return CapPreview(rule, int(count or 0), None if first is None else first + rule.cap.window)


def describe_setting(rule: CapRule | None) -> str:
    """What `campaigns show` says of the campaign's cap."""
    return "none" if rule is None else rule.describe()


def waiting_for_cap(conn: sa.Connection, campaign_id: int, *, now: datetime) -> int:
    """Planned rows of a campaign held back by the cap right now."""
    query = sa.select(sa.func.count()).where(
        MESSAGE.c.campaign_id == campaign_id,
        MESSAGE.c.state == MessageState.PLANNED.value,
        MESSAGE.c.next_attempt_at > now,
        MESSAGE.c.error_title.startswith(WAIT_TITLE),
    )
    return int(conn.scalar(query) or 0)

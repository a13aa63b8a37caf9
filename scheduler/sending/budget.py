"""The messaging-tier budget: unique recipients per moving window for a business portfolio.

The platform lets a portfolio reach at most its tier's number of unique users with business-initiated
templates in a moving 24 h, across all its numbers and campaigns, and says nothing when the budget
is spent. So the engine keeps its own count in `TierUsage` (portfolio, phone, counted_at):

- a recipient is counted when its row is *claimed* (before the request: the count can only be too
  high, never too low, so the tier is never exceeded); a claimed row that goes back unsent (released,
  or its holder's lease expired) gives that count back;
- a recipient already counted inside the window costs nothing again;
- a recipient whose customer-service window is open (`Contact.service_window_until` in the future)
  does not count at all.

When the budget is spent, claiming stops, the remaining rows stay `planned`, and the campaign waits
until the oldest count leaves the window (`capacity_frees_at`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from campaigns.core.dbtypes import UTCDateTime, utcnow
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import TIER_USAGE_TABLE as TIER_USAGE
from campaigns.core.settings import Settings
from campaigns.core.settings_sections import SenderSettings
from scheduler.providers.base import Provider
from scheduler.sending import ledger
from scheduler.sending.leases import lock_portfolio
from scheduler.sending.ledger import ClaimedRow

log = logging.getLogger(__name__)

t = TIER_USAGE.c

#: The tier assumed when "auto" cannot read it from the platform: the smallest current one.
FALLBACK_TIER = "TIER_250"

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class TierChoice:
    """The tier a run uses, its limit (None = unlimited) and where it came from, for the output."""

    name: str
    limit: int | None
    source: str


class TierBudget:
    """The unique-recipient budget of one portfolio over a moving window (see the module docstring)."""

    def __init__(self, *, portfolio: str, limit: int | None, window_s: float, clock: Clock = utcnow) -> None:
        self.portfolio = portfolio
        self.limit = limit
        self.window = timedelta(seconds=window_s)
        self.clock = clock

    @property
    def unlimited(self) -> bool:
        return self.limit is None

    def _window_start(self, now: datetime) -> datetime:
        return now - self.window

    def used(self, conn: Connection, now: datetime) -> int:
        """Unique recipients counted in the window that ends at `now`."""
        query = sa.select(sa.func.count()).where(
            t.portfolio == self.portfolio, t.counted_at > self._window_start(now)
        )
        return int(conn.scalar(query) or 0)

    def remaining(self, conn: Connection, now: datetime) -> int | None:
        """Recipients that may still be counted now (None = unlimited)."""
        if self.limit is None:
            return None
        return max(0, self.limit - self.used(conn, now))

    def free_filter(self, now: datetime) -> sa.ColumnElement[bool]:
        """Ledger rows whose recipient costs nothing now: counted in the window, or window open."""
        counted = sa.select(t.phone).where(
            t.portfolio == self.portfolio, t.counted_at > self._window_start(now)
        )
        in_service_window = (
            sa.select(CONTACT.c.id)
            .where(CONTACT.c.id == ledger.m.contact_id, CONTACT.c.service_window_until > now)
            .exists()
        )
        return sa.or_(ledger.m.phone.in_(counted), in_service_window)

    def count(self, conn: Connection, rows: Sequence[ClaimedRow], now: datetime) -> None:
        """Count the recipients of claimed rows (those in an open service window excepted)."""
        if self.limit is None or not rows:
            return
        exempt = set(
            conn.scalars(
                sa.select(CONTACT.c.id).where(
                    CONTACT.c.id.in_([row.contact_id for row in rows]), CONTACT.c.service_window_until > now
                )
            )
        )
        phones = sorted({row.phone for row in rows if row.contact_id not in exempt})
        if phones:
            conn.execute(self._upsert(conn, phones, now))

    def _upsert(self, conn: Connection, phones: list[str], now: datetime) -> Any:
        insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        values = [{"portfolio": self.portfolio, "phone": phone, "counted_at": now} for phone in phones]
        statement = insert(TIER_USAGE).values(values)
        # Counted inside the window: leave it (it costs nothing). Counted before: count it afresh.
        return statement.on_conflict_do_update(
            index_elements=[t.portfolio, t.phone],
            set_={"counted_at": statement.excluded.counted_at},
            where=t.counted_at <= self._window_start(now),
        )

    def capacity_frees_at(self, conn: Connection, now: datetime) -> datetime | None:
        """When the oldest count in the window leaves it (None when nothing is counted)."""
        oldest = conn.scalar(
            sa.select(sa.type_coerce(sa.func.min(t.counted_at), UTCDateTime())).where(
                t.portfolio == self.portfolio, t.counted_at > self._window_start(now)
            )
        )
        return None if oldest is None else oldest + self.window


_UNCOUNT = sa.delete(TIER_USAGE).where(
    t.portfolio == sa.bindparam("b_portfolio"),
    t.phone == sa.bindparam("b_phone"),
    t.counted_at == sa.bindparam("b_counted_at"),
)


def uncount(conn: Connection, refunds: Sequence[tuple[str, str, datetime]]) -> None:
    """Give back counts made by claims whose rows were released unsent: (portfolio, phone, counted_at).

    Only a count made by that very claim (same timestamp) is removed; one made earlier, by a row
    that was sent, stays.
    """
    if refunds:
        conn.execute(
            _UNCOUNT, [{"b_portfolio": p, "b_phone": phone, "b_counted_at": at} for p, phone, at in refunds]
        )


def claim_within_budget(
    conn: Connection,
    *,
    budget: TierBudget,
    campaign_id: int,
    owner: str,
    limit: int,
    now: datetime,
    lease_s: float,
    lease_from: datetime | None = None,
    gate: sa.ColumnElement[bool] | None = None,
    sending: bool = False,
) -> list[ClaimedRow]:
    """Claim up to `limit` rows without letting the claimed recipients exceed the budget.

    Runs inside the caller's write transaction, so the check and the count are one atomic step; a
    limited budget first takes its portfolio's lock (`scheduler.sending.leases.lock_portfolio`), so claims of
    one portfolio from several workers on PostgreSQL never both spend the same room.
    While the budget has room for the whole batch it is one plain claim; near the end it first claims
    rows whose recipients cost nothing, then at most `remaining` others. `gate` narrows every claim
    (the frequency cap's `scheduler.sending.caps.claimable`); the caller then holds the portfolio lock.
    With `sending` the claimed rows are marked `sending` in the same statement (`ledger.claim`).
    """
    common: dict[str, Any] = {
        "campaign_id": campaign_id,
        "owner": owner,
        "now": now,
        "lease_s": lease_s,
        "lease_from": lease_from,
        "sending": sending,
    }
    if not budget.unlimited:
        lock_portfolio(conn, budget.portfolio)  # check-and-count one claim at a time per portfolio
    remaining = budget.remaining(conn, now)
    if remaining is None or remaining >= limit:
        rows = ledger.claim(conn, limit=limit, only=gate, **common)
    else:
        free = budget.free_filter(now) if gate is None else sa.and_(budget.free_filter(now), gate)
        rows = ledger.claim(conn, limit=limit, only=free, **common)
        rows += ledger.claim(conn, limit=min(remaining, limit - len(rows)), only=gate, **common)
    budget.count(conn, rows, now)
    return rows


async def resolve_tier(
    *, settings: Settings, sender: SenderSettings, provider: Provider | None
) -> TierChoice:
    """The tier of a run: the sender's or the configured one; with "auto", what the platform says.

    A tier that cannot be read falls back to TIER_250, and `source` says so.
    """
    configured = sender.messaging_tier or settings.limits.messaging_tier
    if configured != "auto":
        return TierChoice(configured, settings.limits.tier_limit(configured), "config")
    reason = "no provider"
    if provider is not None:
        try:
            limits = await provider.read_limits()
        except Exception as exc:  # any failure to read it means: be careful
            reason = f"{type(exc).__name__}: {exc}"
        else:
            tier = _known_tier(settings, limits.messaging_tier)
            if tier is not None:
                return TierChoice(tier, settings.limits.tier_limit(tier), "platform")
            reason = f"the platform said {limits.messaging_tier!r}"
    limit = settings.limits.tier_limit(FALLBACK_TIER)
    return TierChoice(FALLBACK_TIER, limit, f"fallback: messaging tier unreadable ({reason})")


def _known_tier(settings: Settings, value: str | None) -> str | None:
    if not value:
        return None
    if settings.limits.knows_tier(value):
        return value
    return None

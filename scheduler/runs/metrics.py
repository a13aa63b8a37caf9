"""Prometheus metrics of one `wacamp worker`, in a registry of its own (never the global one).

Read at scrape time from the database (ledger of active campaigns, throttle events, tier usage,
webhook inbox) and from the worker's runner (each sender's limiter and achieved rate):

- ``wacamp_messages{campaign,sender,state}``        ledger rows of active campaigns, by state
- ``wacamp_sends_total{sender,outcome}``            what this worker sent (accepted/failed/unknown)
- ``wacamp_sender_rate_per_s{sender}``              achieved request rate over the last seconds
- ``wacamp_sender_limit_per_s{sender}``             the limiter's current rate (lower after a throttle)
- ``wacamp_throttle_events_total{sender}``          throttle answers recorded (130429, 80007, 4, 429)
- ``wacamp_tier_budget_limit{portfolio}`` / ``wacamp_tier_budget_remaining{portfolio}``
- ``wacamp_webhook_lag_seconds``                    age of the oldest unprocessed webhook_inbox row
- ``wacamp_campaign_passes_total{outcome}``, ``wacamp_worker_last_poll_timestamp_seconds``
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine

from campaigns.core.dbtypes import UTCDateTime, utcnow
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import THROTTLE_EVENT_TABLE as THROTTLE
from campaigns.core.models import WEBHOOK_INBOX_TABLE as INBOX
from campaigns.core.models import CampaignState
from campaigns.core.settings import Settings
from campaigns.core.settings_sections import TIER_UNLIMITED, SenderSettings
from scheduler.runs.dispatch_runner import DispatcherRunner
from scheduler.runs.due import DueSummary
from scheduler.sending.budget import FALLBACK_TIER, TierBudget

log = logging.getLogger(__name__)


ACTIVE_STATES = (CampaignState.PLANNED, CampaignState.RUNNING, CampaignState.WAITING, CampaignState.PAUSED)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LedgerCollector(Collector):
    """Reads the database and the runner at each scrape."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        runner: DispatcherRunner | None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.runner = runner
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        """Every database-backed metric (nothing when the database cannot be read: logged)."""
        yield from self._sender_metrics()
        try:
            with self.engine.connect() as conn:
                yield self._messages(conn)
                yield self._throttles(conn)
                yield from self._tier_budgets(conn)
                yield self._webhook_lag(conn)
        except sa.exc.SQLAlchemyError:
            log.exception("metrics: the database could not be read")

    def _messages(self, conn: Connection) -> Metric:
        family = GaugeMetricFamily(
            "wacamp_messages",
            "Ledger rows of active campaigns by state",
            labels=["campaign", "sender", "state"],
        )
        active = sa.select(CAMPAIGN.c.id, CAMPAIGN.c.name, CAMPAIGN.c.sender_name).where(
            CAMPAIGN.c.state.in_([s.value for s in ACTIVE_STATES])
        )
        labels = {row.id: (row.name, row.sender_name) for row in conn.execute(active)}
        if not labels:
            return family
        # Counted in (campaign_id, state) order straight off the covering ix_message_claim index: no
        # temporary B-tree as grouping by the joined names needs (7 x faster at 1M rows; issue #17).
        query = (
            sa.select(MESSAGE.c.campaign_id, MESSAGE.c.state, sa.func.count())
            .where(MESSAGE.c.campaign_id.in_(list(labels)))
            .group_by(MESSAGE.c.campaign_id, MESSAGE.c.state)
        )
        for campaign_id, state, count in conn.execute(query):
            family.add_metric([*labels[campaign_id], state], count)
        return family

    def _throttles(self, conn: Connection) -> Metric:
        family = CounterMetricFamily(
            "wacamp_throttle_events", "Throttle answers from the platform per sender", labels=["sender"]
        )
        query = sa.select(THROTTLE.c.sender_name, sa.func.count()).group_by(THROTTLE.c.sender_name)
        counts: dict[str, int] = {str(name): int(n) for name, n in conn.execute(query)}
        for sender in self.settings.all_senders():
            family.add_metric([sender.name], counts.get(sender.name, 0))
        return family

    def _tier_budgets(self, conn: Connection) -> Iterator[Metric]:
        limit_family = GaugeMetricFamily(
            "wacamp_tier_budget_limit", "Unique recipients per moving window", labels=["portfolio"]
        )
        left_family = GaugeMetricFamily(
            "wacamp_tier_budget_remaining",
            "Unique recipients that may still be reached now",
            labels=["portfolio"],
        )
        now = self.clock()
        for portfolio, sender in _one_sender_per_portfolio(self.settings.all_senders()).items():
            limit = self._tier_limit(sender)
            if limit is None:
                continue
            budget = TierBudget(
                portfolio=portfolio,
                limit=limit,
                window_s=self.settings.limits.tier_window_h * 3600,
                clock=self.clock,
            )
            limit_family.add_metric([portfolio], limit)
            left_family.add_metric([portfolio], budget.remaining(conn, now) or 0)
        yield limit_family
        yield left_family

    def _tier_limit(self, sender: SenderSettings) -> int | None:
        """The configured tier; with "auto", what the last run read from the platform (else TIER_250)."""
        tier = sender.messaging_tier or self.settings.limits.messaging_tier
        if tier == "auto":
            tier = self._last_read_tier(sender) or FALLBACK_TIER
        return None if tier == TIER_UNLIMITED else self.settings.limits.tier_limit(tier)

    def _last_read_tier(self, sender: SenderSettings) -> str | None:
        choice = None if self.runner is None else self.runner.tiers.get(sender.name)
        return None if choice is None else choice.name

    def _webhook_lag(self, conn: Connection) -> Metric:
        oldest = conn.scalar(
            sa.select(sa.type_coerce(sa.func.min(INBOX.c.received_at), UTCDateTime())).where(
                INBOX.c.processed_at.is_(None)
            )
        )
        lag_s = 0.0 if oldest is None else max(0.0, (self.clock() - oldest).total_seconds())
        return GaugeMetricFamily(
            "wacamp_webhook_lag_seconds", "Age of the oldest unprocessed webhook inbox row", value=lag_s
        )

    def _sender_metrics(self) -> Iterator[Metric]:
        rate = GaugeMetricFamily("wacamp_sender_rate_per_s", "Achieved request rate", labels=["sender"])
        limit = GaugeMetricFamily("wacamp_sender_limit_per_s", "Current limiter rate", labels=["sender"])
        for sender in self.settings.all_senders():
            dispatcher = None if self.runner is None else self.runner.current.get(sender.name)
            pace = None if self.runner is None else self.runner.paces.get(sender.name)
            rate.add_metric([sender.name], 0.0 if dispatcher is None else dispatcher.progress().rate_per_s)
            current = pace.rate_per_s if pace is not None else self.settings.sender_rate_per_s(sender)
            limit.add_metric([sender.name], current)
        yield rate
        yield limit


def _one_sender_per_portfolio(senders: list[SenderSettings]) -> dict[str, SenderSettings]:
    chosen: dict[str, SenderSettings] = {}
    for sender in senders:
        chosen.setdefault(sender.portfolio, sender)
    return chosen


class WorkerMetrics:
    """The worker's registry: database-backed metrics plus what this worker did."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        runner: DispatcherRunner | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(LedgerCollector(engine, settings, runner=runner, clock=clock))
        self.sends = Counter(
            "wacamp_sends", "Rows this worker sent, by outcome", ["sender", "outcome"], registry=self.registry
        )
        self.passes = Counter(
            "wacamp_campaign_passes", "Campaign passes this worker ran", ["outcome"], registry=self.registry
        )
        self.last_poll = Gauge(
            "wacamp_worker_last_poll_timestamp_seconds",
            "When the worker last looked for due work",
            registry=self.registry,
        )
        self.runner = runner

    def record(self, summary: DueSummary, *, at: datetime) -> None:
        """Count one `run_due` round."""
        self.last_poll.set(at.timestamp())
        for result in summary.passes:
            self.passes.labels(result.outcome).inc()
            for outcome in ("accepted", "failed", "unknown"):
                self.sends.labels(result.sender or "unknown", outcome).inc(getattr(result, outcome))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

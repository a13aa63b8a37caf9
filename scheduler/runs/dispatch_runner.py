"""The `scheduler.runs.due.Runner` that `run-due` and `worker` use: one dispatcher pass per campaign.

It keeps, for the life of the process, one provider (one HTTP session) and one pace (one rate
limiter) per sender, so each sender has its own limiter whatever campaigns it sends; the tier
budget needs nothing here: it is counted in the database per portfolio, so the senders of one
portfolio share it. A pass ends at its deadline by setting the dispatcher's stop event (the
dispatcher then leaves the campaign `waiting`, resumable, as after a signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine

from campaigns import control
from campaigns.core.dbtypes import utcnow
from campaigns.core.settings import Settings
from campaigns.core.settings_sections import SenderSettings
from scheduler.providers.base import Provider
from scheduler.runs.due import PassOutcome
from scheduler.sending.budget import TierChoice
from scheduler.sending.dispatch import Dispatcher
from scheduler.sending.pace import SenderPace, make_pace
from scheduler.sending.run_report import Progress, RunReport, StopReason

log = logging.getLogger(__name__)

ProviderFactory = Callable[[SenderSettings], Provider]

#: Reasons that count as this campaign failing in a `run-due` (exit 1 for monitoring).
ERROR_REASONS = frozenset({StopReason.CAMPAIGN_FATAL, StopReason.SENDER_FATAL, StopReason.ERROR})


class DispatcherRunner:
    """Runs dispatcher passes; one provider and one limiter per sender, shared by every pass."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        provider_for: ProviderFactory,
        now: Callable[[], datetime] = utcnow,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.provider_for = provider_for
        self.now = now
        self.on_progress = on_progress
        self.providers: dict[str, Provider] = {}
        self.paces: dict[str, SenderPace] = {}
        #: The dispatcher of the pass in progress, per sender (for /metrics).
        self.current: dict[str, Dispatcher] = {}
        self.reports: list[RunReport] = []
        #: The tier each sender's last pass used (read from the platform with "auto").
        self.tiers: dict[str, TierChoice] = {}

    def pace(self, sender: SenderSettings) -> SenderPace:
        """The one limiter of a sender in this process."""
        if sender.name not in self.paces:
            self.paces[sender.name] = make_pace(self.settings, sender)
        return self.paces[sender.name]

    def provider(self, sender: SenderSettings) -> Provider:
        """The one provider (HTTP session) of a sender in this process."""
        if sender.name not in self.providers:
            self.providers[sender.name] = self.provider_for(sender)
        return self.providers[sender.name]

    async def __call__(
        self, campaign_id: int, *, stop_event: asyncio.Event, deadline: datetime | None
    ) -> PassOutcome:
        """One dispatcher pass over a campaign, stopped by `stop_event` or at `deadline`."""
        with self.engine.connect() as conn:
            ref = control.reload(conn, campaign_id)
        sender = self.settings.sender(ref.sender_name)
        pass_stop = asyncio.Event()
        watcher = asyncio.create_task(self._stop_at(pass_stop, stop_event, deadline), name="pass-deadline")
        dispatcher = Dispatcher(
            engine=self.engine,
            settings=self.settings,
            campaign=ref,
            provider=self.provider(sender),
            stop=pass_stop,
            pace=self.pace(sender),
            on_progress=self.on_progress,
            now=self.now,
        )
        self.current[sender.name] = dispatcher
        try:
            report = await dispatcher.run()
        finally:
            self.current.pop(sender.name, None)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self.reports.append(report)
        if report.tier is not None:
            self.tiers[sender.name] = report.tier
        outcome = _outcome(report, by_deadline=pass_stop.is_set() and not stop_event.is_set())
        return dataclasses.replace(outcome, sender=sender.name)

    async def _stop_at(
        self, pass_stop: asyncio.Event, stop_event: asyncio.Event, deadline: datetime | None
    ) -> None:
        timeout_s = None if deadline is None else max(0.0, (deadline - self.now()).total_seconds())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), timeout_s)
        pass_stop.set()

    async def close(self) -> None:
        """Close every provider's HTTP session."""
        for provider in self.providers.values():
            await provider.close()
        self.providers.clear()


def _outcome(report: RunReport, *, by_deadline: bool) -> PassOutcome:
    outcome = report.reason.name.lower()
    if by_deadline and report.reason is StopReason.SIGNAL:
        outcome = "deadline"
    return PassOutcome(
        outcome,
        accepted=report.accepted,
        failed=report.failed,
        unknown=report.unknown,
        message=report.message,
        error=report.reason in ERROR_REASONS,
    )

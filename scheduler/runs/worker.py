"""`wacamp worker`: the long-running alternative to cron.

Every ``poll_s`` it gives every due campaign its passes (`scheduler.runs.due.run_due`, the same logic as
`run-due`), and serves ``/healthz`` and ``/metrics`` (Prometheus text) on its own port. SIGTERM sets
the stop event: no new claims, in-flight requests finish, results are written, campaigns are left
resumable, the HTTP server closes, the process exits 0.

The caller holds the send lock (`scheduler.sending.locks.exclusive_lock`) for the worker's whole life, so a
worker and a cron `run-due` never send from one database at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import DatabaseUnavailableError
from campaigns.rollout.review import Reviewer
from scheduler.runs.due import DueSummary, LaneOf, PassGate, Runner, by_sender, run_due
from scheduler.runs.metrics import CONTENT_TYPE, WorkerMetrics
from scheduler.runs.pass_rules import Planner
from scheduler.sending.outage import DatabaseWait

log = logging.getLogger(__name__)


class Worker:
    """Polls for due campaigns and runs them until its stop event is set."""

    def __init__(
        self,
        engine: Engine,
        *,
        runner: Runner,
        poll_s: float,
        metrics: WorkerMetrics | None = None,
        planner: Planner | None = None,
        clock: Callable[[], datetime] = utcnow,
        lane_of: LaneOf = by_sender,
        gate: PassGate | None = None,
        reviewer: Reviewer | None = None,
        outage_wait_s: float = 300.0,
    ) -> None:
        self.engine = engine
        self.runner = runner
        self.poll_s = poll_s
        self.metrics = metrics
        self.planner = planner
        self.clock = clock
        self.lane_of = lane_of
        #: Scale-out: the sender leases that let several workers share one PostgreSQL.
        self.gate = gate
        #: Staged rollouts: judges a stage whose review is due before its campaign's pass.
        self.reviewer = reviewer
        self.rounds = 0
        self.last_poll: datetime | None = None
        self.running = False
        self._stop: asyncio.Event | None = None
        #: Database trouble between passes is waited out too; a stop request gives up at once.
        self.db_wait = DatabaseWait(
            outage_wait_s=outage_wait_s, give_up_early=lambda: self._stop is not None and self._stop.is_set()
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and send until `stop` is set; returns once in-flight work is written."""
        self.running = True
        self._stop = stop
        log.info("worker started", extra={"poll_s": self.poll_s})
        try:
            while not stop.is_set():
                summary = await self._round_waiting_out_database_trouble(stop)
                if summary is not None:
                    self._record(summary)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)
        finally:
            self.running = False
            log.info("worker stopped", extra={"rounds": self.rounds})

    async def _round_waiting_out_database_trouble(self, stop: asyncio.Event) -> DueSummary | None:
        """One round; database trouble between passes is waited out like inside them.

        After `outage_wait_s` the round is given up but the worker stays up and polls again (systemd
        does not restart a worker that exits 75): /healthz answers 503 while the database is away.
        A stop request during the wait ends the worker (75).
        """
        try:
            return await self.db_wait.run(lambda: self._round(stop), what="the worker's next round")
        except DatabaseUnavailableError as exc:
            if stop.is_set():
                raise
            log.error("%s; the worker keeps polling", exc)
            return None

    async def _round(self, stop: asyncio.Event) -> DueSummary:
        return await run_due(
            self.engine,
            runner=self.runner,
            stop_event=stop,
            clock=self.clock,
            planner=self.planner,
            lane_of=self.lane_of,
            gate=self.gate,
            reviewer=self.reviewer,
        )

    def _record(self, summary: DueSummary) -> None:
        self.rounds += 1
        self.last_poll = self.clock()
        if self.metrics is not None:
            self.metrics.record(summary, at=self.last_poll)
        if summary.passes:
            data = summary.as_dict()
            log.info(
                "worker round: %s campaign(s), %s accepted, %s failed",
                data["campaigns"],
                data["accepted"],
                data["failed"],
                extra={key: value for key, value in data.items() if key != "runs"},
            )

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy when the loop runs and the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            database = "ok"
        except sa.exc.SQLAlchemyError as exc:
            database = f"error: {type(exc).__name__}"
        age_s = None if self.last_poll is None else round((self.clock() - self.last_poll).total_seconds(), 3)
        healthy = self.running and database == "ok"
        return healthy, {
            "status": "ok" if healthy else "unhealthy",
            "running": self.running,
            "database": database,
            "rounds": self.rounds,
            "last_poll_age_s": age_s,
        }


def build_app(worker: Worker, metrics: WorkerMetrics) -> web.Application:
    """The worker's HTTP endpoints: GET /healthz (200/503 JSON) and GET /metrics (Prometheus text)."""

    async def healthz(_request: web.Request) -> web.Response:
        healthy, data = await asyncio.to_thread(worker.health)
        return web.Response(
            status=200 if healthy else 503, text=json.dumps(data), content_type="application/json"
        )

    async def metrics_view(_request: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    return app


@asynccontextmanager
async def serving(app: web.Application, *, host: str, port: int) -> AsyncIterator[str]:
    """Serve `app` on host:port (0 = a free port) for the block; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()

"""Webhooks the sandbox sends: status plans per accepted message, and the signed, batching, retrying emitter.

`plan_statuses` decides (with a seeded RNG) which statuses an accepted message gets and when, including
the platform's awkward habits: a `delivered` sent twice, `read` before `delivered`, `delivered` skipped.
`WebhookEmitter` gathers due statuses into POSTs of up to `batch_max`, signs each body
(`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the exact bytes>`) and retries failed POSTs with
doubling backoff for at most `retry_for_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from sandbox.config import SandboxConfig, WebhookTiming
from sandbox.errors import status_error
from sandbox.state import WebhookCounts

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"


def sign(body: bytes, app_secret: str) -> str:
    """The `X-Hub-Signature-256` header value for a raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class PlannedStatus:
    """One status object and when (seconds after acceptance) it is handed to the emitter."""

    emit_after_s: float
    status: dict[str, Any]


@dataclass(frozen=True)
class AcceptedMessage:
    """What a status plan needs to know about an accepted message."""

    wamid: str
    wa_id: str
    callback_data: str | None
    #: Template category (MARKETING, UTILITY, ...) or None for a non-template (service) message.
    category: str | None
    accepted_wall_s: float
    failure: tuple[int, str] | None = None


def _pricing(category: str | None) -> dict[str, Any]:
    if category is None:
        return {
            "billable": False,
            "pricing_model": "PMP",
            "type": "free_customer_service",
            "category": "service",
        }
    return {"billable": True, "pricing_model": "PMP", "type": "regular", "category": category.lower()}


def _status(message: AcceptedMessage, status: str, event_after_s: float) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": message.wamid,
        "status": status,
        "timestamp": str(int(message.accepted_wall_s + event_after_s)),
        "recipient_id": message.wa_id,
    }
    if message.callback_data is not None:
        body["biz_opaque_callback_data"] = message.callback_data
    if status == "failed" and message.failure is not None:
        body["errors"] = [status_error(*message.failure)]
    else:
        body["pricing"] = _pricing(message.category)
    return body


def _between(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds)


def plan_statuses(
    message: AcceptedMessage, *, timing: WebhookTiming, rng: random.Random, counts: WebhookCounts
) -> list[PlannedStatus]:
    """The statuses one accepted message will get, in emission order, with the anomalies drawn by `rng`."""
    sent_s = _between(rng, timing.sent_delay_s)
    if message.failure is not None:
        counts.final_planned["failed"] += 1
        return [PlannedStatus(sent_s, _status(message, "failed", sent_s))]
    plan = [PlannedStatus(sent_s, _status(message, "sent", sent_s))]
    if rng.random() >= timing.delivered_share:
        counts.final_planned["sent"] += 1
        return plan
    delivered_s = sent_s + _between(rng, timing.delivered_delay_s)
    delivered = _status(message, "delivered", delivered_s)
    if rng.random() >= timing.read_share:
        counts.final_planned["delivered"] += 1
        return [*plan, *_delivered_maybe_twice(delivered, delivered_s, rng=rng, timing=timing, counts=counts)]
    counts.final_planned["read"] += 1
    read_s = delivered_s + _between(rng, timing.read_delay_s)
    read = PlannedStatus(read_s, _status(message, "read", read_s))
    anomaly = rng.random()
    if anomaly < timing.skip_delivered_share:
        counts.skipped_delivered_planned += 1
        return [*plan, read]
    if anomaly < timing.skip_delivered_share + timing.out_of_order_share:
        counts.out_of_order_planned += 1
        # The delivered status is held back until after the read: it arrives late, as platform retries do.
        return [*plan, read, PlannedStatus(read_s + timing.out_of_order_gap_s, delivered)]
    twice = _delivered_maybe_twice(delivered, delivered_s, rng=rng, timing=timing, counts=counts)
    return [*plan, *twice, read]


def _delivered_maybe_twice(
    delivered: dict[str, Any],
    at_s: float,
    *,
    rng: random.Random,
    timing: WebhookTiming,
    counts: WebhookCounts,
) -> list[PlannedStatus]:
    first = PlannedStatus(at_s, delivered)
    if rng.random() >= timing.duplicate_share:
        return [first]
    counts.duplicates_planned += 1
    return [first, PlannedStatus(at_s + rng.uniform(0.1, 1.0), dict(delivered))]


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    field: str = dataclasses.field(compare=False)
    value: dict[str, Any] = dataclasses.field(compare=False)
    phone_number_id: str = dataclasses.field(compare=False, default="")


@dataclass(frozen=True)
class _Post:
    body: bytes
    statuses: list[dict[str, Any]]
    field: str
    items: int


class WebhookEmitter:
    """Sends webhooks to one URL: batched, signed, retried with backoff for a bounded time."""

    def __init__(
        self,
        *,
        url: str,
        config: SandboxConfig,
        counts: WebhookCounts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.config = config
        self.timing = config.webhook
        self.counts = counts
        self.clock = clock
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.timing.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session and start the emitting task."""
        timeout = aiohttp.ClientTimeout(total=self.timing.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=self.timing.max_in_flight)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        self._runner = asyncio.create_task(self._run(), name="sandbox-webhook-emitter")

    async def close(self) -> None:
        """Stop emitting (what is still pending is dropped) and close the session."""
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    async def drained(self, *, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is pending (planned or in flight); False if `timeout_s` passed first."""
        deadline = self.clock() + timeout_s
        while self.counts.pending > 0:
            if self.clock() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def schedule(self, *, field: str, value: dict[str, Any], at: float, phone_number_id: str = "") -> None:
        """Emit one change (a status object when field is "statuses") at monotonic time `at`."""
        heapq.heappush(self._heap, _Due(at, next(self._seq), field, value, phone_number_id))
        self.counts.pending += 1
        self._wake.set()

    def schedule_statuses(self, plan: list[PlannedStatus], *, now: float, phone_number_id: str) -> None:
        """Schedule a message's planned statuses relative to its acceptance at monotonic time `now`."""
        for planned in plan:
            self.schedule(
                field="statuses",
                value=planned.status,
                at=now + planned.emit_after_s,
                phone_number_id=phone_number_id,
            )

    async def _run(self) -> None:
        while True:
            await self._wait_for_due()
            for post in self._posts(self._take_due()):
                await self._slots.acquire()
                task = asyncio.create_task(self._deliver(post), name="sandbox-webhook-post")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _wait_for_due(self) -> None:
        while True:
            self._wake.clear()
            if self._heap:
                wait_s = self._heap[0].at - self.clock()
                if wait_s <= 0:
                    return
            else:
                wait_s = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)

    def _take_due(self) -> list[_Due]:
        horizon = self.clock() + self.timing.batch_wait_s
        due: list[_Due] = []
        while self._heap and self._heap[0].at <= horizon:
            due.append(heapq.heappop(self._heap))
        return due

    def _posts(self, due: list[_Due]) -> list[_Post]:
        posts: list[_Post] = []
        by_phone: dict[str, list[dict[str, Any]]] = {}
        for item in due:
            if item.field == "statuses":
                by_phone.setdefault(item.phone_number_id, []).append(item.value)
            else:
                posts.append(self._post(item.field, item.value, statuses=[]))
        size = self.timing.batch_max
        for phone_number_id, statuses in by_phone.items():
            for start in range(0, len(statuses), size):
                chunk = statuses[start : start + size]
                value = {**self._value_head(phone_number_id), "statuses": chunk}
                posts.append(self._post("messages", value, statuses=chunk))
        return posts

    def _value_head(self, phone_number_id: str) -> dict[str, Any]:
        return {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.config.display_phone_number,
                "phone_number_id": phone_number_id or self.config.phone_number_id,
            },
        }

    def _post(self, field: str, value: dict[str, Any], *, statuses: list[dict[str, Any]]) -> _Post:
        payload = {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.config.waba_id, "changes": [{"field": field, "value": value}]}],
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        return _Post(body=body, statuses=statuses, field=field, items=max(1, len(statuses)))

    async def _deliver(self, post: _Post) -> None:
        deadline = self.clock() + self.timing.retry_for_s
        try:
            for attempt in itertools.count():
                if await self._attempt(post.body):
                    self._count_delivered(post)
                    return
                self.counts.post_attempts_failed += 1
                delay_s = min(self.timing.retry_base_s * 2**attempt, self.timing.retry_max_s)
                if self.clock() + delay_s > deadline:
                    self.counts.posts_given_up += 1
                    self.counts.statuses_given_up += len(post.statuses)
                    return
                await asyncio.sleep(delay_s)
        finally:
            self.counts.pending -= post.items
            self._slots.release()

    async def _attempt(self, body: bytes) -> bool:
        assert self._session is not None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self.config.app_secret)}
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("webhook POST to %s failed: %s", self.url, exc)
            return False

    def _count_delivered(self, post: _Post) -> None:
        self.counts.posts_ok += 1
        self.counts.changes_by_field[post.field] += 1
        for status in post.statuses:
            self.counts.statuses[status["status"]] += 1
            for error in status.get("errors", []):
                self.counts.failed_by_code[error["code"]] += 1

"""Inbox rows applied to the ledger and the control tables, in batches, idempotently.

One batch = one write transaction: claim pending inbox rows, apply their events, mark them processed.
A crash anywhere before the commit leaves the rows pending and changes nothing; processing a row
twice changes nothing the second time, because every statement only moves things forward:

- a status moves a ledger row up the funnel (sending/unknown/accepted → sent → delivered → read) and
  never down; `read` implies `delivered`; timestamps are filled when missing (an event's own time wins
  over one implied by a later event); `failed` is terminal and only reached from a live row, so a
  duplicate `failed` finds nothing to change and its side effects (131049 deferral, 131050
  suppression) run once;
- inbound messages are keyed by their wamid (insert-or-ignore), service windows only grow;
- suppressions keep the first time and reason; template and sender updates are plain overwrites of
  the same values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from campaigns import control, outcomes
from campaigns.contacts import effects
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import UTCDateTime, utcnow
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_TABLE as C
from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import MESSAGE_TABLE as M
from campaigns.core.models import SENDER_TABLE as SENDER
from campaigns.core.models import TEMPLATE_TABLE as TEMPLATE
from campaigns.core.models import WEBHOOK_INBOX_TABLE as INBOX
from campaigns.core.models import (
    CampaignState,
    MessageState,
)
from campaigns.core.settings import Settings
from scheduler.webhooks.by_recipient import tie_by_recipient
from scheduler.webhooks.events import (
    AccountEvent,
    Event,
    InboundEvent,
    MalformedWebhook,
    PreferenceEvent,
    SenderCapabilityEvent,
    StatusEvent,
    TemplateCategoryEvent,
    TemplateStatusEvent,
    parse_webhook,
)

log = logging.getLogger(__name__)


S = MessageState
#: Rows a status webhook may touch: everything the platform has (or may have) accepted.
_LIVE = (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD, S.SENT, S.DELIVERED, S.READ)
#: The states each status may move a row from (forward only). `held` (template pacing) comes after
#: accepted and before sent: a held message is released (sent, delivered, read) or fails (132015).
_FORWARD_FROM: dict[str, tuple[S, ...]] = {
    S.HELD: (S.SENDING, S.UNKNOWN, S.ACCEPTED),
    S.SENT: (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD),
    S.DELIVERED: (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD, S.SENT),
    S.READ: (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD, S.SENT, S.DELIVERED),
}
#: The timestamp a status sets, and the earlier ones it implies (held: the platform had accepted it).
_OWN_TIME = {S.HELD: "accepted_at", S.SENT: "sent_at", S.DELIVERED: "delivered_at", S.READ: "read_at"}
_IMPLIED_TIMES: dict[str, tuple[str, ...]] = {
    S.HELD: (),
    S.SENT: (),
    S.DELIVERED: ("sent_at",),
    S.READ: ("sent_at", "delivered_at"),
}
_FAILABLE = (S.SENDING, S.UNKNOWN, S.ACCEPTED, S.HELD, S.SENT, S.DELIVERED)
#: How a status webhook names template pacing (the send answer's `message_status` says the same).
HELD_STATUSES = frozenset({"held_for_quality_assessment", "held"})
#: Campaign states that a template or account problem pauses.
_PAUSABLE = (CampaignState.RUNNING, CampaignState.WAITING, CampaignState.PLANNED)
_PAUSING_TEMPLATE_EVENTS = frozenset({"PAUSED", "DISABLED"})


@dataclass
class ProcessResult:
    """What a call to `process_pending` did."""

    rows: int = 0
    events: int = 0
    errors: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, other: ProcessResult) -> None:
        """Fold another result into this one."""
        self.rows += other.rows
        self.events += other.events
        self.errors += other.errors
        for kind, count in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + count


@dataclass(frozen=True)
class _Row:
    id: int
    error: str | None
    events: list[Event]


def _parse_row(row: Any, *, received_at: datetime, tiers: dict[str, int]) -> _Row:
    if row.error:
        return _Row(row.id, row.error, [])
    try:
        payload = json.loads(row.body)
        return _Row(row.id, None, parse_webhook(payload, received_at=received_at, tiers=tiers))
    except json.JSONDecodeError as exc:
        return _Row(row.id, f"malformed JSON: {exc}"[:500], [])
    except MalformedWebhook as exc:
        return _Row(row.id, f"not a webhook: {exc}"[:500], [])
    except Exception as exc:  # a shape the parser did not expect: this row only, never the batch
        return _Row(row.id, f"unreadable webhook: {type(exc).__name__}: {exc}"[:500], [])


def _claim(conn: Connection, limit: int) -> list[Any]:
    query = (
        sa.select(INBOX.c.id, INBOX.c.body, INBOX.c.error, INBOX.c.received_at)
        .where(INBOX.c.processed_at.is_(None))
        .order_by(INBOX.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query))


def process_batch(
    engine: Engine, settings: Settings, *, clock: Callable[[], datetime] = utcnow, limit: int | None = None
) -> ProcessResult:
    """Process up to `settings.webhooks.process_batch` pending inbox rows in one write transaction.

    On SQLite the rows are read and parsed BEFORE the write lock is taken (WAL readers never block the
    receiver), so the lock is held only for the statements; two processors may then apply the same
    rows, which changes nothing (every statement is idempotent). On PostgreSQL rows are claimed with
    FOR UPDATE SKIP LOCKED inside the transaction, so concurrent processors share the work.
    """
    tiers = dict(settings.limits.tiers)
    limit = limit or settings.webhooks.process_batch
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            claimed = _claim(conn, limit)
        if not claimed:
            return ProcessResult()
        rows = [_parse_row(row, received_at=row.received_at, tiers=tiers) for row in claimed]
        try:
            with write_transaction(engine) as conn:
                _apply_rows(conn, settings, rows, now=clock())
        except REFUSED_VALUE:
            _apply_one_by_one(engine, settings, rows, now=clock())
        return _result(rows)
    rows = []
    try:
        with write_transaction(engine) as conn:
            claimed = _claim(conn, limit)
            rows = [_parse_row(row, received_at=row.received_at, tiers=tiers) for row in claimed]
            if rows:
                _apply_rows(conn, settings, rows, now=clock())
    except REFUSED_VALUE:
        _apply_one_by_one(engine, settings, rows, now=clock())
    return _result(rows)


#: The database refused a value of one row (too long, out of range, a constraint): that row is poisoned.
#: Anything else (locked, gone, schema missing) stops the batch and leaves every row pending.
REFUSED_VALUE = (sa.exc.DataError, sa.exc.IntegrityError)


def _apply_one_by_one(engine: Engine, settings: Settings, rows: list[_Row], *, now: datetime) -> None:
    """A batch the database refused: apply each row alone, and mark the one it refuses with the error.

    One poisoned body (a value no column can hold) must not stop every webhook behind it.
    """
    for index, row in enumerate(rows):
        try:
            with write_transaction(engine) as conn:
                _apply_rows(conn, settings, [row], now=now)
        except REFUSED_VALUE as exc:
            log.warning("webhook inbox row %s could not be applied: %s", row.id, exc.orig)
            refused = _Row(row.id, f"could not be applied: {exc.orig}"[:500], [])
            rows[index] = refused
            with write_transaction(engine) as conn:
                _apply_rows(conn, settings, [refused], now=now)


def _apply_rows(conn: Connection, settings: Settings, rows: list[_Row], *, now: datetime) -> None:
    _Applier(conn, settings=settings, now=now).apply([event for row in rows for event in row.events])
    conn.execute(
        sa.update(INBOX)
        .where(INBOX.c.id == sa.bindparam("b_id"), INBOX.c.processed_at.is_(None))
        .values(processed_at=sa.bindparam("b_now", type_=UTCDateTime()), error=sa.bindparam("b_error")),
        [{"b_id": row.id, "b_now": now, "b_error": row.error} for row in rows],
    )


def _result(rows: list[_Row]) -> ProcessResult:
    result = ProcessResult(rows=len(rows), errors=sum(1 for row in rows if row.error))
    for row in rows:
        result.events += len(row.events)
        for event in row.events:
            kind = type(event).__name__
            result.by_kind[kind] = result.by_kind.get(kind, 0) + 1
    return result


def pending_count(engine: Engine) -> int:
    """How many inbox rows wait to be processed."""
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(INBOX).where(INBOX.c.processed_at.is_(None))
        return int(conn.execute(query).scalar_one())


def process_pending(
    engine: Engine,
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    max_batches: int | None = None,
) -> ProcessResult:
    """Process pending inbox rows batch after batch until none is left (or `max_batches`)."""
    total = ProcessResult()
    batches = 0
    while max_batches is None or batches < max_batches:
        result = process_batch(engine, settings, clock=clock)
        batches += 1
        if result.rows == 0:
            break
        total.add(result)
    return total


async def run_processor(
    engine: Engine,
    settings: Settings,
    *,
    stop: asyncio.Event,
    idle_poll_s: float = 0.1,
    db_retry_s: float = 1.0,
    busy_share: float = 1.0,
    batch_rows: int | None = None,
) -> ProcessResult:
    """Process the inbox in the background (in a worker thread) until `stop` is set, then drain it.

    `busy_share` < 1 rests after each batch in proportion to the time it took, so a processor that
    shares its process (and its GIL) with the receiver leaves the event loop time to answer: the
    answers are what the platform measures, the backlog waits safely in the inbox.

    A database that is briefly unavailable (locked, restarting) is logged and retried after
    `db_retry_s`: nothing is lost, the rows stay pending. Any other error ends the task.
    """
    total = ProcessResult()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(process_batch, engine, settings, limit=batch_rows)
        except sa.exc.OperationalError as exc:
            log.warning("webhook processing: database unavailable, retrying: %s", exc.orig)
            result = ProcessResult()
            await _sleep_unless(stop, db_retry_s)
        total.add(result)
        if result.rows == 0:
            await _sleep_unless(stop, idle_poll_s)
        elif busy_share < 1.0:
            await _sleep_unless(stop, (time.perf_counter() - started) * (1.0 / busy_share - 1.0))
    total.add(await asyncio.to_thread(process_pending, engine, settings))
    return total


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class _Applier:
    """Applies a batch of events inside one transaction."""

    def __init__(self, conn: Connection, *, settings: Settings, now: datetime) -> None:
        self.conn = conn
        self.settings = settings
        self.now = now

    def apply(self, events: Sequence[Event]) -> None:
        self._statuses([e for e in events if isinstance(e, StatusEvent)])
        self._inbound([e for e in events if isinstance(e, InboundEvent)])
        self._preferences(sorted((e for e in events if isinstance(e, PreferenceEvent)), key=lambda e: e.at))
        for event in events:
            if isinstance(event, TemplateStatusEvent):
                self._template(event)
            elif isinstance(event, TemplateCategoryEvent):
                self._category(event)
            elif isinstance(event, SenderCapabilityEvent):
                self._sender(event)
            elif isinstance(event, AccountEvent) and event.restricts:
                self._pause_all(
                    f"account_update {event.event}" + (f": {event.detail}" if event.detail else "")
                )

    # ----- statuses -------------------------------------------------------------------------------

    def _statuses(self, events: list[StatusEvent]) -> None:
        events = tie_by_recipient(
            self.conn, [replace(e, status=S.HELD.value) if e.status in HELD_STATUSES else e for e in events]
        )
        for status in (S.HELD, S.SENT, S.DELIVERED, S.READ):
            matching = [e for e in events if e.status == status and (e.message_id or e.wamid)]
            by_id = [self._status_params(e) for e in matching if e.message_id is not None]
            by_wamid = [self._status_params(e) for e in matching if e.message_id is None]
            if by_id:
                self.conn.execute(_progress_statement(status, by_id=True), by_id)
            if by_wamid:
                self.conn.execute(_progress_statement(status, by_id=False), by_wamid)
        for event in events:
            if event.status == S.FAILED and (event.message_id or event.wamid):
                self._failed(event)

    def _status_params(self, event: StatusEvent) -> dict[str, Any]:
        return {
            "b_id": event.message_id,
            "b_wamid": event.wamid,
            "b_at": event.at,
            "b_now": self.now,
            "b_category": event.pricing_category,
            "b_type": event.pricing_type,
            "b_billable": event.billable,
        }

    def _failed(self, event: StatusEvent) -> None:
        stmt = (
            sa.update(M)
            .where(_row_match(by_id=event.message_id is not None), M.c.state.in_(_FAILABLE))
            .values(
                state=S.FAILED,
                dedup_hash=None,
                error_code=event.error_code,
                error_title=event.error_title,
                failed_at=sa.bindparam("b_at", type_=UTCDateTime()),
                lease_owner=None,
                lease_expires_at=None,
                wamid=sa.func.coalesce(M.c.wamid, sa.bindparam("b_wamid", type_=sa.String())),
                updated_at=sa.bindparam("b_now", type_=UTCDateTime()),
            )
            .returning(M.c.contact_id)
        )
        params = {"b_id": event.message_id, "b_wamid": event.wamid, "b_at": event.at, "b_now": self.now}
        contact_ids = [row.contact_id for row in self.conn.execute(stmt, params)]
        if not contact_ids:
            return  # a duplicate, or a row that is not ours: no side effects
        action = outcomes.for_failed_status(event.error_code, limits=self.settings.limits)
        if isinstance(action, outcomes.DeferRecipient):
            self._defer_marketing(contact_ids, action.until(self.now))
        elif isinstance(action, outcomes.SuppressContact):
            reason = effects.platform_opt_out_reason(event.error_code, event.error_title)
            self._suppress(contact_ids, at=event.at, reason=reason)

    def _defer_marketing(self, contact_ids: list[int], until: datetime) -> None:
        effects.defer_marketing(self.conn, contact_ids, until=until, now=self.now)

    def _suppress(self, contact_ids: list[int], *, at: datetime, reason: str) -> None:
        effects.suppress_contacts(self.conn, contact_ids, reason=reason, at=at, now=self.now)

    # ----- inbound messages -----------------------------------------------------------------------

    def _inbound(self, events: list[InboundEvent]) -> None:
        if not events:
            return
        unique = list({e.wamid: e for e in events}.values())
        attributed = self._attribution({e.context_wamid for e in unique if e.context_wamid})
        rows = [self._inbound_row(e, attributed) for e in unique]
        _insert_ignore(self.conn, INBOUND, rows, key="wamid")
        self._open_windows(unique)
        for row in rows:
            if row["is_optout"]:
                reason = effects.keyword_opt_out_reason(row["payload"] or row["text"])
                effects.suppress_phones(
                    self.conn, [row["phone"]], reason=reason, at=row["sent_at"], now=self.now
                )

    def _attribution(self, wamids: set[str]) -> dict[str, tuple[int, int]]:
        if not wamids:
            return {}
        query = sa.select(M.c.wamid, M.c.id, M.c.campaign_id).where(M.c.wamid.in_(sorted(wamids)))
        return {row.wamid: (row.id, row.campaign_id) for row in self.conn.execute(query)}

    def _inbound_row(self, event: InboundEvent, attributed: dict[str, tuple[int, int]]) -> dict[str, Any]:
        message_id, campaign_id = attributed.get(event.context_wamid or "", (None, None))
        return {
            "wamid": event.wamid,
            "phone": event.phone,
            "type": event.type[:32],
            "text": event.text,
            "payload": event.payload[:1000] if event.payload else None,
            "context_wamid": event.context_wamid,
            "message_id": message_id,
            "campaign_id": campaign_id,
            "is_optout": self._is_optout(event),
            "sent_at": event.at,
            "received_at": self.now,
        }

    def _is_optout(self, event: InboundEvent) -> bool:
        keywords = {k.strip().casefold() for k in self.settings.webhooks.optout_keywords}
        payloads = {p.strip().casefold() for p in self.settings.webhooks.optout_payloads}
        if event.payload is not None and event.payload.strip().casefold() in payloads:
            return True
        return event.type == "text" and (event.text or "").strip().casefold() in keywords

    def _open_windows(self, events: Iterable[InboundEvent]) -> None:
        window = timedelta(hours=self.settings.limits.customer_service_window_h)
        latest: dict[str, datetime] = {}
        for event in events:
            latest[event.phone] = max(latest.get(event.phone, event.at), event.at)
        current = C.c.service_window_until
        until = sa.bindparam("b_until", type_=UTCDateTime())
        self.conn.execute(
            sa.update(C)
            .where(C.c.phone == sa.bindparam("b_phone"), sa.or_(current.is_(None), current < until))
            .values(service_window_until=until),
            [{"b_phone": phone, "b_until": at + window} for phone, at in latest.items()],
        )

    # ----- user preferences, templates, senders, account ------------------------------------------

    def _preferences(self, events: list[PreferenceEvent]) -> None:
        for event in events:
            if event.category and event.category != "marketing_messages":
                continue
            if event.value == "stop":
                reason = effects.PREFERENCES_STOP_REASON
                effects.suppress_phones(self.conn, [event.phone], reason=reason, at=event.at, now=self.now)
            elif event.value == "resume":
                effects.lift_platform_stop(self.conn, [event.phone], stopped_by=event.at, now=self.now)

    def _template(self, event: TemplateStatusEvent) -> None:
        match = self._template_match(event)
        if match is None:
            return
        found = self.conn.execute(sa.select(TEMPLATE.c.name, TEMPLATE.c.language).where(match))
        pairs = {(row.name, row.language) for row in found}
        self.conn.execute(
            sa.update(TEMPLATE).where(match).values(status=event.event, status_reason=event.reason)
        )
        if event.name and event.language:
            pairs.add((event.name, event.language))
        if event.event == "APPROVED":  # approved again: the campaigns its pause stopped go on
            for name, language in sorted(pairs):
                control.resume_template_paused(self.conn, name=name, language=language, now=self.now)
            return
        if event.event not in _PAUSING_TEMPLATE_EVENTS:
            return
        for name, language in sorted(pairs):
            reason = control.template_pause_reason(name, language, event=event.event, detail=event.reason)
            self._pause(
                sa.and_(CAMPAIGN.c.template_name == name, CAMPAIGN.c.language == language), reason=reason
            )

    def _category(self, event: TemplateCategoryEvent) -> None:
        """Category drift: the new category (the old one kept), or the one announced for later."""
        match = self._template_match(event)
        if match is None:
            return
        if event.new_category:
            changed = TEMPLATE.c.category != event.new_category  # a duplicate webhook changes nothing
            t = TEMPLATE.c
            values: dict[str, Any] = {
                "category": event.new_category,
                "previous_category": sa.case((changed, t.category), else_=t.previous_category),
                "category_changed_at": sa.case((changed, self.now), else_=t.category_changed_at),
                "upcoming_category": None,
            }
        elif event.correct_category:
            values = {"upcoming_category": event.correct_category}
        else:
            return
        self.conn.execute(sa.update(TEMPLATE).where(match).values(values))

    @staticmethod
    def _template_match(event: TemplateStatusEvent | TemplateCategoryEvent) -> sa.ColumnElement[bool] | None:
        clauses: list[sa.ColumnElement[bool]] = []
        if event.platform_id:
            clauses.append(TEMPLATE.c.platform_id == event.platform_id)
        if event.name and event.language:
            clauses.append(sa.and_(TEMPLATE.c.name == event.name, TEMPLATE.c.language == event.language))
        return sa.or_(*clauses) if clauses else None

    def _pause(self, where: sa.ColumnElement[bool], *, reason: str) -> None:
        matching = self.conn.execute(sa.select(CAMPAIGN.c.id).where(where, CAMPAIGN.c.state.in_(_PAUSABLE)))
        for campaign_id in matching.scalars().all():
            control.change_state(
                self.conn,
                campaign_id,
                CampaignState.PAUSED,
                now=self.now,
                pause_reason=reason[:500],
                only_from=_PAUSABLE,
            )

    def _pause_all(self, reason: str) -> None:
        self._pause(sa.true(), reason=reason)

    def _sender(self, event: SenderCapabilityEvent) -> None:
        values: dict[str, Any] = {"updated_at": self.now}
        if event.messaging_tier:
            values["messaging_tier"] = event.messaging_tier[:32]
        if event.throughput_level:
            values["throughput_level"] = event.throughput_level[:32]
        if len(values) == 1:
            return
        stmt = sa.update(SENDER).values(**values)
        if event.phone_number_id:
            stmt = stmt.where(SENDER.c.phone_number_id == event.phone_number_id)
        self.conn.execute(stmt)


def _state_in(states: Iterable[S]) -> sa.ColumnElement[bool]:
    """`state IN ('a', 'b')` with inline constants (expanding parameters cannot be used in executemany)."""
    clause: sa.ColumnElement[bool] = M.c.state.in_([sa.literal_column(f"'{s.value}'") for s in states])
    return clause


def _row_match(*, by_id: bool) -> sa.ColumnElement[bool]:
    """The ledger row of a status: by "wacamp:<id>" (and a wamid that agrees), else by wamid."""
    wamid = sa.bindparam("b_wamid", type_=sa.String())
    if by_id:
        return sa.and_(M.c.id == sa.bindparam("b_id"), sa.or_(M.c.wamid.is_(None), M.c.wamid == wamid))
    match: sa.ColumnElement[bool] = M.c.wamid == wamid
    return match


def _progress_statement(status: S, *, by_id: bool) -> sa.Update:
    """UPDATE for a sent/delivered/read status: forward-only state, timestamps filled, pricing kept."""
    at = sa.bindparam("b_at", type_=UTCDateTime())
    own = M.c[_OWN_TIME[status]]
    values: dict[str, Any] = {
        "state": sa.case((_state_in(_FORWARD_FROM[status]), status.value), else_=M.c.state),
        _OWN_TIME[status]: sa.case((sa.or_(own.is_(None), own > at), at), else_=own),
        "wamid": sa.func.coalesce(M.c.wamid, sa.bindparam("b_wamid", type_=sa.String())),
        "pricing_category": sa.func.coalesce(
            sa.bindparam("b_category", type_=sa.String()), M.c.pricing_category
        ),
        "billable": sa.func.coalesce(sa.bindparam("b_billable", type_=sa.Boolean()), M.c.billable),
        "pricing_type": sa.func.coalesce(sa.bindparam("b_type", type_=sa.String()), M.c.pricing_type),
        "updated_at": sa.bindparam("b_now", type_=UTCDateTime()),
    }
    for column in _IMPLIED_TIMES[status]:
        values[column] = sa.func.coalesce(M.c[column], at)
    return sa.update(M).where(_row_match(by_id=by_id), _state_in(_LIVE)).values(values)


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *, key: str) -> None:
    """INSERT … ON CONFLICT (key) DO NOTHING on SQLite and PostgreSQL."""
    if not rows:
        return
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(dialect_insert(table).on_conflict_do_nothing(index_elements=[key]), rows)

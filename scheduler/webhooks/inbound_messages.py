"""Inbound messages and user preferences applied: stored once by wamid, service windows, opt-outs.

Inbound messages are keyed by their wamid (insert-or-ignore) and attributed to the campaign message
they answer; service windows only grow; an opt-out keyword or button, or a marketing preference
"stop", suppresses the phone (`campaigns.contacts.effects`), "resume" lifts a platform stop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from campaigns.contacts import effects
from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.models import CONTACT_TABLE as C
from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import MESSAGE_TABLE as M
from campaigns.core.settings import Settings
from scheduler.webhooks.events import (
    InboundEvent,
    PreferenceEvent,
)


@dataclass(frozen=True)
class InboundApplier:
    """Applies a batch's inbound message and preference events inside its transaction."""

    conn: Connection
    settings: Settings
    now: datetime

    def apply_inbound(self, events: list[InboundEvent]) -> None:
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

    def apply_preferences(self, events: list[PreferenceEvent]) -> None:
        for event in events:
            if event.category and event.category != "marketing_messages":
                continue
            if event.value == "stop":
                reason = effects.PREFERENCES_STOP_REASON
                effects.suppress_phones(self.conn, [event.phone], reason=reason, at=event.at, now=self.now)
            elif event.value == "resume":
                effects.lift_platform_stop(self.conn, [event.phone], stopped_by=event.at, now=self.now)


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *, key: str) -> None:
    """INSERT … ON CONFLICT (key) DO NOTHING on SQLite and PostgreSQL."""
    if not rows:
        return
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(dialect_insert(table).on_conflict_do_nothing(index_elements=[key]), rows)

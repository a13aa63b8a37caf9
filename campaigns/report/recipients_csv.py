"""One CSV row per recipient of a campaign, streamed from the database (constant memory).

Cells a spreadsheet would run as a formula are neutralised by `campaigns.csvfiles.neutralize_formula`
(the contacts importer's helper, reused here).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.csvfiles import neutralize_formula
from campaigns.models import InboundMessage, Message

MESSAGE = Message.__table__  # type: ignore[attr-defined]
INBOUND = InboundMessage.__table__  # type: ignore[attr-defined]

HEADER = [
    "phone",
    "state",
    "skip_reason",
    "wamid",
    "error_code",
    "error_title",
    "accepted_at",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "pricing_category",
    "billable",
    "reply",
    "button_payload",
    "opted_out",
]
FETCH_ROWS = 5000


def _replies_subquery(campaign_id: int) -> Any:
    """The latest reply per ledger row of this campaign (text, payload, whether it opted out)."""
    latest = (
        sa.select(INBOUND.c.message_id, sa.func.max(INBOUND.c.id).label("last_id"))
        .where(INBOUND.c.campaign_id == campaign_id, INBOUND.c.message_id.is_not(None))
        .group_by(INBOUND.c.message_id)
        .subquery("latest")
    )
    optout = (
        sa.select(
            INBOUND.c.message_id,
            sa.func.max(sa.case((INBOUND.c.is_optout.is_(True), 1), else_=0)).label("opted"),
        )
        .where(INBOUND.c.campaign_id == campaign_id, INBOUND.c.message_id.is_not(None))
        .group_by(INBOUND.c.message_id)
        .subquery("optout")
    )
    return latest, optout


def recipient_rows(engine: Engine, campaign_id: int) -> Iterator[list[Any]]:
    """The CSV rows (without the header), in ledger order, fetched in batches."""
    latest, optout = _replies_subquery(campaign_id)
    reply = INBOUND.alias("reply")
    query = (
        sa.select(
            MESSAGE.c.phone,
            MESSAGE.c.state,
            MESSAGE.c.skip_reason,
            MESSAGE.c.wamid,
            MESSAGE.c.error_code,
            MESSAGE.c.error_title,
            MESSAGE.c.accepted_at,
            MESSAGE.c.sent_at,
            MESSAGE.c.delivered_at,
            MESSAGE.c.read_at,
            MESSAGE.c.failed_at,
            MESSAGE.c.pricing_category,
            MESSAGE.c.billable,
            reply.c.text,
            reply.c.payload,
            optout.c.opted,
        )
        .select_from(
            MESSAGE.outerjoin(latest, latest.c.message_id == MESSAGE.c.id)
            .outerjoin(reply, reply.c.id == latest.c.last_id)
            .outerjoin(optout, optout.c.message_id == MESSAGE.c.id)
        )
        .where(MESSAGE.c.campaign_id == campaign_id)
        .order_by(MESSAGE.c.id)
    )
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(query)
        for row in result:
            yield [_cell(value) for value in row[:-1]] + ["yes" if row[-1] else ""]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return neutralize_formula(value)
    return value


def write_recipients_csv(engine: Engine, campaign_id: int, out: TextIO) -> int:
    """Write the header and every recipient row to `out`; returns the number of rows."""
    writer = csv.writer(out)
    writer.writerow(HEADER)
    count = 0
    for row in recipient_rows(engine, campaign_id):
        writer.writerow(row)
        count += 1
    return count

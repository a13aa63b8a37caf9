"""One CSV row per recipient of a campaign, streamed from the database (constant memory).

Cells a spreadsheet would run as a formula are neutralised by `campaigns.contacts.csvfiles.neutralize_formula`
(the contacts importer's helper, reused here).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.contacts.csvfiles import neutralize_formula
from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import MESSAGE_TABLE as MESSAGE

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
    "rollout_stage",
    "variant",
    "via",
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


def iso_text(column: Any, dialect: str) -> Any:
    """A timestamp column as ISO 8601 UTC text made by the database (no Python datetime per cell)."""
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
        text = sa.type_coerce(column, sa.String())
        return sa.case((text.is_(None), None), else_=sa.func.replace(text, " ", "T") + "+00:00")
    return sa.func.to_char(sa.func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')


def recipient_rows(engine: Engine, campaign_id: int) -> Iterator[list[Any]]:
    """The CSV rows (without the header), in ledger order, fetched in batches."""
    dialect = engine.dialect.name
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
            iso_text(MESSAGE.c.accepted_at, dialect),
            iso_text(MESSAGE.c.sent_at, dialect),
            iso_text(MESSAGE.c.delivered_at, dialect),
            iso_text(MESSAGE.c.read_at, dialect),
            iso_text(MESSAGE.c.failed_at, dialect),
            MESSAGE.c.pricing_category,
            MESSAGE.c.billable,
            reply.c.text,
            reply.c.payload,
            optout.c.opted,
            MESSAGE.c.stage,
            MESSAGE.c.variant,
            MESSAGE.c.via,
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
            yield _csv_row(row)


def _text(value: str | None) -> str:
    return neutralize_formula(value) if value else ""


def _csv_row(row: Any) -> list[Any]:
    """One recipient's cells: text that came from outside (platform, users, CSV imports) neutralised."""
    (phone, state, skip, wamid, code, title, accepted, sent, delivered, read, failed, category, billable,
     reply, payload, opted, stage, variant, via) = row  # fmt: skip
    return [
        _text(phone),
        state,
        _text(skip),
        _text(wamid),
        "" if code is None else code,
        _text(title),
        accepted or "",
        sent or "",
        delivered or "",
        read or "",
        failed or "",
        _text(category),
        "" if billable is None else ("yes" if billable else "no"),
        _text(reply),
        _text(payload),
        "yes" if opted else "",
        "" if stage is None else stage + 1,
        variant or "",
        via or "",
    ]


def write_recipients_csv(engine: Engine, campaign_id: int, out: TextIO) -> int:
    """Write the header and every recipient row to `out`; returns the number of rows."""
    writer = csv.writer(out)
    writer.writerow(HEADER)
    count = 0
    for row in recipient_rows(engine, campaign_id):
        writer.writerow(row)
        count += 1
    return count

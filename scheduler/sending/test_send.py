"""`campaigns test`: a campaign's real body sent now to test numbers, recorded apart from the ledger.

The body is the frozen ledger body of one recipient (the one asked for, or the campaign's first), so
it is exactly what that person gets, with two differences: ``to`` is the test number, and
``biz_opaque_callback_data`` is left out, so the test message's status webhooks can never be taken
for the recipient's ledger row. The sends go through the sender's provider and pace (the same rate
limiter a run uses); they are written to ``test_send`` only, so they never count for "never the same
content twice", frequency caps or the tier budget.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.content.payloads import dumps
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import PlatformError, UserError
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import TEST_SEND_TABLE as TEST_SEND
from campaigns.core.models import Campaign
from campaigns.core.settings import Settings
from scheduler.providers.base import Provider
from scheduler.sending.pace import make_pace


@dataclass(frozen=True)
class SentTest:
    """One test send: to whom, as which recipient, and the platform's answer (wamid or error)."""

    phone: str
    as_phone: str
    body: str
    wamid: str | None
    error: str | None
    sent_at: datetime


def recipient_body(engine: Engine, campaign: Campaign, as_phone: str | None) -> tuple[str, str]:
    """(recipient phone, frozen body) of `as_phone`'s ledger row, or of the campaign's first recipient."""
    if campaign.planned_at is None:
        raise UserError(
            f"campaign {campaign.name!r} is not planned yet: run `wacamp campaigns plan {campaign.name}`"
        )
    query = sa.select(MESSAGE.c.phone, MESSAGE.c.body, MESSAGE.c.skip_reason).where(
        MESSAGE.c.campaign_id == campaign.id
    )
    if as_phone is not None:
        query = query.where(MESSAGE.c.phone == as_phone)
    else:
        query = query.where(MESSAGE.c.body.isnot(None)).order_by(MESSAGE.c.id).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        who = f"{as_phone} is not a recipient of" if as_phone else "nobody is to receive"
        raise UserError(f"{who} campaign {campaign.name!r}")
    if row.body is None:
        raise UserError(f"{row.phone} is skipped in campaign {campaign.name!r} ({row.skip_reason}): no body")
    return str(row.phone), str(row.body)


def body_for_test_number(body: str, *, to: str) -> str:
    """The recipient's body for a test number: ``to`` replaced, ``biz_opaque_callback_data`` left out."""
    data = json.loads(body)
    data["to"] = to
    data.pop("biz_opaque_callback_data", None)
    return dumps(data)


async def send_test_messages(
    engine: Engine,
    *,
    settings: Settings,
    campaign: Campaign,
    provider: Provider,
    to: Sequence[str],
    as_phone: str | None = None,
) -> list[SentTest]:
    """Send the campaign's body (as `as_phone`, or its first recipient, receives it) to each of `to`."""
    if not to:
        raise UserError("no test number: give --to PHONE or set [campaigns] test_numbers")
    recipient, body = recipient_body(engine, campaign, as_phone)
    pace = make_pace(settings, settings.sender(campaign.sender_name))
    results = []
    for phone in to:
        text = body_for_test_number(body, to=phone)
        await pace.acquire()
        wamid, error = await _send(provider, text)
        results.append(SentTest(phone, recipient, text, wamid, error, utcnow()))
    _record(engine, int(campaign.id or 0), results)
    return results


async def _send(provider: Provider, body: str) -> tuple[str | None, str | None]:
    try:
        return (await provider.send(body)).wamid, None
    except PlatformError as exc:
        return None, str(exc)[:500]


def _record(engine: Engine, campaign_id: int, results: list[SentTest]) -> None:
    rows = [
        {
            "campaign_id": campaign_id,
            "phone": r.phone,
            "as_phone": r.as_phone,
            "body": r.body,
            "wamid": r.wamid,
            "error": r.error,
            "sent_at": r.sent_at,
        }
        for r in results
    ]
    with write_transaction(engine) as conn:
        conn.execute(sa.insert(TEST_SEND), rows)


def recorded_test_sends(engine: Engine, campaign_id: int) -> list[SentTest]:
    """The campaign's test sends, oldest first (`campaigns show`)."""
    columns = (
        TEST_SEND.c.phone,
        TEST_SEND.c.as_phone,
        TEST_SEND.c.body,
        TEST_SEND.c.wamid,
        TEST_SEND.c.error,
        TEST_SEND.c.sent_at,
    )
    query = sa.select(*columns).where(TEST_SEND.c.campaign_id == campaign_id).order_by(TEST_SEND.c.id)
    with engine.connect() as conn:
        return [SentTest(*row) for row in conn.execute(query)]

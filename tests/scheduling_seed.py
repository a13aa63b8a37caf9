"""Seed a migrated database with a list, contacts, a campaign and its ledger rows (bulk Core inserts).

For scheduling tests that need campaigns in given states without going through the planner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import MessageState


def seed_campaign(
    engine: Engine,
    *,
    name: str,
    phones: Sequence[str] = (),
    now: datetime | None = None,
    **campaign_fields: Any,
) -> int:
    """A list `name` of `phones` and a campaign `name` with one planned row per phone; its id."""
    now = now or utcnow()
    content_hash = hashlib.sha256(name.encode()).hexdigest()
    with engine.begin() as conn:
        list_id = conn.execute(
            sa.insert(LIST).values(name=name, created_at=now).returning(LIST.c.id)
        ).scalar_one()
        contact_ids = _contacts(conn, phones, now=now)
        if contact_ids:
            conn.execute(
                sa.insert(MEMBER),
                [{"list_id": list_id, "contact_id": cid, "added_at": now} for cid in contact_ids],
            )
        values: dict[str, Any] = {
            "name": name,
            "list_id": list_id,
            "template_name": "promo",
            "language": "it",
            "category": "MARKETING",
            "sender_name": "default",
            "params": {},
            "defaults": {},
            "button_payloads": {},
            "state": "planned",
            "timezone": "UTC",
            "recipient_local_time": False,
            "created_at": now,
            "updated_at": now,
            **campaign_fields,
        }
        campaign_id = int(
            conn.execute(sa.insert(CAMPAIGN).values(**values).returning(CAMPAIGN.c.id)).scalar_one()
        )
        if contact_ids:
            conn.execute(
                sa.insert(MESSAGE),
                [
                    {
                        "campaign_id": campaign_id,
                        "contact_id": cid,
                        "phone": phone,
                        "content_hash": content_hash,
                        "dedup_hash": content_hash,
                        "state": MessageState.PLANNED.value,
                        "body": "{}",
                        "attempts": 0,
                        "planned_at": now,
                        "updated_at": now,
                    }
                    for cid, phone in zip(contact_ids, phones, strict=True)
                ],
            )
    return campaign_id


def _contacts(conn: sa.Connection, phones: Sequence[str], *, now: datetime) -> list[int]:
    ids: list[int] = []
    for phone in phones:
        existing = conn.execute(sa.select(CONTACT.c.id).where(CONTACT.c.phone == phone)).scalar()
        if existing is None:
            existing = conn.execute(
                sa.insert(CONTACT)
                .values(phone=phone, attributes={}, consent=True, created_at=now, updated_at=now)
                .returning(CONTACT.c.id)
            ).scalar_one()
        ids.append(int(existing))
    return ids


def rows_of(engine: Engine, campaign_id: int) -> list[Any]:
    """The ledger rows of a campaign in id order."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(MESSAGE).where(MESSAGE.c.campaign_id == campaign_id).order_by(MESSAGE.c.id)
            )
        )


def campaign_row(engine: Engine, campaign_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(CAMPAIGN).where(CAMPAIGN.c.id == campaign_id)).one()

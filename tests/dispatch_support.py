"""Test support for the dispatcher: a planned campaign written straight into the ledger, and a
scripted Provider (a real implementation of the protocol whose answers a test decides per phone).

The seeded bodies are real Cloud API sends of the sandbox's `order_shipped` (en) template, so the
same campaign can be sent to the sandbox.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.content import payloads
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import PlatformError
from campaigns.core.models import (
    Campaign,
    CampaignState,
    Contact,
    ContactList,
    Message,
    MessageState,
    Template,
)
from scheduler.providers.base import PhoneLimits, SendResult

TEMPLATE = "order_shipped"
LANGUAGE = "en"


def phone_of(index: int) -> str:
    """A valid Italian mobile number, distinct per index."""
    return f"+39347{index:07d}"


def body_for(*, message_id: int, phone: str, order_id: str, api: str = "cloud") -> tuple[str, str]:
    """(request body JSON, content hash) of one order_shipped send."""
    components = [
        payloads.body_component(
            [
                payloads.text_parameter(
                    "Ada", parameter="first_name", limit=4096, parameter_name="first_name"
                ),
                payloads.text_parameter(
                    order_id, parameter="order_id", limit=4096, parameter_name="order_id"
                ),
            ]
        )
    ]
    template = payloads.template_object(api=api, name=TEMPLATE, language=LANGUAGE, components=components)  # type: ignore[arg-type]
    body = payloads.build_template_body(
        api=api,  # type: ignore[arg-type]
        to=phone,
        template=template,
        callback_data=payloads.callback_data_for(message_id),
    )
    return payloads.dumps(body), payloads.content_hash(
        name=TEMPLATE, language=LANGUAGE, components=components
    )


def seed_campaign(
    engine: Engine,
    *,
    recipients: int,
    name: str = "spring",
    first_contact: int = 0,
    order_id: str = "A-1",
    state: CampaignState = CampaignState.PLANNED,
    sender_name: str = "default",
) -> int:
    """A campaign with `recipients` planned ledger rows (contacts created as needed); returns its id."""
    now = utcnow()
    contact_t = Contact.__table__  # type: ignore[attr-defined]
    message_t = Message.__table__  # type: ignore[attr-defined]
    with write_transaction(engine) as conn:
        list_id = _ensure_list(conn, name, now)
        _ensure_template(conn, now)
        campaign_id = conn.execute(
            sa.insert(Campaign.__table__)  # type: ignore[attr-defined]
            .values(
                name=name,
                list_id=list_id,
                template_name=TEMPLATE,
                language=LANGUAGE,
                category="UTILITY",
                sender_name=sender_name,
                params={},
                defaults={},
                button_payloads={},
                state=state.value,
                timezone="UTC",
                recipient_local_time=False,
                created_at=now,
                updated_at=now,
            )
            .returning(sa.column("id"))
        ).scalar_one()
        phones = [phone_of(first_contact + i) for i in range(recipients)]
        existing = _contact_ids(conn, phones)
        new = [p for p in phones if p not in existing]
        for start in range(0, len(new), 5000):
            conn.execute(
                sa.insert(contact_t),
                [
                    {"phone": p, "attributes": {}, "consent": True, "created_at": now, "updated_at": now}
                    for p in new[start : start + 5000]
                ],
            )
        ids = _contact_ids(conn, phones)
        first_id = (conn.scalar(sa.select(sa.func.max(message_t.c.id))) or 0) + 1
        rows = []
        for offset, phone in enumerate(phones):
            message_id = first_id + offset
            body, digest = body_for(message_id=message_id, phone=phone, order_id=order_id)
            rows.append(
                {
                    "id": message_id,
                    "campaign_id": campaign_id,
                    "contact_id": ids[phone],
                    "phone": phone,
                    "content_hash": digest,
                    "dedup_hash": digest,
                    "state": MessageState.PLANNED.value,
                    "body": body,
                    "attempts": 0,
                    "planned_at": now,
                    "updated_at": now,
                }
            )
        for start in range(0, len(rows), 1000):
            conn.execute(sa.insert(message_t), rows[start : start + 1000])
    return int(campaign_id)


def _contact_ids(conn: sa.Connection, phones: list[str]) -> dict[str, int]:
    table = Contact.__table__  # type: ignore[attr-defined]
    found: dict[str, int] = {}
    for start in range(0, len(phones), 5000):
        chunk = phones[start : start + 5000]
        query = sa.select(table.c.phone, table.c.id).where(table.c.phone.in_(chunk))
        found.update((phone, int(cid)) for phone, cid in conn.execute(query))
    return found


def _ensure_list(conn: sa.Connection, name: str, now: datetime) -> int:
    table = ContactList.__table__  # type: ignore[attr-defined]
    found = conn.scalar(sa.select(table.c.id).where(table.c.name == name))
    if found is not None:
        return int(found)
    return int(
        conn.execute(sa.insert(table).values(name=name, created_at=now).returning(table.c.id)).scalar_one()
    )


def _ensure_template(conn: sa.Connection, now: datetime) -> None:
    table = Template.__table__  # type: ignore[attr-defined]
    if conn.scalar(sa.select(table.c.id).where(table.c.name == TEMPLATE, table.c.language == LANGUAGE)):
        return
    conn.execute(
        sa.insert(table).values(
            name=TEMPLATE,
            language=LANGUAGE,
            status="APPROVED",
            category="UTILITY",
            parameter_format="NAMED",
            components=[],
            synced_at=now,
        )
    )


def states(engine: Engine, campaign_id: int) -> dict[str, int]:
    """Ledger rows of a campaign by state."""
    table = Message.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        query = sa.select(table.c.state, sa.func.count()).where(table.c.campaign_id == campaign_id)
        return {state: int(n) for state, n in conn.execute(query.group_by(table.c.state))}


def rows(engine: Engine, campaign_id: int) -> list[sa.Row[tuple[object, ...]]]:
    """Every ledger row of a campaign, in id order."""
    table = Message.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(table).where(table.c.campaign_id == campaign_id).order_by(table.c.id))
        )


Answer = Callable[[str, int], SendResult | PlatformError | BaseException]


@dataclass
class ScriptedProvider:
    """A Provider whose answer for each send is `answer(phone, nth_attempt_for_that_phone)`.

    Records every body it was given, so a test can check what would have reached the platform.
    """

    answer: Answer = field(default=lambda phone, attempt: SendResult(wamid=f"wamid.{phone}.{attempt}"))
    latency_s: float = 0.0
    #: `Provider.pool_limit`: no HTTP pool here, so in practice `[dispatch] max_in_flight` bounds the sends.
    pool_limit: int = 1 << 30
    limits: PhoneLimits | Exception = field(
        default_factory=lambda: PhoneLimits(messaging_tier="TIER_UNLIMITED")
    )
    bodies: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def send(self, body_json: str) -> SendResult:
        import json

        phone = json.loads(body_json)["to"]
        nth = self.attempts.get(phone, 0)
        self.attempts[phone] = nth + 1
        self.bodies.append(body_json)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        result = self.answer(phone, nth)
        if isinstance(result, BaseException):
            raise result
        return result

    async def read_limits(self) -> PhoneLimits:
        if isinstance(self.limits, Exception):
            raise self.limits
        return self.limits

    async def close(self) -> None:
        return None

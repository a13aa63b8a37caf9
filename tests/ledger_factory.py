"""Ledger rows written directly with Core inserts, for webhook and report tests.

Campaign, contacts and messages in any state, with `wacamp:<id>` bodies and wamids, without going
through the planner or the dispatcher.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.models import (
    Campaign,
    CampaignState,
    Contact,
    ContactList,
    ListMember,
    Message,
    MessageState,
    Sender,
    Template,
)

T = {
    name: model.__table__  # type: ignore[attr-defined]
    for name, model in {
        "list": ContactList,
        "contact": Contact,
        "member": ListMember,
        "campaign": Campaign,
        "message": Message,
        "template": Template,
        "sender": Sender,
    }.items()
}


@dataclass(frozen=True)
class Seeded:
    """What `seed_campaign` wrote: the campaign id and, per row, (message id, phone, wamid)."""

    campaign_id: int
    list_id: int
    messages: list[tuple[int, str, str | None]]

    def wamid(self, index: int) -> str:
        wamid = self.messages[index][2]
        assert wamid is not None
        return wamid


def phone_number(index: int, *, country: str = "39") -> str:
    return f"+{country}347{index:07d}"


def seed_campaign(
    engine: Engine,
    *,
    name: str = "spring",
    count: int = 3,
    state: str = MessageState.ACCEPTED,
    template: str = "promo",
    language: str = "it",
    campaign_state: str = CampaignState.RUNNING,
    start: datetime | None = None,
    phones: list[str] | None = None,
    states: list[str] | None = None,
) -> Seeded:
    """A campaign over `count` contacts with one ledger row each (accepted rows get a wamid)."""
    start = start or utcnow() - timedelta(minutes=5)
    phones = phones or [phone_number(i) for i in range(count)]
    states = states or [state] * len(phones)
    content_hash = hashlib.sha256(f"{template}/{language}/{name}".encode()).hexdigest()
    with engine.begin() as conn:
        list_id = conn.execute(
            sa.insert(T["list"]).values(name=f"{name}-list", created_at=start)
        ).inserted_primary_key[0]
        _ensure_template(conn, template, language, start)
        campaign_id = conn.execute(
            sa.insert(T["campaign"]).values(
                name=name,
                list_id=list_id,
                template_name=template,
                language=language,
                state=campaign_state,
                category="MARKETING",
                sender_name="default",
                timezone="UTC",
                recipient_local_time=False,
                created_at=start,
                updated_at=start,
                started_at=start,
                params={},
                defaults={},
                button_payloads={},
            )
        ).inserted_primary_key[0]
        contact_ids = [_ensure_contact(conn, phone, list_id, start) for phone in phones]
        messages = []
        for index, (phone, contact_id, row_state) in enumerate(zip(phones, contact_ids, states, strict=True)):
            messages.append(
                _insert_message(
                    conn,
                    campaign_id=campaign_id,
                    contact_id=contact_id,
                    phone=phone,
                    state=row_state,
                    content_hash=content_hash,
                    at=start + timedelta(milliseconds=10 * index),
                    template=template,
                    language=language,
                )
            )
    return Seeded(campaign_id, list_id, messages)


def _ensure_template(conn: sa.Connection, name: str, language: str, at: datetime) -> None:
    exists = conn.execute(
        sa.select(T["template"].c.id).where(
            T["template"].c.name == name, T["template"].c.language == language
        )
    ).first()
    if exists is None:
        conn.execute(
            sa.insert(T["template"]).values(
                platform_id=f"tpl-{name}-{language}",
                name=name,
                language=language,
                status="APPROVED",
                category="MARKETING",
                components=[],
                synced_at=at,
            )
        )


def _ensure_contact(conn: sa.Connection, phone: str, list_id: int, at: datetime) -> int:
    table = T["contact"]
    found = conn.execute(sa.select(table.c.id).where(table.c.phone == phone)).first()
    contact_id = (
        int(found.id)
        if found
        else int(
            conn.execute(
                sa.insert(table).values(
                    phone=phone, attributes={}, consent=True, created_at=at, updated_at=at
                )
            ).inserted_primary_key[0]
        )
    )
    conn.execute(sa.insert(T["member"]).values(list_id=list_id, contact_id=contact_id, added_at=at))
    return contact_id


def _insert_message(
    conn: sa.Connection,
    *,
    campaign_id: int,
    contact_id: int,
    phone: str,
    state: str,
    content_hash: str,
    at: datetime,
    template: str,
    language: str,
) -> tuple[int, str, str | None]:
    table = T["message"]
    blocking = state not in (MessageState.SKIPPED, MessageState.FAILED)
    values: dict[str, Any] = {
        "campaign_id": campaign_id,
        "contact_id": contact_id,
        "phone": phone,
        "content_hash": content_hash,
        "dedup_hash": content_hash if blocking else None,
        "state": state,
        "planned_at": at,
        "updated_at": at,
        "attempts": 0 if state in (MessageState.PLANNED, MessageState.SKIPPED) else 1,
    }
    if state == MessageState.SKIPPED:
        values["skip_reason"] = "suppressed"
    message_id = int(conn.execute(sa.insert(table).values(values)).inserted_primary_key[0])
    wamid = (
        f"wamid.TEST{message_id:08d}"
        if state
        not in (MessageState.PLANNED, MessageState.SKIPPED, MessageState.UNKNOWN, MessageState.SENDING)
        else None
    )
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": phone,
        "type": "template",
        "template": {"name": template, "language": {"code": language}},
        "biz_opaque_callback_data": f"wacamp:{message_id}",
    }
    update: dict[str, Any] = {"body": json.dumps(body), "wamid": wamid}
    if state not in (MessageState.PLANNED, MessageState.SKIPPED):
        update["sending_at"] = at
    if wamid is not None:
        update["accepted_at"] = at + timedelta(milliseconds=5)
        update["message_status"] = "accepted"
    conn.execute(sa.update(table).where(table.c.id == message_id).values(update))
    return message_id, phone, wamid


def add_sender(engine: Engine, *, name: str = "default", phone_number_id: str = "100000000000001") -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(T["sender"]).values(
                name=name, phone_number_id=phone_number_id, portfolio="default", updated_at=utcnow()
            )
        )


def row(engine: Engine, message_id: int) -> Any:
    """One ledger row as a SQLAlchemy Row."""
    with engine.connect() as conn:
        return conn.execute(sa.select(T["message"]).where(T["message"].c.id == message_id)).one()


def contact(engine: Engine, phone: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(T["contact"]).where(T["contact"].c.phone == phone)).one()


# ----- webhook bodies ------------------------------------------------------------------------------


def status_body(
    *,
    wamid: str | None,
    status: str,
    message_id: int | None = None,
    timestamp: int = 1_790_000_000,
    recipient: str = "393470000000",
    error_code: int | None = None,
    category: str | None = "marketing",
    billable: bool | None = True,
) -> dict[str, Any]:
    """A Cloud API status webhook carrying one status."""
    status_item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": recipient,
    }
    if message_id is not None:
        status_item["biz_opaque_callback_data"] = f"wacamp:{message_id}"
    if status in ("sent", "delivered", "read") and category:
        status_item["pricing"] = {
            "billable": billable,
            "pricing_model": "PMP",
            "type": "regular",
            "category": category,
        }
    if error_code is not None:
        status_item["errors"] = [{"code": error_code, "title": f"error {error_code}", "message": "m"}]
    return envelope("messages", {"messaging_product": "whatsapp", "statuses": [status_item]})


def inbound_body(
    *,
    phone: str,
    wamid: str,
    text: str | None = None,
    payload: str | None = None,
    context: str | None = None,
    timestamp: int = 1_790_000_100,
) -> dict[str, Any]:
    """A user's text (or quick-reply button tap when `payload` is given)."""
    message: dict[str, Any] = {"from": phone.lstrip("+"), "id": wamid, "timestamp": str(timestamp)}
    if payload is not None:
        message.update(type="button", button={"payload": payload, "text": text or payload})
    else:
        message.update(type="text", text={"body": text or ""})
    if context:
        message["context"] = {"from": "15550000000", "id": context}
    value = {
        "messaging_product": "whatsapp",
        "contacts": [{"wa_id": phone.lstrip("+")}],
        "messages": [message],
    }
    return envelope("messages", value)


def envelope(field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "200000000000001", "changes": [{"field": field, "value": value}]}],
    }

"""Contacts, lists and templates written directly with Core inserts, for planning and campaign tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.templates.catalog import parse_templates, store_templates

PROMO = {
    "name": "promo",
    "language": "it",
    "status": "APPROVED",
    "category": "MARKETING",
    "parameter_format": "POSITIONAL",
    "components": [
        {
            "type": "BODY",
            "text": "Ciao {{1}}, usa il codice {{2}}",
            "example": {"body_text": [["Marco", "X"]]},
        },
        {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Stop"}]},
    ],
}


@dataclass(frozen=True)
class Person:
    """One contact to seed."""

    phone: str
    attributes: Mapping[str, Any]
    consent: bool = True
    suppressed: bool = False
    deferred_until: datetime | None = None


def seed_templates(engine: Engine, *templates: Mapping[str, Any]) -> None:
    store_templates(
        engine, parse_templates(list(templates or [PROMO]), source="test"), mark_missing_gone=False
    )


def seed_list(engine: Engine, name: str, people: Iterable[Person]) -> int:
    """Create (or extend) list `name` with `people` (existing phones are reused); returns the list id."""
    now = utcnow()
    with write_transaction(engine) as conn:
        list_id = conn.execute(sa.select(LIST.c.id).where(LIST.c.name == name)).scalar()
        if list_id is None:
            list_id = conn.execute(
                sa.insert(LIST).values(name=name, created_at=now).returning(LIST.c.id)
            ).scalar_one()
        for person in people:
            contact_id = conn.execute(sa.select(CONTACT.c.id).where(CONTACT.c.phone == person.phone)).scalar()
            if contact_id is None:
                contact_id = conn.execute(
                    sa.insert(CONTACT)
                    .values(
                        phone=person.phone,
                        attributes=dict(person.attributes),
                        consent=person.consent,
                        suppressed_at=now if person.suppressed else None,
                        marketing_deferred_until=person.deferred_until,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(CONTACT.c.id)
                ).scalar_one()
            conn.execute(sa.insert(MEMBER).values(list_id=list_id, contact_id=contact_id, added_at=now))
    return int(list_id)


def people(start: int, stop: int, **attributes: Any) -> list[Person]:
    """Consenting Italian mobile numbers +39347000<n> with a first_name."""
    return [Person(f"+39347{n:07d}", {"first_name": f"N{n}", **attributes}) for n in range(start, stop)]

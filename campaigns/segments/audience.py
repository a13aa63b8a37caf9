"""Who a segment selects: conditions for queries, counts of a list, the members themselves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import NotFoundError
from campaigns.core.models import CONTACT_LIST_TABLE as LISTS
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.segments.compiler import Condition, compile_segment
from campaigns.segments.parser import parse


def segment_condition(
    engine: Engine, expression: str | None, *, now: datetime | None = None
) -> Condition | None:
    """The condition on the contact table for `expression` (None: no segment, everyone)."""
    if expression is None:
        return None
    return compile_segment(parse(expression), dialect=engine.dialect.name, now=now or utcnow())


def list_id_of(engine: Engine, name: str) -> int:
    """The id of the contact list called `name`, or NotFoundError."""
    with engine.connect() as conn:
        found = conn.execute(sa.select(LISTS.c.id).where(LISTS.c.name == name)).scalar()
    if found is None:
        raise NotFoundError(f"no contact list named {name!r} (see `wacamp contacts lists`)")
    return int(found)


@dataclass(frozen=True)
class SegmentCount:
    """How many members of a list a segment keeps and drops."""

    members: int
    kept: int

    @property
    def dropped(self) -> int:
        return self.members - self.kept


def _members(list_id: int) -> sa.Select[Any]:
    return (
        sa.select(sa.func.count())
        .select_from(MEMBER.join(CONTACT, CONTACT.c.id == MEMBER.c.contact_id))
        .where(MEMBER.c.list_id == list_id)
    )


def count_segment(
    engine: Engine, list_id: int, expression: str | None, *, now: datetime | None = None
) -> SegmentCount:
    """Members of the list, and how many of them `expression` keeps."""
    condition = segment_condition(engine, expression, now=now)
    with engine.connect() as conn:
        members = int(conn.execute(_members(list_id)).scalar_one())
        kept = (
            members
            if condition is None
            else int(conn.execute(_members(list_id).where(condition)).scalar_one())
        )
    return SegmentCount(members=members, kept=kept)


def segment_members(
    engine: Engine, list_id: int, expression: str | None, *, now: datetime | None = None, batch: int = 5000
) -> Iterator[Any]:
    """The list's members `expression` keeps (phone, consent, attributes, suppressed_at), by contact id."""
    condition = segment_condition(engine, expression, now=now)
    query = (
        sa.select(
            CONTACT.c.id, CONTACT.c.phone, CONTACT.c.consent, CONTACT.c.attributes, CONTACT.c.suppressed_at
        )
        .select_from(MEMBER.join(CONTACT, CONTACT.c.id == MEMBER.c.contact_id))
        .where(MEMBER.c.list_id == list_id)
        .order_by(CONTACT.c.id)
    )
    if condition is not None:
        query = query.where(condition)
    after = 0
    while True:
        with engine.connect() as conn:
            rows = list(conn.execute(query.where(CONTACT.c.id > after).limit(batch)))
        yield from rows
        if len(rows) < batch:
            return
        after = int(rows[-1].id)

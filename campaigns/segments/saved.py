"""Saved segments: a name for a `--where` expression, checked before it is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import NotFoundError, UserError
from campaigns.core.models import SEGMENT_TABLE as SEGMENT
from campaigns.segments.parser import parse


@dataclass(frozen=True)
class SavedSegment:
    """One saved segment."""

    name: str
    expression: str
    created_at: datetime
    updated_at: datetime


def _of(row: Any) -> SavedSegment:
    return SavedSegment(row.name, row.expression, row.created_at, row.updated_at)


_COLUMNS = (SEGMENT.c.name, SEGMENT.c.expression, SEGMENT.c.created_at, SEGMENT.c.updated_at)


def save_segment(engine: Engine, name: str, expression: str, *, replace: bool = False) -> SavedSegment:
    """Store `expression` under `name` (parsed first: a bad one is refused and nothing is stored)."""
    if not name.strip() or len(name) > 200:
        raise UserError("a segment name is 1 to 200 characters")
    parse(expression)
    now = utcnow()
    with write_transaction(engine) as conn:
        exists = conn.execute(sa.select(SEGMENT.c.id).where(SEGMENT.c.name == name)).first() is not None
        if exists and not replace:
            raise UserError(f"segment {name!r} exists (use --replace to change its expression)")
        if exists:
            conn.execute(
                sa.update(SEGMENT).where(SEGMENT.c.name == name).values(expression=expression, updated_at=now)
            )
        else:
            conn.execute(
                sa.insert(SEGMENT).values(name=name, expression=expression, created_at=now, updated_at=now)
            )
    return find_segment(engine, name)


def find_segment(engine: Engine, name: str) -> SavedSegment:
    """The saved segment called `name`, or NotFoundError."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(*_COLUMNS).where(SEGMENT.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"no segment named {name!r} (see `wacamp segments list`)")
    return _of(row)


def list_segments(engine: Engine) -> list[SavedSegment]:
    """Every saved segment, by name."""
    with engine.connect() as conn:
        return [_of(row) for row in conn.execute(sa.select(*_COLUMNS).order_by(SEGMENT.c.name))]


def delete_segment(engine: Engine, name: str) -> None:
    """Forget a saved segment (campaigns created with it keep their copy of the expression)."""
    with write_transaction(engine) as conn:
        deleted = conn.execute(sa.delete(SEGMENT).where(SEGMENT.c.name == name)).rowcount
    if not deleted:
        raise NotFoundError(f"no segment named {name!r} (see `wacamp segments list`)")

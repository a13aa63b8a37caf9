"""Contact effects: the one place that opts a contact out (suppression) or holds marketing to it (deferral).

Whoever asks (`contacts optout`, a send refused with 131050 or 131049, a webhook status, an inbound
STOP, a user_preferences event), the same rules hold:

- a suppression keeps the FIRST time and reason: suppressing an opted-out contact changes nothing;
- a 131049 marketing deferral only ever EXTENDS: an earlier end than the current one changes nothing;
- opting in (`contacts optin`) clears any suppression and records consent; a platform "resume" lifts
  only the platform's own stops (`is_platform_stop`), never an opt-out a person asked for.

Reasons come from one vocabulary (`platform_opt_out_reason`, `keyword_opt_out_reason`,
`PREFERENCES_STOP_REASON`, or the free text someone typed), cut to the column's 200 characters.

Every function is a SQLAlchemy Core statement on the caller's `Connection`, inside the caller's
transaction (nothing here commits), and works on a whole batch of contact ids or phone numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.models import CONTACT_TABLE as _contact

#: `contact.suppression_reason` holds at most this many characters.
REASON_MAX_CHARS = 200
#: Ids or numbers per statement: well under SQLite's bound-parameter limit.
CHUNK_ROWS = 1000

#: A 131050 refusal or failed status (the platform says the person stopped marketing messages).
PLATFORM_OPT_OUT_PREFIX = "131050"
#: A user_preferences webhook with value "stop".
PREFERENCES_STOP_REASON = "user_preferences: stop"
#: An inbound message whose text or button payload is an opt-out keyword.
KEYWORD_OPT_OUT_PREFIX = "opt-out:"
#: Reasons a user_preferences "resume" lifts. "(131050)" is how sends spelled it before this module.
PLATFORM_STOP_PREFIXES = ("user_preferences", PLATFORM_OPT_OUT_PREFIX, f"({PLATFORM_OPT_OUT_PREFIX})")

T = TypeVar("T")


def platform_opt_out_reason(code: int | None, title: str | None) -> str:
    """The reason recorded for a 131050 (send refused or status failed): ``"131050 <title>"``."""
    label = PLATFORM_OPT_OUT_PREFIX if code is None else str(code)
    return f"{label} {title or 'user stopped marketing messages'}"[:REASON_MAX_CHARS]


def keyword_opt_out_reason(said: str | None) -> str:
    """The reason recorded for an inbound opt-out keyword or button: ``"opt-out: <what they sent>"``."""
    return f"{KEYWORD_OPT_OUT_PREFIX} {said or ''}".rstrip()[:REASON_MAX_CHARS]


def is_platform_stop(reason: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL: the suppression reason is one the platform set (so its "resume" may lift it)."""
    return sa.or_(*(reason.startswith(prefix) for prefix in PLATFORM_STOP_PREFIXES))


def suppress_contacts(
    conn: Connection, contact_ids: Iterable[int], *, reason: str | None, at: datetime, now: datetime
) -> int:
    """Opt out these contacts (by id) as of `at`; how many were not opted out before.

    A contact already opted out keeps its first time and reason (and its `updated_at`).
    """
    changed = 0
    for chunk in _chunks(sorted(set(contact_ids))):
        changed += _suppress_where(conn, _contact.c.id.in_(chunk), reason=reason, at=at, now=now)
    return changed


def suppress_phones(
    conn: Connection, phones: Iterable[str], *, reason: str | None, at: datetime, now: datetime
) -> int:
    """Opt out the contacts with these E.164 numbers as of `at`; numbers that are no contact are ignored.

    How many were not opted out before (see `suppress_contacts`; `record_opt_outs` also creates).
    """
    changed = 0
    for chunk in _chunks(sorted(set(phones))):
        changed += _suppress_where(conn, _contact.c.phone.in_(chunk), reason=reason, at=at, now=now)
    return changed


@dataclass
class OptOutCounts:
    """What `record_opt_outs` did: newly opted out (created included), already opted out, created."""

    opted_out: int = 0
    already: int = 0
    created: int = 0


def record_opt_outs(
    conn: Connection, phones: Iterable[str], *, reason: str | None, now: datetime
) -> OptOutCounts:
    """Opt out these E.164 numbers now, creating the ones that are no contact yet.

    A created contact is suppressed, without consent and in no list, so a later import cannot make
    it sendable. A contact already opted out keeps its first time and reason.
    """
    counts = OptOutCounts()
    for chunk in _chunks(sorted(set(phones))):
        known = _opted_out_flags(conn, chunk)
        counts.created += len(chunk) - len(known)
        counts.already += sum(1 for opted_out in known.values() if opted_out)
        counts.opted_out += sum(1 for opted_out in known.values() if not opted_out)
        _upsert_suppressed(conn, chunk, reason=reason, now=now)
    counts.opted_out += counts.created
    return counts


def clear_suppression(conn: Connection, phones: Iterable[str], *, now: datetime) -> int:
    """Opt these numbers back in: suppression cleared, consent given now (an earlier consent time kept).

    How many contacts were written; numbers that are no contact are ignored.
    """
    written = 0
    keep_since = sa.and_(_contact.c.consent, _contact.c.consent_at.is_not(None))
    for chunk in _chunks(sorted(set(phones))):
        result = conn.execute(
            sa.update(_contact)
            .where(_contact.c.phone.in_(chunk))
            .values(
                suppressed_at=None,
                suppression_reason=None,
                consent=True,
                consent_at=sa.case((keep_since, _contact.c.consent_at), else_=sa.literal(now, UTCDateTime())),
                updated_at=now,
            )
        )
        written += result.rowcount
    return written


def lift_platform_stop(
    conn: Connection, phones: Iterable[str], *, stopped_by: datetime, now: datetime
) -> int:
    """A user_preferences "resume": lift the platform's stops set at or before `stopped_by`.

    An opt-out a person asked for (a keyword, `contacts optout`) stays. How many were lifted.
    """
    lifted = 0
    for chunk in _chunks(sorted(set(phones))):
        result = conn.execute(
            sa.update(_contact)
            .where(
                _contact.c.phone.in_(chunk),
                is_platform_stop(_contact.c.suppression_reason),
                _contact.c.suppressed_at <= stopped_by,
            )
            .values(suppressed_at=None, suppression_reason=None, updated_at=now)
        )
        lifted += result.rowcount
    return lifted


def defer_marketing(conn: Connection, contact_ids: Iterable[int], *, until: datetime, now: datetime) -> int:
    """Hold marketing to these contacts (131049) until `until`; how many deferrals moved.

    A deferral only ever extends: a contact already deferred past `until` keeps its later end.
    """
    current = _contact.c.marketing_deferred_until
    moved = 0
    for chunk in _chunks(sorted(set(contact_ids))):
        result = conn.execute(
            sa.update(_contact)
            .where(_contact.c.id.in_(chunk), sa.or_(current.is_(None), current < until))
            .values(marketing_deferred_until=until, updated_at=now)
        )
        moved += result.rowcount
    return moved


def _suppress_where(
    conn: Connection, where: sa.ColumnElement[bool], *, reason: str | None, at: datetime, now: datetime
) -> int:
    result = conn.execute(
        sa.update(_contact)
        .where(where, _contact.c.suppressed_at.is_(None))
        .values(suppressed_at=at, suppression_reason=_cut(reason), updated_at=now)
    )
    return result.rowcount


def _upsert_suppressed(conn: Connection, phones: list[str], *, reason: str | None, now: datetime) -> None:
    dialect_insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    stmt = cast(Callable[[sa.Table], Any], dialect_insert)(_contact)
    first = _contact.c.suppressed_at.is_(None)
    rows: list[dict[str, Any]] = [
        {
            "phone": phone,
            "attributes": {},
            "consent": False,
            "suppressed_at": now,
            "suppression_reason": _cut(reason),
            "created_at": now,
            "updated_at": now,
        }
        for phone in phones
    ]
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[_contact.c.phone],
            set_={
                "suppressed_at": sa.func.coalesce(_contact.c.suppressed_at, stmt.excluded.suppressed_at),
                "suppression_reason": sa.case(
                    (first, stmt.excluded.suppression_reason), else_=_contact.c.suppression_reason
                ),
                "updated_at": sa.case((first, stmt.excluded.updated_at), else_=_contact.c.updated_at),
            },
        ),
        rows,
    )


def _opted_out_flags(conn: Connection, phones: list[str]) -> dict[str, bool]:
    query = sa.select(_contact.c.phone, _contact.c.suppressed_at).where(_contact.c.phone.in_(phones))
    return {phone: suppressed_at is not None for phone, suppressed_at in conn.execute(query)}


def _cut(reason: str | None) -> str | None:
    return None if reason is None else reason[:REASON_MAX_CHARS]


def _chunks(items: Sequence[T]) -> Iterator[list[T]]:
    for start in range(0, len(items), CHUNK_ROWS):
        yield list(items[start : start + CHUNK_ROWS])

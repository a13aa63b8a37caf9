"""The one writer of contact effects: suppression keeps the first reason and time, deferral only extends.

Every test runs on SQLite and on PostgreSQL (real, migrated databases).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.contacts import effects
from campaigns.core.db import write_transaction
from campaigns.core.models import CONTACT_TABLE as CONTACT

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MARIO, LUCIA, NEW = "+393331234567", "+393471112223", "+393209998887"


def add_contacts(engine: Engine, *phones: str) -> list[int]:
    """Consenting contacts, in no list; their ids in the order given."""
    rows = [
        {"phone": p, "attributes": {}, "consent": True, "created_at": T0, "updated_at": T0} for p in phones
    ]
    with write_transaction(engine) as conn:
        conn.execute(sa.insert(CONTACT), rows)
        found = {phone: id_ for phone, id_ in conn.execute(sa.select(CONTACT.c.phone, CONTACT.c.id))}
    return [found[p] for p in phones]


def contact(engine: Engine, phone: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(CONTACT).where(CONTACT.c.phone == phone)).mappings().one()
    return dict(row)


def test_a_deferral_only_extends_never_shortens(engine: Engine) -> None:
    mario, lucia = add_contacts(engine, MARIO, LUCIA)
    later, sooner = T0 + timedelta(hours=48), T0 + timedelta(hours=24)
    with write_transaction(engine) as conn:
        first = effects.defer_marketing(conn, [mario], until=later, now=T0)
    with write_transaction(engine) as conn:
        shorter = effects.defer_marketing(conn, [mario, lucia], until=sooner, now=T0 + timedelta(hours=1))
    assert (first, shorter) == (1, 1)  # the second call moved only Lucia's
    assert contact(engine, MARIO)["marketing_deferred_until"] == later
    assert contact(engine, MARIO)["updated_at"] == T0
    assert contact(engine, LUCIA)["marketing_deferred_until"] == sooner
    with write_transaction(engine) as conn:
        longer = effects.defer_marketing(conn, [mario], until=later + timedelta(hours=1), now=T0)
    assert longer == 1 and contact(engine, MARIO)["marketing_deferred_until"] == later + timedelta(hours=1)


def test_a_suppression_keeps_the_first_reason_and_time_by_id_and_by_phone(engine: Engine) -> None:
    (mario,) = add_contacts(engine, MARIO)
    first = effects.platform_opt_out_reason(131050, "User's number is part of an experiment")
    with write_transaction(engine) as conn:
        by_id = effects.suppress_contacts(conn, [mario, mario], reason=first, at=T0, now=T0)
    with write_transaction(engine) as conn:
        again_by_id = effects.suppress_contacts(conn, [mario], reason="later", at=T0 + timedelta(1), now=T0)
        by_phone = effects.suppress_phones(
            conn, [MARIO, NEW], reason=effects.PREFERENCES_STOP_REASON, at=T0 + timedelta(2), now=T0
        )
    assert (by_id, again_by_id, by_phone) == (1, 0, 0)
    row = contact(engine, MARIO)
    assert (row["suppressed_at"], row["suppression_reason"]) == (T0, first)
    assert first == "131050 User's number is part of an experiment"
    with engine.connect() as conn:  # suppress_phones never creates a contact
        assert conn.execute(sa.select(sa.func.count()).where(CONTACT.c.phone == NEW)).scalar() == 0


def test_recorded_opt_outs_create_unknown_numbers_and_keep_the_first_reason(engine: Engine) -> None:
    add_contacts(engine, MARIO)
    with write_transaction(engine) as conn:
        first = effects.record_opt_outs(conn, [MARIO, NEW, NEW], reason="asked by phone", now=T0)
    with write_transaction(engine) as conn:
        second = effects.record_opt_outs(conn, [MARIO, LUCIA], reason="x" * 300, now=T0 + timedelta(1))
    assert (first.opted_out, first.already, first.created) == (2, 0, 1)
    assert (second.opted_out, second.already, second.created) == (1, 1, 1)
    for phone in (MARIO, NEW):
        row = contact(engine, phone)
        assert (row["suppressed_at"], row["suppression_reason"], row["updated_at"]) == (
            T0,
            "asked by phone",
            T0,
        )
    assert contact(engine, NEW)["consent"] is False
    assert contact(engine, LUCIA)["suppression_reason"] == "x" * effects.REASON_MAX_CHARS


def test_a_platform_resume_lifts_only_the_platforms_stops(engine: Engine) -> None:
    add_contacts(engine, MARIO, LUCIA, NEW)
    reasons = {
        MARIO: effects.platform_opt_out_reason(131050, None),
        LUCIA: effects.keyword_opt_out_reason("STOP"),
        NEW: "(131050) written by a send before contact effects had one vocabulary",
    }
    with write_transaction(engine) as conn:
        for phone, reason in reasons.items():
            effects.suppress_phones(conn, [phone], reason=reason, at=T0, now=T0)
    with write_transaction(engine) as conn:
        too_early = effects.lift_platform_stop(conn, list(reasons), stopped_by=T0 - timedelta(1), now=T0)
        lifted = effects.lift_platform_stop(conn, list(reasons), stopped_by=T0, now=T0)
    assert (too_early, lifted) == (0, 2)
    assert contact(engine, MARIO)["suppressed_at"] is None and contact(engine, NEW)["suppressed_at"] is None
    assert contact(engine, LUCIA)["suppression_reason"] == "opt-out: STOP"


def test_clearing_a_suppression_gives_consent_and_keeps_an_earlier_consent_time(engine: Engine) -> None:
    add_contacts(engine, MARIO)
    with write_transaction(engine) as conn:
        conn.execute(sa.update(CONTACT).values(consent_at=T0))
        effects.record_opt_outs(conn, [MARIO, NEW], reason=None, now=T0)
    with write_transaction(engine) as conn:
        written = effects.clear_suppression(conn, [MARIO, NEW, LUCIA], now=T0 + timedelta(1))
    assert written == 2
    mario, new = contact(engine, MARIO), contact(engine, NEW)
    assert (mario["suppressed_at"], mario["consent"], mario["consent_at"]) == (None, True, T0)
    assert (new["suppressed_at"], new["consent"], new["consent_at"]) == (None, True, T0 + timedelta(1))


def test_bulk_calls_span_more_ids_than_one_statement_takes(engine: Engine) -> None:
    phones = [f"+3933300{n:05d}" for n in range(effects.CHUNK_ROWS + 5)]
    ids = add_contacts(engine, *phones)
    with write_transaction(engine) as conn:
        suppressed = effects.suppress_contacts(conn, ids, reason="bulk", at=T0, now=T0)
        deferred = effects.defer_marketing(conn, ids, until=T0 + timedelta(1), now=T0)
    assert (suppressed, deferred) == (len(ids), len(ids))

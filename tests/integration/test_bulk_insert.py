"""Bulk inserts keep ON CONFLICT DO NOTHING (COPY on PostgreSQL), and planning's writer thread (issue #17)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import campaigns.planning.planner as planner
from campaigns.core.bulk import insert_ignoring_conflicts
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.definitions import CampaignDefinition, create_campaign
from tests.campaign_seed import PROMO, people, seed_list, seed_templates


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # no ./wacamp.toml of the developer's
    return load_settings(environ={})[0]


def _campaign(engine: Engine, settings: Settings, name: str = "spring") -> int:
    definition = CampaignDefinition(
        name=name,
        list_name="spring",
        template_name="promo",
        language="it",
        params={"1": "{first_name}", "2": "SPRING20"},
        button_payloads={"0": "STOP"},
    )
    return int(create_campaign(engine, settings=settings, definition=definition).id or 0)


def _row(message_id: int, contact_id: int, dedup: str | None) -> dict[str, Any]:
    return {
        "id": message_id,
        "contact_id": contact_id,
        "phone": f"+39347{contact_id:07d}",
        "content_hash": dedup or "",
        "dedup_hash": dedup,
        "state": "planned" if dedup else "skipped",
        "next_attempt_at": None,
    }


def _ledger(engine: Engine) -> list[tuple[Any, ...]]:
    columns = (MESSAGE.c.id, MESSAGE.c.contact_id, MESSAGE.c.dedup_hash, MESSAGE.c.campaign_id)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*columns, MESSAGE.c.planned_at).order_by("id"))]


def test_rows_that_break_a_unique_constraint_are_left_out_and_the_rest_get_the_constants(
    engine: Engine, settings: Settings
) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(1, 6))
    campaign_id = _campaign(engine, settings)
    at = utcnow()
    constants = {"campaign_id": campaign_id, "planned_at": at, "updated_at": at}
    with write_transaction(engine) as conn:
        insert_ignoring_conflicts(conn, MESSAGE, [_row(1, 1, "h1"), _row(2, 2, "h2")], constants=constants)
    batch = [_row(3, 1, "h1"), _row(4, 3, "h3"), _row(5, 2, None), _row(6, 4, "h4")]  # 3 and 5 conflict
    with write_transaction(engine) as conn:
        written = insert_ignoring_conflicts(conn, MESSAGE, batch, constants=constants, returning=MESSAGE.c.id)
    if engine.dialect.name == "postgresql":
        assert sorted(written or []) == [4, 6]
    else:
        assert written is None  # SQLite's executemany cannot say: the caller reads back
    assert [(i, c, d, k) for i, c, d, k, _ in _ledger(engine)] == [
        (1, 1, "h1", campaign_id),
        (2, 2, "h2", campaign_id),
        (4, 3, "h3", campaign_id),
        (6, 4, "h4", campaign_id),
    ]
    assert {planned_at for *_, planned_at in _ledger(engine)} == {at}


def test_a_rolled_back_bulk_insert_leaves_nothing(engine: Engine, settings: Settings) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(1, 3))
    campaign_id = _campaign(engine, settings)
    at = utcnow()
    constants = {"campaign_id": campaign_id, "planned_at": at, "updated_at": at}
    with pytest.raises(RuntimeError), write_transaction(engine) as conn:
        insert_ignoring_conflicts(conn, MESSAGE, [_row(1, 1, "h1"), _row(2, 2, "h2")], constants=constants)
        raise RuntimeError("crash after the insert")
    assert _ledger(engine) == []
    with write_transaction(engine) as conn:  # and the same rows go in afterwards (no temp table left)
        insert_ignoring_conflicts(conn, MESSAGE, [_row(1, 1, "h1")], constants=constants)
    assert len(_ledger(engine)) == 1


def test_a_chunk_that_fails_to_write_stops_planning_with_its_error_and_later_chunks_are_not_written(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_templates(engine, PROMO)
    seed_list(engine, "spring", people(0, 20))
    campaign_id = _campaign(engine, settings)
    real_write = planner._write_chunk
    calls = []

    def failing_second_write(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(planner, "_write_chunk", failing_second_write)
    with pytest.raises(RuntimeError, match="disk full"):
        planner.plan_campaign(engine, settings=settings, campaign=campaign_id, chunk_size=4)
    assert len(calls) == 2  # the third chunk was built while the second was written, never handed over
    assert [contact for _, contact, *_ in _ledger(engine)] == [1, 2, 3, 4]  # chunk 1 only (0 is id 1)
    monkeypatch.setattr(planner, "_write_chunk", real_write)
    outcome = planner.plan_campaign(engine, settings=settings, campaign=campaign_id, chunk_size=4)
    assert outcome.planned == 16  # planning again finishes the job, nothing twice


def test_plain_rows_reach_the_right_columns_whatever_the_order_of_their_keys(engine: Engine) -> None:
    from campaigns.core.bulk import executemany_plain, sql_literal
    from campaigns.core.models import CONTACT_LIST_TABLE as LIST

    at = utcnow()
    with write_transaction(engine) as conn:
        stmt = sa.insert(LIST).values(created_at=sql_literal(conn, at, LIST.c.created_at.type))
        executemany_plain(conn, stmt, [{"name": "b", "id": 7}, {"name": "a", "id": 3}])
        executemany_plain(conn, stmt, [])
        bound = sa.insert(LIST).values(created_at=at)  # a value bound in the statement: the ordinary path
        executemany_plain(conn, bound, [{"name": "c", "id": 9}])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(LIST.c.id, LIST.c.name, LIST.c.created_at).order_by(LIST.c.id)).all()
    assert [tuple(r) for r in rows] == [(3, "a", at), (7, "b", at), (9, "c", at)]

"""The hot statements of many workers stay on indexes on a big PostgreSQL ledger (EXPLAIN, after ANALYZE).

A ledger of a few hundred thousand rows, mostly finished, with the current campaign half sent: the
planner then chooses exactly as it would with tens of millions (a sequential scan would read them all).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.caps import CapRule
from campaigns.core.db import make_engine, upgrade
from campaigns.core.dbtypes import utcnow
from campaigns.core.frequency_cap import parse_cap
from campaigns.core.models import MessageState
from scheduler.runs.reaper import expired_leases
from scheduler.sending import ledger
from scheduler.sending.budget import TierBudget
from scheduler.sending.caps import claimable
from scheduler.webhooks.status_updates import _progress_statement
from tests.dispatch_support import seed_campaign

OLD_ROWS = 300_000
CURRENT_ROWS = 40_000

pytestmark = pytest.mark.postgres


def plan_of(conn: Connection, statement: Any, params: dict[str, Any] | None = None) -> str:
    """``EXPLAIN`` of a Core statement with its parameters (planned, never run)."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    rows = conn.exec_driver_sql("EXPLAIN " + str(compiled), {**compiled.params, **(params or {})})
    return "\n".join(row[0] for row in rows)


def uses_indexes_only(plan: str, table: str = "message") -> bool:
    return f"Seq Scan on {table}" not in plan and "Index" in plan


@pytest.fixture(scope="module")
def big_ledger() -> Iterator[tuple[Engine, int]]:
    """An old campaign of OLD_ROWS finished rows and a current one half sent, analyzed."""
    from tests.conftest import _fresh_postgres_database

    urls = _fresh_postgres_database()
    url = next(urls)
    engine = make_engine(url)
    upgrade(engine)
    old = seed_campaign(engine, recipients=0, name="old")
    current = seed_campaign(engine, recipients=0, name="current")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO contact (phone, attributes, consent, created_at, updated_at) "
            "SELECT '+3933' || lpad(g::text, 8, '0'), '{}', true, now(), now() "
            f"FROM generate_series(1, {OLD_ROWS}) g"
        )
        conn.exec_driver_sql(_ledger_rows(old, limit=OLD_ROWS, planned_from=OLD_ROWS + 1))
        conn.exec_driver_sql(_ledger_rows(current, limit=CURRENT_ROWS, planned_from=CURRENT_ROWS // 2))
        conn.exec_driver_sql(
            "INSERT INTO tier_usage (portfolio, phone, counted_at) "
            "SELECT 'acme', phone, now() - mod(id, 50) * interval '1 day' - interval '1 hour' "
            f"FROM contact LIMIT {OLD_ROWS}"
        )
        conn.exec_driver_sql("ANALYZE")
    try:
        yield engine, current
    finally:
        engine.dispose()
        for _ in urls:  # drops the database
            pass


def _ledger_rows(campaign_id: int, *, limit: int, planned_from: int) -> str:
    """Rows for the first `limit` contacts: accepted (with a wamid) up to `planned_from`, planned after."""
    state = f"CASE WHEN n < {planned_from} THEN 'accepted' ELSE 'planned' END"
    return (
        "INSERT INTO message (campaign_id, contact_id, phone, content_hash, dedup_hash, state, body, "
        "attempts, wamid, planned_at, updated_at) "
        f"SELECT {campaign_id}, id, phone, 'h{campaign_id}', 'h{campaign_id}', {state}, '{{}}', 0, "
        f"CASE WHEN n < {planned_from} THEN 'wamid.{campaign_id}.' || n END, now(), now() "
        f"FROM (SELECT id, phone, row_number() OVER (ORDER BY id) AS n FROM contact) c WHERE n <= {limit}"
    )


def test_the_claim_of_a_half_sent_campaign_reads_an_index_not_the_ledger(
    big_ledger: tuple[Engine, int],
) -> None:
    engine, current = big_ledger
    ids = ledger.due_ids(campaign_id=current, now=utcnow(), limit=200, extra=None)
    with engine.connect() as conn:
        plan = plan_of(conn, ids.with_for_update(skip_locked=True, of=ledger.MESSAGE))
    # Neither every ledger row nor every contact is read, and the planned rows come in id order
    # from their partial index instead of a walk along the primary key past the rows already sent.
    assert uses_indexes_only(plan) and "Seq Scan on contact" not in plan, plan
    assert "ix_message_planned" in plan and "message_pkey" not in plan, plan


def test_the_reaper_and_the_lease_renewal_read_the_lease_index(big_ledger: tuple[Engine, int]) -> None:
    engine, _ = big_ledger
    with engine.connect() as conn:
        reaper = plan_of(conn, expired_leases(now=utcnow(), limit=5000))
        renewal = plan_of(
            conn,
            sa.select(ledger.m.id).where(ledger.m.state == ledger.SENDING, ledger.m.lease_owner == "w"),
        )
    assert uses_indexes_only(reaper) and "ix_message_lease" in reaper, reaper
    assert uses_indexes_only(renewal), renewal


def test_the_tier_budget_count_and_free_filter_use_the_window_index(big_ledger: tuple[Engine, int]) -> None:
    engine, _ = big_ledger
    budget = TierBudget(portfolio="acme", limit=100_000, window_s=24 * 3600)
    now = utcnow()
    with engine.connect() as conn:
        used = plan_of(
            conn,
            sa.select(sa.func.count())
            .where(sa.column("portfolio") == "acme", sa.column("counted_at") > now - timedelta(hours=24))
            .select_from(sa.table("tier_usage")),
        )
        free = plan_of(conn, sa.select(ledger.m.id).where(budget.free_filter(now), ledger.m.id < 100))
    assert uses_indexes_only(used, "tier_usage") and "ix_tier_usage_window" in used, used
    assert "Seq Scan on message" not in free, free


def test_webhook_lookups_by_message_id_and_by_wamid_use_indexes(big_ledger: tuple[Engine, int]) -> None:
    engine, _ = big_ledger
    params = {
        "b_id": 12345,
        "b_wamid": "wamid.1.77",
        "b_at": utcnow(),
        "b_now": utcnow(),
        "b_category": None,
        "b_billable": None,
    }
    with engine.connect() as conn:
        by_id = plan_of(conn, _progress_statement(MessageState.DELIVERED, by_id=True), params)
        by_wamid = plan_of(conn, _progress_statement(MessageState.DELIVERED, by_id=False), params)
    assert uses_indexes_only(by_id) and "message_pkey" in by_id, by_id
    assert uses_indexes_only(by_wamid) and "wamid" in by_wamid, by_wamid


def test_a_running_campaign_is_known_live_through_the_claim_index(big_ledger: tuple[Engine, int]) -> None:
    from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
    from scheduler.runs.due_campaigns import _due_filter

    engine, _ = big_ledger
    with engine.connect() as conn:
        plan = plan_of(conn, sa.select(CAMPAIGN.c.id).where(_due_filter(utcnow())))
    assert "Seq Scan on message" not in plan, plan


def test_the_frequency_cap_counts_a_contacts_rows_through_the_contact_index(
    big_ledger: tuple[Engine, int],
) -> None:
    """The claim of a capped campaign, with its cap condition: the next rows from the partial
    index, each contact's counted sends through (contact_id, dedup_hash), never the whole ledger."""
    engine, current = big_ledger
    cap = parse_cap("2/7d")
    assert cap is not None
    rule = CapRule(cap, "wait", "MARKETING", "acme", ("default",))
    ids = ledger.due_ids(campaign_id=current, now=utcnow(), limit=200, extra=claimable(rule, utcnow()))
    with engine.connect() as conn:
        plan = plan_of(conn, ids.with_for_update(skip_locked=True, of=ledger.MESSAGE))
    assert uses_indexes_only(plan) and "Seq Scan on contact" not in plan, plan
    assert "ix_message_planned" in plan and "uq_message_contact_dedup" in plan, plan

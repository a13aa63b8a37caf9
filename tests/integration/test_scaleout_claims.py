"""Workers sharing one ledger: claims never overlap, the tier budget is exact, dead leases are reaped."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import TIER_USAGE_TABLE as TIER_USAGE
from scheduler.runs.reaper import REAPED_TITLE, Reaper, reap
from scheduler.sending import ledger
from scheduler.sending.budget import TierBudget, claim_within_budget
from scheduler.sending.leases import PORTFOLIO_LOCK_SPACE, lock_portfolio
from tests.dispatch_support import seed_campaign, states

WORKERS = 6


def claim_until_empty(url: str, *, campaign_id: int, owner: str, start: threading.Barrier) -> list[int]:
    """One worker with its own engine (its own connections): claims batches of 7 until none is left."""
    engine = make_engine(url)
    claimed: list[int] = []
    try:
        start.wait()
        while True:
            with write_transaction(engine) as conn:
                rows = ledger.claim(
                    conn, campaign_id=campaign_id, owner=owner, limit=7, now=utcnow(), lease_s=60
                )
            if not rows:
                return claimed
            claimed += [row.id for row in rows]
    finally:
        engine.dispose()


def test_workers_claiming_side_by_side_never_hold_the_same_row(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    cid = seed_campaign(engine, recipients=700)
    start = threading.Barrier(WORKERS)
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [
            pool.submit(claim_until_empty, url, campaign_id=cid, owner=f"w{i}", start=start)
            for i in range(WORKERS)
        ]
        claims = {f"w{i}": future.result() for i, future in enumerate(futures)}
    every = [row_id for ids in claims.values() for row_id in ids]
    assert len(every) == 700 and len(set(every)) == 700, "a row was claimed twice"
    with engine.connect() as conn:
        owners = Counter(conn.scalars(sa.select(MESSAGE.c.lease_owner).where(MESSAGE.c.campaign_id == cid)))
    assert owners == Counter({owner: len(ids) for owner, ids in claims.items() if ids})
    assert states(engine, cid) == {"claimed": 700}


ONE_WRITER = "SQLite has one write transaction at a time: two claims can never be open together"


def test_a_claim_skips_rows_another_open_claim_holds_without_waiting_for_it(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip(ONE_WRITER)
    cid = seed_campaign(engine, recipients=30)
    with engine.connect() as first, first.begin():
        held = ledger.claim(first, campaign_id=cid, owner="a", limit=10, now=utcnow(), lease_s=60)
        with engine.connect() as second, second.begin():
            second.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            other = ledger.claim(second, campaign_id=cid, owner="b", limit=30, now=utcnow(), lease_s=60)
    assert {r.id for r in held}.isdisjoint({r.id for r in other})
    assert len(held) == 10 and len(other) == 20


def claim_budgeted(url: str, *, campaign_id: int, owner: str, start: threading.Barrier) -> list[str]:
    """One worker claiming under the shared portfolio budget until it gets nothing."""
    engine = make_engine(url)
    budget = TierBudget(portfolio="acme", limit=50, window_s=24 * 3600)
    phones: list[str] = []
    try:
        start.wait()
        while True:
            with write_transaction(engine) as conn:
                rows = claim_within_budget(
                    conn,
                    budget=budget,
                    campaign_id=campaign_id,
                    owner=owner,
                    limit=7,
                    now=utcnow(),
                    lease_s=60,
                )
            if not rows:
                return phones
            phones += [row.phone for row in rows]
    finally:
        engine.dispose()


def test_the_tier_budget_of_a_portfolio_is_spent_exactly_by_workers_claiming_at_once(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    # One campaign per worker, each to its own 100 recipients: 600 candidates for 50 places.
    campaigns = [
        seed_campaign(engine, recipients=100, name=f"c{i}", first_contact=1000 * i) for i in range(WORKERS)
    ]
    start = threading.Barrier(WORKERS)
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [
            pool.submit(claim_budgeted, url, campaign_id=cid, owner=f"w{i}", start=start)
            for i, cid in enumerate(campaigns)
        ]
        phones = [phone for future in futures for phone in future.result()]
    assert len(phones) == 50 and len(set(phones)) == 50
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(TIER_USAGE)) == 50


def try_portfolio_lock(conn: sa.Connection, portfolio: str) -> bool:
    query = sa.text("SELECT pg_try_advisory_xact_lock(:space, hashtext(:portfolio))")
    return bool(conn.scalar(query, {"space": PORTFOLIO_LOCK_SPACE, "portfolio": portfolio}))


def test_a_budgeted_claim_holds_its_portfolio_lock_until_it_commits(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip(ONE_WRITER)
    with engine.connect() as first, first.begin():
        lock_portfolio(first, "acme")
        with engine.connect() as second, second.begin():
            same, other = try_portfolio_lock(second, "acme"), try_portfolio_lock(second, "beta")
    with engine.connect() as third, third.begin():
        after = try_portfolio_lock(third, "acme")
    assert (same, other, after) == (False, True, True)


def test_the_reaper_turns_rows_of_expired_leases_into_unknown_and_leaves_live_ones(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=14)
    now = utcnow()
    then = now - timedelta(seconds=120)
    with write_transaction(engine) as conn:
        dead = ledger.claim(conn, campaign_id=cid, owner="dead", limit=7, now=then, lease_s=60)
        ledger.mark_sending(conn, owner="dead", message_ids=[r.id for r in dead[:5]], now=then)
        alive = ledger.claim(conn, campaign_id=cid, owner="alive", limit=4, now=now, lease_s=60)
        ledger.mark_sending(conn, owner="alive", message_ids=[r.id for r in alive], now=now)
    assert reap(engine, batch_rows=2) == 5  # the two claimed, never sent, went back to the queue
    assert states(engine, cid) == {"unknown": 5, "sending": 4, "planned": 5}
    with engine.connect() as conn:
        reaped = conn.execute(
            sa.select(MESSAGE.c.error_title, MESSAGE.c.lease_owner, MESSAGE.c.dedup_hash).where(
                MESSAGE.c.state == "unknown"
            )
        ).all()
        live = set(conn.scalars(sa.select(MESSAGE.c.lease_owner).where(MESSAGE.c.state == "sending")))
    assert {(title, owner) for title, owner, _ in reaped} == {(REAPED_TITLE, None)}
    assert all(dedup is not None for _, _, dedup in reaped), "an unknown row must still block a resend"
    assert live == {"alive"}
    assert reap(engine) == 0


def test_renewing_leases_skips_a_row_the_writer_holds_instead_of_waiting_for_it(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip(ONE_WRITER)
    cid = seed_campaign(engine, recipients=5)
    now = utcnow()
    with write_transaction(engine) as conn:
        rows = ledger.claim(conn, campaign_id=cid, owner="w", limit=5, now=now, lease_s=60)
    later = now + timedelta(seconds=120)
    with engine.connect() as writer, writer.begin():
        # The writer is applying an outcome to the first row (its transaction is still open).
        writer.execute(sa.update(MESSAGE).where(MESSAGE.c.id == rows[0].id).values(updated_at=now))
        with engine.connect() as renewer, renewer.begin():
            renewer.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            assert ledger.renew_leases(renewer, owner="w", until=later) == 4


async def test_a_workers_reaper_keeps_reaping_expired_leases_until_it_is_stopped(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=6)
    with write_transaction(engine) as conn:
        sent = ledger.claim(conn, campaign_id=cid, owner="dead", limit=3, now=utcnow(), lease_s=0.2)
        ledger.mark_sending(conn, owner="dead", message_ids=[r.id for r in sent], now=utcnow())
        ledger.claim(conn, campaign_id=cid, owner="dead", limit=3, now=utcnow(), lease_s=0.2)
    reaper = Reaper(engine, every_s=0.1)
    stop = asyncio.Event()
    running = asyncio.create_task(reaper.run(stop))
    for _ in range(100):
        if reaper.reaped == 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, timeout=5)
    assert reaper.reaped == 3
    assert states(engine, cid) == {"unknown": 3, "planned": 3}

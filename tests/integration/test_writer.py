"""The one writer task: batches, flush barriers, and no result lost on close or cancel."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CONTACT_TABLE as CONTACT
from scheduler.sending import ledger
from scheduler.sending.ledger_outcomes import Outcome, OutcomeKind
from scheduler.sending.writer import ContactAction, ResultWriter, WriteBatch, apply_batch
from tests.dispatch_support import seed_campaign, states


def _claimed(engine: Engine, campaign_id: int, n: int) -> list[int]:
    with write_transaction(engine) as conn:
        rows = ledger.claim(conn, campaign_id=campaign_id, owner="w", limit=n, now=utcnow(), lease_s=60)
        ledger.mark_sending(conn, owner="w", message_ids=[r.id for r in rows], now=utcnow())
    return [r.id for r in rows]


def _accepted(message_id: int) -> Outcome:
    return Outcome(OutcomeKind.ACCEPTED, message_id, utcnow(), wamid=f"w{message_id}")


async def test_results_are_written_in_batches_of_at_most_batch_rows(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=250)
    ids = _claimed(engine, cid, 250)
    writer = ResultWriter(engine, batch_rows=100, batch_ms=1000)
    writer.start()
    for message_id in ids:
        writer.put(_accepted(message_id))
    await writer.close()
    assert states(engine, cid) == {"accepted": 250}
    assert writer.written == 250 and writer.batches == 3


async def test_a_lone_result_is_written_within_batch_ms_and_flush_waits_for_the_commit(
    engine: Engine,
) -> None:
    cid = seed_campaign(engine, recipients=2)
    first, second = _claimed(engine, cid, 2)
    writer = ResultWriter(engine, batch_rows=500, batch_ms=50)
    writer.start()
    writer.put(_accepted(first))
    await asyncio.sleep(0.5)
    assert states(engine, cid) == {"accepted": 1, "sending": 1}
    writer.put(_accepted(second))
    await writer.flush()
    assert states(engine, cid) == {"accepted": 2}
    await writer.close()


async def test_cancelling_the_writer_still_writes_what_it_holds(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=30)
    ids = _claimed(engine, cid, 30)
    writer = ResultWriter(engine, batch_rows=500, batch_ms=10_000)
    task = writer.start()
    for message_id in ids:
        writer.put(_accepted(message_id))
    await asyncio.sleep(0.05)  # the writer holds them, waiting for a fuller batch
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert states(engine, cid) == {"accepted": 30}


def _contact_ids(engine: Engine, n: int) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(CONTACT.c.id).order_by(CONTACT.c.id).limit(n)).scalars())


def test_contact_actions_suppress_once_and_never_shorten_a_deferral(engine: Engine) -> None:
    seed_campaign(engine, recipients=3)
    first, second, third = _contact_ids(engine, 3)
    long_until = utcnow() + timedelta(hours=72)
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(CONTACT).where(CONTACT.c.id == first).values(marketing_deferred_until=long_until)
        )
    short_until = utcnow() + timedelta(hours=24)
    batch = WriteBatch()
    for contact_id in (first, second):
        batch.add(ContactAction.marketing_limited(contact_id, until=short_until))
    batch.add(ContactAction.opted_out(third, code=131050, title="experiment"))
    apply_batch(engine, batch)
    again = WriteBatch(contacts=[ContactAction(third, suppress_reason="(131050) another spelling")])
    apply_batch(engine, again)
    with engine.connect() as conn:
        rows = {
            r.id: r for r in conn.execute(sa.select(CONTACT).where(CONTACT.c.id.in_([first, second, third])))
        }
    assert rows[first].marketing_deferred_until == long_until
    assert rows[second].marketing_deferred_until == short_until
    assert rows[third].suppression_reason == "131050 experiment"

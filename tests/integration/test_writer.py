"""The one writer task: batches, flush barriers, and no result lost on close or cancel."""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from scheduler.sending import ledger
from scheduler.sending.ledger import Outcome, OutcomeKind
from scheduler.sending.writer import ResultWriter
from tests.dispatch_support import seed_campaign, states


def _claimed(engine: Engine, campaign_id: int, n: int) -> list[int]:
    with write_transaction(engine) as conn:
        rows = ledger.claim(conn, campaign_id=campaign_id, owner="w", limit=n, now=utcnow(), lease_s=60)
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

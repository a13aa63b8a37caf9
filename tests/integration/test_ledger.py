"""The ledger statements of the dispatcher, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import Contact, MessageState
from scheduler.sending import ledger, ledger_outcomes
from scheduler.sending.ledger_outcomes import Outcome, OutcomeKind
from tests.dispatch_support import rows, seed_campaign, states


def _claim(engine: Engine, campaign_id: int, *, limit: int, owner: str = "w1", now=None, mark=True):  # type: ignore[no-untyped-def]
    """Claim rows and (unless `mark` is False) mark them `sending`, as the dispatcher does before sending."""
    at = now or utcnow()
    with write_transaction(engine) as conn:
        claimed = ledger.claim(conn, campaign_id=campaign_id, owner=owner, limit=limit, now=at, lease_s=60)
        if mark:
            ledger.mark_sending(conn, owner=owner, message_ids=[r.id for r in claimed], now=at)
        return claimed


def test_claim_leases_due_planned_rows_in_id_order_without_saying_anything_about_the_wire(
    engine: Engine,
) -> None:
    cid = seed_campaign(engine, recipients=10)
    claimed = _claim(engine, cid, limit=4, mark=False)
    assert [r.id for r in claimed] == sorted(r.id for r in claimed)
    assert len(claimed) == 4 and all(r.attempts == 1 for r in claimed)
    by_id = {r.id: r for r in rows(engine, cid)}
    for row in claimed:
        stored = by_id[row.id]
        assert stored.state == MessageState.CLAIMED
        assert stored.lease_owner == "w1" and stored.sending_at is None and stored.claimed_at is not None
        assert stored.lease_expires_at > stored.claimed_at
    assert min(by_id) == claimed[0].id
    assert states(engine, cid) == {"claimed": 4, "planned": 6}


def test_a_claim_asked_to_mark_leases_its_rows_as_sending_in_the_same_statement(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=5)
    at = utcnow()
    with write_transaction(engine) as conn:
        claimed = ledger.claim(conn, campaign_id=cid, owner="w1", limit=3, now=at, lease_s=60, sending=True)
    assert len(claimed) == 3
    stored = [r for r in rows(engine, cid) if r.id in {c.id for c in claimed}]
    assert all(r.state == MessageState.SENDING and r.sending_at == r.claimed_at for r in stored)
    assert all(r.lease_owner == "w1" for r in stored)
    assert states(engine, cid) == {"sending": 3, "planned": 2}


def test_only_the_holder_marks_its_claimed_rows_sending_and_only_once(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=4)
    claimed = _claim(engine, cid, limit=3, owner="me", mark=False)
    ids = [r.id for r in claimed]
    with write_transaction(engine) as conn:
        assert ledger.mark_sending(conn, owner="other", message_ids=ids, now=utcnow()) == set()
        assert ledger.mark_sending(conn, owner="me", message_ids=ids[:2], now=utcnow()) == set(ids[:2])
        assert ledger.mark_sending(conn, owner="me", message_ids=ids, now=utcnow()) == {ids[2]}
    assert states(engine, cid) == {"sending": 3, "planned": 1}
    assert all(r.sending_at is not None for r in rows(engine, cid) if r.state == "sending")


def test_two_claims_never_share_a_row(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=10)
    first = _claim(engine, cid, limit=6, owner="a")
    second = _claim(engine, cid, limit=6, owner="b")
    assert len(first) == 6 and len(second) == 4
    assert not {r.id for r in first} & {r.id for r in second}
    assert _claim(engine, cid, limit=6) == []


def test_rows_not_yet_due_and_suppressed_or_deferred_contacts_are_not_claimed(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=4)
    all_rows = rows(engine, cid)
    now = utcnow()
    message_t = ledger.MESSAGE
    contact_t = Contact.__table__  # type: ignore[attr-defined]
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(message_t)
            .where(message_t.c.id == all_rows[0].id)
            .values(next_attempt_at=now + timedelta(minutes=5))
        )
        conn.execute(
            sa.update(contact_t).where(contact_t.c.id == all_rows[1].contact_id).values(suppressed_at=now)
        )
        conn.execute(
            sa.update(contact_t)
            .where(contact_t.c.id == all_rows[2].contact_id)
            .values(marketing_deferred_until=now + timedelta(hours=1))
        )
    claimed = _claim(engine, cid, limit=10, now=now)
    assert [r.id for r in claimed] == [all_rows[3].id]
    with write_transaction(engine) as conn:
        assert ledger.skip_suppressed(conn, campaign_id=cid, now=now) == 1
        assert ledger.defer_marketing_limited(conn, campaign_id=cid, now=now) == 1
        queue = ledger.queue_state(conn, campaign_id=cid, now=now)
    assert (queue.due, queue.later, queue.sending) == (0, 2, 1)
    assert queue.next_due_at is not None and queue.next_due_at - now == timedelta(minutes=5)
    skipped = rows(engine, cid)[1]
    assert skipped.state == "skipped" and skipped.skip_reason == "suppressed" and skipped.dedup_hash is None


def test_outcomes_keep_dedup_hash_null_exactly_for_failed_rows(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=4)
    a, b, c, d = _claim(engine, cid, limit=4)
    now = utcnow()
    with write_transaction(engine) as conn:
        ledger_outcomes.apply_outcomes(
            conn,
            [
                Outcome(OutcomeKind.ACCEPTED, a.id, now, wamid="wamid.A", message_status="accepted"),
                Outcome(OutcomeKind.FAILED, b.id, now, error_code=131026, error_title="undeliverable"),
                Outcome(OutcomeKind.UNKNOWN, c.id, now, error_title="reset"),
                Outcome(
                    OutcomeKind.REQUEUE,
                    d.id,
                    now,
                    next_attempt_at=now + timedelta(seconds=2),
                    error_code=130429,
                    refund_attempt=True,
                ),
            ],
        )
    got = {r.id: r for r in rows(engine, cid)}
    assert got[a.id].state == "accepted" and got[a.id].wamid == "wamid.A" and got[a.id].lease_owner is None
    assert got[b.id].state == "failed" and got[b.id].dedup_hash is None and got[b.id].error_code == 131026
    assert got[c.id].state == "unknown" and got[c.id].dedup_hash == got[c.id].content_hash
    assert got[d.id].state == "planned" and got[d.id].attempts == 0 and got[d.id].next_attempt_at is not None
    for row in got.values():
        assert (row.dedup_hash is None) == (row.state in ("failed", "skipped"))


def test_an_accepted_answer_never_moves_a_row_a_webhook_already_moved_on(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=1)
    (row,) = _claim(engine, cid, limit=1)
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(ledger.MESSAGE)
            .where(ledger.MESSAGE.c.id == row.id)
            .values(state="delivered", wamid="w")
        )
        ledger_outcomes.apply_outcomes(conn, [Outcome(OutcomeKind.ACCEPTED, row.id, utcnow(), wamid="w")])
    assert rows(engine, cid)[0].state == "delivered"


def test_release_gives_unsent_claims_back_without_counting_an_attempt(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=3)
    claimed = _claim(engine, cid, limit=3, owner="me")
    with write_transaction(engine) as conn:
        assert ledger.release(conn, owner="other", message_ids=[r.id for r in claimed], now=utcnow()) == 0
        assert ledger.release(conn, owner="me", message_ids=[r.id for r in claimed], now=utcnow()) == 3
    assert states(engine, cid) == {"planned": 3}
    assert all(r.attempts == 0 and r.lease_owner is None for r in rows(engine, cid))


def test_a_dead_holders_claimed_rows_go_back_to_planned_and_only_its_sending_rows_become_unknown(
    engine: Engine,
) -> None:
    cid = seed_campaign(engine, recipients=10)
    now = utcnow()
    _claim(engine, cid, limit=2, owner="dead-run", now=now, mark=False)  # lease live, but its run is dead
    _claim(engine, cid, limit=2, owner="alive", now=now, mark=False)
    _claim(engine, cid, limit=2, owner="alive", now=now)
    _claim(engine, cid, limit=2, owner="old", now=now - timedelta(minutes=5), mark=False)
    _claim(engine, cid, limit=2, owner="old", now=now - timedelta(minutes=5))
    with write_transaction(engine) as conn:
        recovered = ledger.recover_expired(conn, now=now, campaign_id=cid, dead_owners=["dead-run"])
    assert recovered == ledger.Recovered(returned=4, unknown=2)
    assert states(engine, cid) == {"planned": 4, "claimed": 2, "sending": 2, "unknown": 2}
    back = [r for r in rows(engine, cid) if r.state == "planned"]
    assert all(r.attempts == 0 and r.lease_owner is None and r.claimed_at is None for r in back)


def test_recovery_takes_at_most_limit_rows_and_leaves_live_leases_alone(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=6)
    now = utcnow()
    _claim(engine, cid, limit=5, owner="old", now=now - timedelta(minutes=5), mark=False)
    _claim(engine, cid, limit=1, owner="alive", now=now)
    with write_transaction(engine) as conn:
        assert ledger.recover_expired(conn, now=now, limit=3) == ledger.Recovered(returned=3)
        assert ledger.recover_expired(conn, now=now, limit=3) == ledger.Recovered(returned=2)
        assert ledger.recover_expired(conn, now=now, limit=3) == ledger.Recovered()
    assert states(engine, cid) == {"planned": 5, "sending": 1}


def test_resend_unknown_moves_only_old_unsettled_rows_back_to_planned(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=3)
    now = utcnow()
    old = _claim(engine, cid, limit=2, now=now - timedelta(hours=2))
    new = _claim(engine, cid, limit=1, now=now)
    with write_transaction(engine) as conn:
        ledger_outcomes.apply_outcomes(conn, [Outcome(OutcomeKind.UNKNOWN, r.id, now) for r in [*old, *new]])
        conn.execute(
            sa.update(ledger.MESSAGE).where(ledger.MESSAGE.c.id == old[1].id).values(wamid="settled")
        )
        assert ledger.count_unknown(conn, campaign_id=cid, older_than=now - timedelta(hours=1)) == (1, 2)
        assert ledger.resend_unknown(conn, campaign_id=cid, older_than=now - timedelta(hours=1), now=now) == 1
    got = {r.id: r for r in rows(engine, cid)}
    assert got[old[0].id].state == "planned" and got[old[0].id].dedup_hash == got[old[0].id].content_hash
    assert got[new[0].id].state == "unknown"


def test_renewing_leases_extends_only_the_owners_rows(engine: Engine) -> None:
    cid = seed_campaign(engine, recipients=2)
    now = utcnow()
    _claim(engine, cid, limit=1, owner="a", now=now)
    _claim(engine, cid, limit=1, owner="b", now=now)
    later = now + timedelta(minutes=10)
    with write_transaction(engine) as conn:
        assert ledger.renew_leases(conn, owner="a", until=later) == 1
    leases = {r.lease_owner: r.lease_expires_at for r in rows(engine, cid)}
    assert leases["a"] == later and leases["b"] < later

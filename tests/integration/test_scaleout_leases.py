"""Sender leases: one worker per sender, takeover after expiry with a send window's wait, fencing."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import SENDER_TABLE as SENDER
from campaigns.core.settings_sections import SenderSettings
from scheduler.sending.leases import (
    SEND_WINDOW_S,
    SenderLeases,
    fair_share,
    live_workers,
    register_senders,
    release,
    renew,
    try_acquire,
)
from scheduler.sending.locks import worker_lock
from tests.dispatch_support import seed_campaign

SHOP = SenderSettings(name="shop", phone_number_id="100000000000001", portfolio="acme")
NEWS = SenderSettings(name="news", phone_number_id="100000000000002", portfolio="acme")


def registered(engine: Engine) -> Engine:
    with write_transaction(engine) as conn:
        register_senders(conn, [SHOP, NEWS], now=utcnow())
        register_senders(conn, [SHOP], now=utcnow())  # twice: nothing changes
    return engine


def acquire(engine: Engine, owner: str, *, lease_s: float = 60.0) -> float | None:
    """The wait before the first send, or None when the lease is held by someone else."""
    with write_transaction(engine) as conn:
        grant = try_acquire(conn, sender="shop", owner=owner, lease_s=lease_s)
    return None if grant is None else grant.wait_s


def test_a_held_sender_is_refused_to_others_and_its_holder_takes_it_back_without_waiting(
    engine: Engine,
) -> None:
    registered(engine)
    assert acquire(engine, "a") == 0.0  # never held: no one can have sent for it
    assert acquire(engine, "b") is None
    assert acquire(engine, "a") == 0.0
    with write_transaction(engine) as conn:
        release(conn, sender="shop", owner="a")
    assert acquire(engine, "a") == 0.0  # the same process: its own limiter knows what it sent


def test_after_a_release_or_an_expiry_the_next_holder_waits_one_send_window(engine: Engine) -> None:
    registered(engine)
    acquire(engine, "a")
    with write_transaction(engine) as conn:
        release(conn, sender="shop", owner="a")
    wait_s = acquire(engine, "b", lease_s=0.2)
    assert wait_s is not None and 0.5 < wait_s <= SEND_WINDOW_S
    time.sleep(0.3)  # b's lease expires (b died)
    wait_s = acquire(engine, "c")
    assert wait_s is not None and wait_s <= SEND_WINDOW_S
    with write_transaction(engine) as conn:
        assert renew(conn, sender="shop", owner="b", lease_s=60) is None  # b lost it
        assert renew(conn, sender="shop", owner="c", lease_s=60) is not None
        row = conn.execute(
            sa.select(SENDER.c.lease_owner, SENDER.c.portfolio).where(SENDER.c.name == "shop")
        ).one()
    assert tuple(row) == ("c", "acme")


def test_a_worker_holds_at_most_its_fair_share_of_the_senders_with_work() -> None:
    assert fair_share(senders=3, workers=4) == 1
    assert fair_share(senders=8, workers=4) == 2
    assert fair_share(senders=9, workers=4) == 3
    assert fair_share(senders=0, workers=2) == 1
    assert fair_share(senders=5, workers=0) == 5


def test_live_workers_are_the_holders_of_the_shared_send_lock(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("one process sends per SQLite database: the count is always 1")
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            assert live_workers(conn) == 1  # nobody: never below one (this process)
        with worker_lock(engine), worker_lock(other), engine.connect() as conn:
            assert live_workers(conn) == 2
        with engine.connect() as conn:
            assert live_workers(conn) == 1
    finally:
        other.dispose()


async def test_a_second_worker_gets_the_sender_only_after_the_first_lets_go_and_a_send_window(
    engine: Engine,
) -> None:
    seed_campaign(engine, recipients=1, sender_name="shop")
    seed_campaign(engine, recipients=1, name="news-c", sender_name="news", first_contact=10)
    first = SenderLeases(engine, owner="first", lease_s=30, senders=[SHOP, NEWS])
    second = SenderLeases(engine, owner="second", lease_s=30, senders=[SHOP, NEWS])
    stop = asyncio.Event()
    async with first.hold("shop", stop) as held:
        assert held is not None and first.held == {"shop"}
        async with second.hold("shop", stop) as refused:
            assert refused is None
    released_at = time.monotonic()
    async with second.hold("shop", stop) as taken:
        waited_s = time.monotonic() - released_at
        assert taken is not None and not taken.is_set()
    assert second.takeovers == 1
    assert waited_s >= SEND_WINDOW_S * 0.9


async def test_a_worker_that_loses_its_sender_lease_stops_that_pass(engine: Engine) -> None:
    seed_campaign(engine, recipients=1, sender_name="shop")
    leases = SenderLeases(engine, owner="me", lease_s=0.6, senders=[SHOP])
    async with leases.hold("shop", asyncio.Event()) as pass_stop:
        assert pass_stop is not None
        with write_transaction(engine) as conn:
            conn.execute(sa.update(SENDER).where(SENDER.c.name == "shop").values(lease_owner="thief"))
        await asyncio.wait_for(pass_stop.wait(), timeout=5)


async def test_the_worker_stop_event_stops_the_pass_it_gates(engine: Engine) -> None:
    seed_campaign(engine, recipients=1, sender_name="shop")
    leases = SenderLeases(engine, owner="me", lease_s=30, senders=[SHOP])
    stop = asyncio.Event()
    async with leases.hold("shop", stop) as pass_stop:
        assert pass_stop is not None and not pass_stop.is_set()
        stop.set()
        await asyncio.wait_for(pass_stop.wait(), timeout=5)


async def test_a_worker_taking_two_senders_at_once_still_takes_only_its_fair_share(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("one process sends per SQLite database: its share is every sender")
    seed_campaign(engine, recipients=1, sender_name="shop")
    seed_campaign(engine, recipients=1, name="news-c", sender_name="news", first_contact=10)
    other = make_engine(engine.url.render_as_string(hide_password=False))
    leases = SenderLeases(engine, owner="me", lease_s=30, senders=[SHOP, NEWS])
    stop = asyncio.Event()
    got: list[str] = []
    both_tried = asyncio.Barrier(2)

    async def one_pass(sender: str) -> None:
        async with leases.hold(sender, stop) as pass_stop:
            if pass_stop is not None:
                got.append(sender)
            await both_tried.wait()

    try:
        with worker_lock(engine), worker_lock(other):  # two live workers, two senders: one each
            await asyncio.gather(one_pass("shop"), one_pass("news"))
    finally:
        other.dispose()
    assert len(got) == 1


LEASE_S = 2.0


async def test_a_worker_that_cannot_renew_its_sender_lease_stops_that_pass_before_it_expires(
    engine: Engine,
) -> None:
    seed_campaign(engine, recipients=1, sender_name="shop")
    leases = SenderLeases(engine, owner="me", lease_s=LEASE_S, senders=[SHOP])
    async with leases.hold("shop", asyncio.Event()) as pass_stop:
        assert pass_stop is not None
        # The database stalls: another transaction holds the sender row, so renewals hang.
        with write_transaction(engine) as blocker:
            blocker.execute(sa.update(SENDER).where(SENDER.c.name == "shop").values(updated_at=utcnow()))
            started = time.monotonic()
            await asyncio.wait_for(pass_stop.wait(), timeout=5)
            stalled_s = time.monotonic() - started
    assert stalled_s < LEASE_S, "the pass must stop before the lease another worker could take expires"


async def test_a_worker_above_its_fair_share_hands_over_the_sender_it_took_last(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("one process sends per SQLite database: its share is every sender")
    seed_campaign(engine, recipients=1, sender_name="shop")
    seed_campaign(engine, recipients=1, name="news-c", sender_name="news", first_contact=10)
    other = make_engine(engine.url.render_as_string(hide_password=False))
    leases = SenderLeases(engine, owner="me", lease_s=0.6, senders=[SHOP, NEWS])
    stop = asyncio.Event()
    try:
        async with leases.hold("shop", stop) as first, leases.hold("news", stop) as last:
            assert first is not None and last is not None  # alone: both are its share
            with worker_lock(engine), worker_lock(other):  # a second worker joins: share 1
                await asyncio.wait_for(last.wait(), timeout=5)
                await asyncio.sleep(0.5)  # two more renewals of the first sender
                assert not first.is_set()
    finally:
        other.dispose()
    assert leases.handed_over == 1


async def test_a_worker_fenced_by_a_lost_sender_lease_gives_its_claimed_rows_back(engine: Engine) -> None:
    """Issue #13 item 3: the pass the fence stops leaves no row `claimed` (nor `sending`) behind."""
    from campaigns import control
    from campaigns.core.settings_loading import load_settings
    from scheduler.sending.dispatch import Dispatcher
    from tests.dispatch_support import ScriptedProvider, states

    cid = seed_campaign(engine, recipients=400)
    settings, _ = load_settings(
        environ={"WACAMP_RATE_PER_S": "100", "WACAMP_MESSAGING_TIER": "TIER_UNLIMITED"}
    )
    with engine.connect() as conn:
        ref = control.reload(conn, cid)
    sender = settings.sender(ref.sender_name)
    leases = SenderLeases(engine, owner="me", lease_s=0.6, senders=[sender])
    async with leases.hold(sender.name, asyncio.Event()) as pass_stop:
        assert pass_stop is not None
        run = Dispatcher(
            engine=engine, settings=settings, campaign=ref, provider=ScriptedProvider(), stop=pass_stop
        )
        sending = asyncio.create_task(run.run())
        while states(engine, cid).get("accepted", 0) < 30:
            await asyncio.sleep(0.02)
        assert states(engine, cid).get("claimed", 0) > 0  # it holds rows ahead of its sends
        with write_transaction(engine) as conn:
            conn.execute(sa.update(SENDER).where(SENDER.c.name == sender.name).values(lease_owner="thief"))
        report = await asyncio.wait_for(sending, timeout=10)
    assert report.exit_code == 75
    left = states(engine, cid)
    assert set(left) == {"accepted", "planned"}, left
    assert left["accepted"] == report.accepted and left["planned"] == 400 - report.accepted

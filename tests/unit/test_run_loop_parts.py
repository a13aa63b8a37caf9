"""The dispatcher's small parts: the halt (first reason wins), the claim-ahead buffer, the in-flight slots."""

from __future__ import annotations

import asyncio

from scheduler.sending.claims import ClaimAhead, mark_group_size
from scheduler.sending.halt import Halt
from scheduler.sending.in_flight import InFlight
from scheduler.sending.ledger import ClaimedRow
from scheduler.sending.run_report import RunEnd, StopReason


def claimed(first_id: int, count: int) -> list[ClaimedRow]:
    return [
        ClaimedRow(id=i, contact_id=i, phone=f"+1555{i:07d}", body="{}", attempts=1)
        for i in range(first_id, first_id + count)
    ]


async def test_the_first_reason_to_halt_wins_and_wakes_the_listener() -> None:
    woken: list[bool] = []
    halt = Halt(on_halt=lambda: woken.append(True))
    halt(StopReason.PAUSED, "paused (by a person)")
    halt(StopReason.ERROR, "later")
    assert halt.is_set
    assert halt.end == RunEnd(StopReason.PAUSED, "paused (by a person)")
    assert woken == [True, True]


async def test_a_halt_without_a_message_says_its_reason() -> None:
    halt = Halt()
    halt(StopReason.CANCELLED)
    assert halt.end == RunEnd(StopReason.CANCELLED, "campaign cancelled")


async def test_a_wait_raced_against_a_halt_is_cancelled_when_the_run_halts() -> None:
    halt = Halt()
    waiting = asyncio.ensure_future(halt.unless_halted(asyncio.sleep(60)))
    await asyncio.sleep(0)
    halt(StopReason.SIGNAL)
    assert await asyncio.wait_for(waiting, timeout=5) is False
    assert await halt.unless_halted(asyncio.sleep(0)) is False


async def test_a_wait_that_ends_before_a_halt_reports_it_finished() -> None:
    assert await Halt().unless_halted(asyncio.sleep(0)) is True


async def test_claims_ahead_top_up_to_one_batch_and_give_back_what_was_not_sent() -> None:
    asked: list[int] = []

    async def claim(limit: int, sending: bool) -> list[ClaimedRow]:
        assert not sending  # batch 4 > group 1: the marks are separate commits
        asked.append(limit)
        return claimed(len(asked) * 100, limit)

    async def mark(rows: list[ClaimedRow]) -> list[ClaimedRow]:
        return rows

    claims = ClaimAhead(claim, mark)
    taken = [await claims.next_row(batch=4, halted=False) for _ in range(3)]
    assert [row.id for row in taken if row is not None] == [100, 101, 102]
    assert asked == [4]  # three of four taken: the one left is below half a batch
    last = await claims.next_row(batch=4, halted=False)  # starts a claim of 3 in the background
    assert last is not None and last.id == 103
    unsent = await claims.unsent()  # waits for that claim: it commits anyway
    assert asked == [4, 3]
    assert [row.id for row in unsent] == [200, 201, 202]
    assert await claims.unsent() == []


async def test_no_claim_starts_once_the_run_halted() -> None:
    async def claim(limit: int, sending: bool) -> list[ClaimedRow]:
        raise AssertionError("claimed after the halt")

    async def mark(rows: list[ClaimedRow]) -> list[ClaimedRow]:
        raise AssertionError("marked after the halt")

    assert await ClaimAhead(claim, mark).next_row(batch=4, halted=True) is None


async def test_rows_are_marked_sending_in_groups_just_ahead_and_a_row_the_mark_lost_is_never_handed_out() -> (
    None
):
    groups: list[list[int]] = []

    async def claim(limit: int, sending: bool) -> list[ClaimedRow]:
        assert not sending
        return claimed(100, limit) if not groups else []

    async def mark(rows: list[ClaimedRow]) -> list[ClaimedRow]:
        groups.append([row.id for row in rows])
        return [row for row in rows if row.id != 105]  # its lease was lost: another run has it now

    claims = ClaimAhead(claim, mark)
    first = await claims.next_row(batch=10, group=4, halted=False)
    assert first is not None and first.id == 100 and groups == [[100, 101, 102, 103]]
    handed = [first.id]
    while (row := await claims.next_row(batch=10, group=4, halted=False)) is not None:
        handed.append(row.id)
        # never more than one group marked and not handed out
        assert sum(len(g) for g in groups) - len(handed) <= 4 + 1
    assert handed == [100, 101, 102, 103, 104, 106, 107, 108, 109]
    assert all(len(group) <= 4 for group in groups) and groups[1][0] == 104
    assert mark_group_size(80) == 8 and mark_group_size(1000) == 100 and mark_group_size(0.5) == 1


async def test_a_claim_that_fits_in_one_mark_group_marks_its_rows_itself_in_one_commit() -> None:
    asked: list[tuple[int, bool]] = []

    async def claim(limit: int, sending: bool) -> list[ClaimedRow]:
        asked.append((limit, sending))
        return claimed(100 * len(asked), limit) if len(asked) < 3 else []

    async def mark(rows: list[ClaimedRow]) -> list[ClaimedRow]:
        raise AssertionError("a separate mark commit")

    claims = ClaimAhead(claim, mark)
    handed = []
    while (row := await claims.next_row(batch=4, group=10, halted=False)) is not None:
        handed.append(row.id)
    assert handed == [100, 101, 102, 103, 200, 201, 202]
    assert asked == [(4, True), (3, True), (3, True)]  # topped up below half a batch, never above one


async def test_a_slot_wait_ends_when_a_send_ends_or_the_run_halts() -> None:
    sends = InFlight(limit=1)
    halted = False
    assert await sends.take_slot(lambda: halted) is True
    waiting = asyncio.ensure_future(sends.take_slot(lambda: halted))
    await asyncio.sleep(0)
    assert not waiting.done()
    halted = True
    sends.wake()
    assert await asyncio.wait_for(waiting, timeout=5) is False
    sends.give_slot()
    assert await sends.take_slot(lambda: False) is True

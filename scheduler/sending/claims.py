"""Rows claimed ahead of their sends, and marked `sending` in small groups just ahead of their permits.

Two stages, so sending never waits on the database and a crash strands only what was on the wire:

- **Claimed** (a lease, nothing about the wire): topped up in the background when fewer than half a
  claim batch is waiting. A killed run's claimed rows go back to `planned` when its lease expires.
- **Marked** (`sending`, durable before any of their requests is written): one group commit covers the
  permits that fall due in the next `MARK_AHEAD_S` at the sender's current rate, and the next group is
  marked when half of it is used. So a commit costs one per ~50 ms whatever the rate, and a kill leaves
  at most the requests in flight plus rate x `MARK_AHEAD_S` rows `sending` (then `unknown`).

When a whole claim batch fits in one mark group (rate x `MARK_AHEAD_S` >= the batch: 2,000 msg/s and
up with the shipped batch of 200), the claim marks its rows `sending` itself: one commit instead of
two, and still never more rows `sending` than one group.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable

from scheduler.sending.ledger import ClaimedRow

#: Claims `limit` more rows (a committed write transaction) and returns them; marked `sending` in the
#: same commit when its second argument is true.
Claim = Callable[[int, bool], Awaitable[list[ClaimedRow]]]
#: Marks claimed rows `sending` (a committed write transaction); returns those it could mark.
Mark = Callable[[list[ClaimedRow]], Awaitable[list[ClaimedRow]]]

#: A group commit marks the rows whose permits fall due within this many seconds.
MARK_AHEAD_S = 0.1


def mark_group_size(rate_per_s: float) -> int:
    """Rows one group commit marks at `rate_per_s`: the permits due within `MARK_AHEAD_S` (at least 1)."""
    return max(1, math.ceil(rate_per_s * MARK_AHEAD_S))


class ClaimAhead:
    """Claimed rows waiting for their send, and the few marked `sending` next (module docstring).

    Rows claimed but not handed out never exceed one claim batch; rows marked but not handed out
    never exceed one mark group.
    """

    def __init__(self, claim: Claim, mark: Mark) -> None:
        self._claim = claim
        self._mark = mark
        self._ready: deque[ClaimedRow] = deque()
        self._marked: deque[ClaimedRow] = deque()
        self._claiming: asyncio.Future[list[ClaimedRow]] | None = None
        #: Whether the claim under way marks its rows `sending` itself.
        self._claim_marks = False
        self._marking: asyncio.Future[list[ClaimedRow]] | None = None
        self._in_marking = 0

    def _held(self) -> int:
        return len(self._ready) + len(self._marked) + self._in_marking

    async def next_row(self, *, batch: int, group: int = 1, halted: bool) -> ClaimedRow | None:
        """The next row marked `sending`; None when a claim found nothing (nothing starts once `halted`)."""
        if not halted:
            self._start_claim(batch, group)
            self._start_mark(group)
        while not self._marked:
            if self._marking is not None:
                await self._take_marked()
            elif self._ready and not halted:
                self._start_mark(group)
            elif self._claiming is not None:
                await self._take_claimed()
                if not self._ready and not self._marked:
                    return None
            else:
                return None
        return self._marked.popleft()

    def _start_claim(self, batch: int, group: int) -> None:
        if self._claiming is not None and self._claiming.done():
            self._collect(self._claiming.result())
            self._claiming = None
        if self._claiming is None and self._held() < max(1, batch // 2):
            self._claim_marks = group >= batch  # rows held then stay within one group
            self._claiming = asyncio.ensure_future(self._claim(batch - self._held(), self._claim_marks))

    def _collect(self, claimed: list[ClaimedRow]) -> None:
        (self._marked if self._claim_marks else self._ready).extend(claimed)

    def _start_mark(self, group: int) -> None:
        if self._marking is not None or not self._ready or len(self._marked) >= max(1, group // 2):
            return
        rows = [self._ready.popleft() for _ in range(min(len(self._ready), group - len(self._marked)))]
        if rows:
            self._in_marking = len(rows)
            self._marking = asyncio.ensure_future(self._mark(rows))

    async def _take_claimed(self) -> None:
        assert self._claiming is not None
        # Never cancelled: the claim commits in its thread whatever happens to this task.
        claimed = await asyncio.shield(self._claiming)
        self._claiming = None
        self._collect(claimed)

    async def _take_marked(self) -> None:
        assert self._marking is not None
        marked = await asyncio.shield(self._marking)
        self._marking = None
        self._in_marking = 0
        self._marked.extend(marked)

    async def unsent(self) -> list[ClaimedRow]:
        """Take every held row not handed out yet (after the claim and mark under way: they commit anyway)."""
        if self._claiming is not None:
            await self._take_claimed()
        if self._marking is not None:
            await self._take_marked()
        rows = [*self._marked, *self._ready]
        self._marked.clear()
        self._ready.clear()
        return rows

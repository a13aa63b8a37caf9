"""Rows claimed ahead of their sends, so sending never waits on the database."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from scheduler.sending.ledger import ClaimedRow

#: Claims `limit` more rows (a committed write transaction) and returns them.
Claim = Callable[[int], Awaitable[list[ClaimedRow]]]


class ClaimAhead:
    """Claimed rows waiting for their send, topped up by a claim in the background.

    A claim starts when fewer than half a batch is ready and asks for what tops it up to one
    batch, so claimed-but-unsent rows never exceed one claim batch.
    """

    def __init__(self, claim: Claim) -> None:
        self._claim = claim
        self._ready: deque[ClaimedRow] = deque()
        self._claiming: asyncio.Future[list[ClaimedRow]] | None = None

    async def next_row(self, *, batch: int, halted: bool) -> ClaimedRow | None:
        """The next claimed row, or None when a claim found nothing (no claim starts once `halted`)."""
        if self._claiming is None and len(self._ready) < max(1, batch // 2) and not halted:
            self._claiming = asyncio.ensure_future(self._claim(batch - len(self._ready)))
        if self._claiming is not None and (self._claiming.done() or not self._ready):
            # Never cancelled: the claim commits in its thread whatever happens to this task.
            claimed = await asyncio.shield(self._claiming)
            self._claiming = None
            self._ready.extend(claimed)
            if not claimed and not self._ready:
                return None
        return self._ready.popleft() if self._ready else None

    async def unsent(self) -> list[ClaimedRow]:
        """Take every claimed row not handed out yet (after the claim under way: it commits anyway)."""
        if self._claiming is not None:
            self._ready.extend(await asyncio.shield(self._claiming))
            self._claiming = None
        rows = list(self._ready)
        self._ready.clear()
        return rows

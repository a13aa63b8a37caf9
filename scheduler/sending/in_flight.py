"""The sends in flight of one run: one task per request, never more than there are slots."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from scheduler.sending.ledger import ClaimedRow
from scheduler.sending.pace import Permit


class InFlight:
    """Send tasks in flight, at most `limit` at once (one slot each), with each one's rate-limiter permit.

    The dispatcher sizes `limit` to the provider's connections: more sends would queue inside
    aiohttp and leave in a bunch, defeating the limiter's spacing.
    """

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        #: The permit of each row in flight, by row id (read when an answer lands or is throttled).
        self.permits: dict[int, Permit] = {}
        self._tasks: dict[asyncio.Task[None], ClaimedRow] = {}
        self._taken = 0
        self._freed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._tasks)

    def tasks(self) -> set[asyncio.Task[None]]:
        """The send tasks in flight now."""
        return set(self._tasks)

    async def take_slot(self, halted: Callable[[], bool]) -> bool:
        """Wait for a slot (no task per wait: a send's end or `wake` wakes us); False once halted."""
        while self._taken >= self.limit:
            if halted():
                return False
            self._freed.clear()
            await self._freed.wait()
        self._taken += 1
        return True

    def give_slot(self) -> None:
        """Give back a slot taken for a send that did not start."""
        self._taken -= 1
        self._freed.set()

    def wake(self) -> None:
        """Wake a waiting `take_slot` (the run halts)."""
        self._freed.set()

    def start(self, row: ClaimedRow, permit: Permit, send: Coroutine[Any, Any, None]) -> None:
        """Run the row's send in the slot taken for it; the slot is given back when it ends."""
        self.permits[row.id] = permit
        task = asyncio.create_task(send, name=f"send-{row.id}")
        self._tasks[task] = row
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        row = self._tasks.pop(task, None)
        if row is not None:
            self.permits.pop(row.id, None)
        self.give_slot()

    def landed(self, row: ClaimedRow, now_s: float) -> None:
        """An answer came back: the request reached the platform by `now_s` (see `scheduler.sending.pace`)."""
        permit = self.permits.get(row.id)
        if permit is not None:
            permit.landed(now_s)

    async def settle(self, *, grace_s: float) -> None:
        """Let the sends finish within `grace_s`, then cancel the late ones (they record `unknown`)."""
        late = self.tasks()
        if late and grace_s > 0:
            _, late = await asyncio.wait(late, timeout=grace_s)
        if late:
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

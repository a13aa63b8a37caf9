"""Pair spacing: never two sends to one recipient within `pair_spacing_s` from this engine.

The platform allows one message every 6 s to the same user (131056 above it). The engine remembers
when it last started a request to each phone, in memory and only for as long as it matters: entries
older than the spacing are dropped in arrival order, so memory stays at rate × spacing entries
whatever the size of the campaign. After a 131056 the recipient waits ``base ** X`` seconds
(X = how many 131056 it got in this run: 1 s, 4 s, 16 s …) while everyone else goes on.
"""

from __future__ import annotations

from collections import deque


class PairSpacer:
    """Last send time per phone (monotonic seconds) and the 131056 penalties of this run."""

    def __init__(self, *, spacing_s: float, retry_base_s: float) -> None:
        self.spacing_s = spacing_s
        self.retry_base_s = retry_base_s
        self._last_s: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()
        self._penalties: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._last_s)

    def wait_s(self, phone: str, now_s: float) -> float:
        """Seconds before `phone` may get another request (0 when it may now)."""
        self._forget_spaced(now_s)
        last = self._last_s.get(phone)
        if last is None:
            return 0.0
        # Elapsed time computed one way everywhere (now - last), so float rounding never lets a send
        # through that `now - last < spacing` would call too early.
        return max(0.0, self.spacing_s - (now_s - last))

    def mark(self, phone: str, now_s: float) -> None:
        """A request to `phone` starts now."""
        self._last_s[phone] = now_s
        self._order.append((now_s, phone))

    def strike(self, phone: str) -> int:
        """Count a 131056 for `phone`; returns how many it got in this run (1, 2, …)."""
        count = self._penalties.get(phone, 0) + 1
        self._penalties[phone] = count
        return count

    def penalty_s(self, phone: str) -> float:
        """After a 131056 for `phone`: how long it waits (``base ** X``, X counting from 0)."""
        return float(self.retry_base_s ** (self.strike(phone) - 1))

    def hold(self, phone: str, until_s: float) -> None:
        """No request to `phone` before `until_s` (its spacing counts from `until_s - spacing`)."""
        self.mark(phone, until_s - self.spacing_s)

    def _forget_spaced(self, now_s: float) -> None:
        while self._order and now_s - self._order[0][0] >= self.spacing_s:
            sent_s, phone = self._order.popleft()
            if self._last_s.get(phone) == sent_s:
                del self._last_s[phone]

"""What the sandbox has seen: accepted messages, request counts per second, limits' memory, duplicates.

Every operation is O(1) (amortised): a deque of acceptance times per phone number for the trailing
second, an ordered dict of the last acceptance per recipient for the pair limit (older than the spacing
are forgotten, so it holds at most spacing x rate entries), a set of content hashes for duplicates.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 1.0
DUPLICATE_EXAMPLES = 20
LAST_WAMIDS = 100_000


@dataclass
class WebhookCounts:
    """What the webhook emitter got a 2xx for, and what it is still trying to deliver."""

    statuses: Counter[str] = field(default_factory=Counter)
    failed_by_code: Counter[int] = field(default_factory=Counter)
    changes_by_field: Counter[str] = field(default_factory=Counter)
    posts_ok: int = 0
    post_attempts_failed: int = 0
    posts_given_up: int = 0
    statuses_given_up: int = 0
    duplicates_planned: int = 0
    out_of_order_planned: int = 0
    skipped_delivered_planned: int = 0
    final_planned: Counter[str] = field(default_factory=Counter)
    pending: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (integer keys become strings)."""
        return {
            "statuses": dict(self.statuses),
            "failed_by_code": {str(code): n for code, n in self.failed_by_code.items()},
            "changes_by_field": dict(self.changes_by_field),
            "posts_ok": self.posts_ok,
            "post_attempts_failed": self.post_attempts_failed,
            "posts_given_up": self.posts_given_up,
            "statuses_given_up": self.statuses_given_up,
            "duplicates_planned": self.duplicates_planned,
            "out_of_order_planned": self.out_of_order_planned,
            "skipped_delivered_planned": self.skipped_delivered_planned,
            "final_planned": dict(self.final_planned),
            "pending": self.pending,
        }


@dataclass(frozen=True)
class SandboxStats:
    """A snapshot of `SandboxState` (also what `GET /_sandbox/stats` returns as JSON)."""

    requests: int
    accepted: int
    #: Per 1 s window since the sandbox started (window index -> count), message POSTs and acceptances.
    requests_per_window: dict[int, int]
    accepted_per_window: dict[int, int]
    largest_request_window: int
    largest_accepted_window: int
    #: Most acceptances for one phone number in any trailing second (sliding, not aligned).
    max_accepted_trailing_1s: int
    duplicates: int
    duplicate_examples: list[str]
    errors_by_code: dict[int, int]
    async_failures_by_code: dict[int, int]
    accepted_per_recipient: dict[str, int]
    template_sends: dict[str, int]
    resets_after_accept: int
    webhooks: dict[str, Any]
    #: Per phone number: acceptances per 1 s window, and the most in any trailing second (sliding).
    accepted_per_window_by_phone: dict[str, dict[int, int]] = field(default_factory=dict)
    max_accepted_trailing_1s_by_phone: dict[str, int] = field(default_factory=dict)
    #: Acceptances by endpoint ("cloud", "marketing") and the acceptances held by template pacing.
    accepted_by_path: dict[str, int] = field(default_factory=dict)
    held: int = 0

    def to_json(self, *, per_recipient: bool = True) -> dict[str, Any]:
        """JSON-ready dict (integer keys become strings)."""
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "requests_per_window": {str(k): v for k, v in self.requests_per_window.items()},
            "accepted_per_window": {str(k): v for k, v in self.accepted_per_window.items()},
            "largest_request_window": self.largest_request_window,
            "largest_accepted_window": self.largest_accepted_window,
            "max_accepted_trailing_1s": self.max_accepted_trailing_1s,
            "duplicates": self.duplicates,
            "duplicate_examples": self.duplicate_examples,
            "errors_by_code": {str(k): v for k, v in self.errors_by_code.items()},
            "async_failures_by_code": {str(k): v for k, v in self.async_failures_by_code.items()},
            "accepted_per_recipient": self.accepted_per_recipient if per_recipient else {},
            "template_sends": self.template_sends,
            "accepted_by_path": self.accepted_by_path,
            "held": self.held,
            "resets_after_accept": self.resets_after_accept,
            "webhooks": self.webhooks,
            "accepted_per_window_by_phone": {
                phone: {str(k): v for k, v in windows.items()}
                for phone, windows in self.accepted_per_window_by_phone.items()
            },
            "max_accepted_trailing_1s_by_phone": self.max_accepted_trailing_1s_by_phone,
        }


class SandboxState:
    """The sandbox's memory. `clock` is monotonic seconds (injected in unit tests)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started_at = clock()
        self.requests = 0
        self.accepted = 0
        self.requests_per_window: Counter[int] = Counter()
        self.accepted_per_window: Counter[int] = Counter()
        self.max_accepted_trailing_1s = 0
        self.accepted_per_window_by_phone: dict[str, Counter[int]] = {}
        self.max_trailing_1s_by_phone: Counter[str] = Counter()
        self.duplicates = 0
        self.duplicate_examples: list[str] = []
        self.errors_by_code: Counter[int] = Counter()
        self.async_failures_by_code: Counter[int] = Counter()
        self.accepted_per_recipient: dict[str, int] = {}
        self.attempts_per_recipient: Counter[str] = Counter()
        self.template_sends: Counter[str] = Counter()
        self.resets_after_accept = 0
        #: Acceptances by endpoint ("cloud", "marketing"; On-Premises counts as "cloud") and how many
        #: were held by template pacing (`sandbox.pacing`).
        self.accepted_by_path: Counter[str] = Counter()
        self.held = 0
        #: The last message accepted per recipient (for quick-reply taps), the most recent LAST_WAMIDS only.
        self.last_wamid: OrderedDict[str, str] = OrderedDict()
        self.opted_out: set[str] = set()
        self.webhooks = WebhookCounts()
        self._recent: dict[str, deque[float]] = {}
        #: Last acceptance per recipient, oldest first; entries older than the pair spacing are dropped.
        self._last_accept: OrderedDict[str, float] = OrderedDict()
        self._content_seen: set[int] = set()
        self._sequence = 0
        self._instance = secrets.token_hex(6).upper()

    def window(self, now: float) -> int:
        """The index of the 1 s window (since the start) that `now` falls in."""
        return int((now - self.started_at) // WINDOW_S)

    def note_request(self, now: float) -> None:
        """Count one message POST (whatever its answer)."""
        self.requests += 1
        self.requests_per_window[self.window(now)] += 1

    def note_error(self, code: int) -> None:
        """Count one error answered with `code`."""
        self.errors_by_code[code] += 1

    def _trailing(self, phone_number_id: str, now: float) -> deque[float]:
        recent = self._recent.get(phone_number_id)
        if recent is None:
            recent = self._recent[phone_number_id] = deque()
        horizon = now - WINDOW_S
        while recent and recent[0] <= horizon:
            recent.popleft()
        return recent

    def over_rate(self, phone_number_id: str, now: float, *, mps: int) -> bool:
        """Would one more acceptance exceed `mps` for this phone number in the trailing second?"""
        return mps > 0 and len(self._trailing(phone_number_id, now)) >= mps

    def too_soon(self, wa_id: str, now: float, *, spacing_s: float) -> bool:
        """Was this recipient's last acceptance less than `spacing_s` ago? (Forgets older acceptances.)"""
        if spacing_s <= 0:
            self._last_accept.clear()
            return False
        last_accept = self._last_accept
        horizon = now - spacing_s
        while last_accept:
            oldest = next(iter(last_accept))
            if last_accept[oldest] > horizon:
                break
            del last_accept[oldest]
        last = last_accept.get(wa_id)
        return last is not None and now - last < spacing_s

    @property
    def pair_tracked(self) -> int:
        """How many recipients the pair limit still remembers."""
        return len(self._last_accept)

    def next_wamid(self, wa_id: str) -> str:
        """A new message id, unique across sandbox instances (random prefix) and within one (sequence)."""
        self._sequence += 1
        return f"wamid.HBgL{wa_id}FQIAERgS{self._instance}{self._sequence:010d}"

    def record_accept(
        self, *, phone_number_id: str, wa_id: str, content_key: str, template_key: str | None, now: float
    ) -> None:
        """Remember one accepted message: rate window, pair time, duplicates, per-recipient counts."""
        recent = self._trailing(phone_number_id, now)
        recent.append(now)
        in_last_second = len(recent)
        if in_last_second > self.max_accepted_trailing_1s:
            self.max_accepted_trailing_1s = in_last_second
        by_phone = self.max_trailing_1s_by_phone
        if in_last_second > by_phone[phone_number_id]:
            by_phone[phone_number_id] = in_last_second
        window = int((now - self.started_at) // WINDOW_S)
        phone_windows = self.accepted_per_window_by_phone.get(phone_number_id)
        if phone_windows is None:
            phone_windows = self.accepted_per_window_by_phone[phone_number_id] = Counter()
        phone_windows[window] += 1
        last_accept = self._last_accept
        last_accept[wa_id] = now
        last_accept.move_to_end(wa_id)
        self.accepted += 1
        self.accepted_per_window[window] += 1
        per_recipient = self.accepted_per_recipient
        per_recipient[wa_id] = per_recipient.get(wa_id, 0) + 1
        if template_key is not None:
            self.template_sends[template_key] += 1
        # Python's str hash: 64 bits, stable within the process, no collision in practice at these sizes.
        digest = hash(content_key)
        if digest in self._content_seen:
            self.duplicates += 1
            if len(self.duplicate_examples) < DUPLICATE_EXAMPLES:
                self.duplicate_examples.append(content_key)
        else:
            self._content_seen.add(digest)

    def remember_wamid(self, wa_id: str, wamid: str) -> None:
        """Keep the last message id per recipient (bounded: the most recent LAST_WAMIDS recipients)."""
        self.last_wamid[wa_id] = wamid
        self.last_wamid.move_to_end(wa_id)
        if len(self.last_wamid) > LAST_WAMIDS:
            self.last_wamid.popitem(last=False)

    def snapshot(self) -> SandboxStats:
        """The counters as they are now."""
        return SandboxStats(
            requests=self.requests,
            accepted=self.accepted,
            requests_per_window=dict(sorted(self.requests_per_window.items())),
            accepted_per_window=dict(sorted(self.accepted_per_window.items())),
            largest_request_window=max(self.requests_per_window.values(), default=0),
            largest_accepted_window=max(self.accepted_per_window.values(), default=0),
            max_accepted_trailing_1s=self.max_accepted_trailing_1s,
            duplicates=self.duplicates,
            duplicate_examples=list(self.duplicate_examples),
            errors_by_code=dict(self.errors_by_code),
            async_failures_by_code=dict(self.async_failures_by_code),
            accepted_per_recipient=dict(self.accepted_per_recipient),
            template_sends=dict(self.template_sends),
            resets_after_accept=self.resets_after_accept,
            webhooks=self.webhooks.to_json(),
            accepted_per_window_by_phone={
                phone: dict(sorted(windows.items()))
                for phone, windows in self.accepted_per_window_by_phone.items()
            },
            max_accepted_trailing_1s_by_phone=dict(self.max_trailing_1s_by_phone),
            accepted_by_path=dict(self.accepted_by_path),
            held=self.held,
        )

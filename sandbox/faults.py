"""Fault scenarios for rehearsals and tests, deterministic for a seed.

- ``throttle-storm``: in every period of `storm_every_s` (from the sandbox's start) a storm of
  `storm_length_s` at a seeded offset (the first one at once) during which every send gets 130429.
- ``flaky``: a share of sends get a 5xx with 131000 or 131016; another share is accepted and recorded,
  then the connection is reset before the answer (the client cannot know the outcome).
- ``slow``: every request waits hundreds of milliseconds before it is handled.
- ``template-paused``: the template that reaches `pause_after_sends` accepted sends is paused (132015
  from then on, and a `message_template_status_update` webhook).

Per-request draws hash the seed with the recipient and that recipient's attempt number, so the
same seed gives the same faults to the same sends, whatever their interleaving.
"""

from __future__ import annotations

import enum
import hashlib

from sandbox.config import SandboxConfig


class Flake(enum.Enum):
    """What the `flaky` fault does to one send."""

    NONE = "none"
    ERROR_131000 = "131000"
    ERROR_131016 = "131016"
    RESET_AFTER_ACCEPT = "reset"


def _unit(seed: int, salt: str, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class FaultPlan:
    """The configured faults, asked once per request."""

    def __init__(self, config: SandboxConfig, *, started_at: float) -> None:
        self.config = config
        self.settings = config.fault_settings
        self.started_at = started_at
        self.storm = config.has_fault("throttle-storm")
        self.flaky = config.has_fault("flaky")
        self.slow = config.has_fault("slow")
        self.template_paused = config.has_fault("template-paused")
        #: Whether any fault draws per request (then requests are keyed by recipient and attempt).
        self.per_request = self.flaky or self.slow

    def latency_s(self, key: str) -> float:
        """Extra latency for one request (0 unless `slow`)."""
        if not self.slow:
            return 0.0
        low_ms, high_ms = self.settings.slow_ms
        return (low_ms + (high_ms - low_ms) * _unit(self.config.seed, "slow", key)) / 1000.0

    def storming(self, now: float) -> bool:
        """Is a throttle storm raging at monotonic time `now`?

        Storm k falls somewhere in period k (seeded), the first one at the very start: a client that
        retries at a fixed interval cannot stay in phase with the storms forever, as with a real platform.
        """
        if not self.storm:
            return False
        every_s, length_s = self.settings.storm_every_s, self.settings.storm_length_s
        elapsed_s = now - self.started_at
        period = int(elapsed_s // every_s)
        slack_s = max(every_s - length_s, 0.0)
        start_s = period * every_s + (
            _unit(self.config.seed, "storm", str(period)) * slack_s if period else 0.0
        )
        return start_s <= elapsed_s < start_s + length_s

    def flake(self, key: str) -> Flake:
        """What `flaky` does to the send identified by `key` (recipient and attempt number)."""
        if not self.flaky:
            return Flake.NONE
        draw = _unit(self.config.seed, "flaky", key)
        error_share = self.settings.flaky_error_share
        if draw < error_share / 2:
            return Flake.ERROR_131000
        if draw < error_share:
            return Flake.ERROR_131016
        if draw < error_share + self.settings.flaky_reset_share:
            return Flake.RESET_AFTER_ACCEPT
        return Flake.NONE

    def pauses_now(self, sends: int) -> bool:
        """Should a template with this many accepted sends be paused now (`template-paused`)?"""
        return self.template_paused and sends >= self.settings.pause_after_sends

"""A frequency cap as configured and typed: ``COUNT/WINDOW`` (``2/7d``) or ``none``, and its policy.

The rule built on it, what counts and where it is enforced: `campaigns.caps`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

CapPolicy = Literal["wait", "skip"]
POLICIES: tuple[CapPolicy, ...] = ("wait", "skip")
NO_CAP = "none"

_UNIT_S = {"m": 60, "h": 3600, "d": 86400}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([mhd])\s*$")


@dataclass(frozen=True)
class Cap:
    """At most `count` sends per contact in any `window_s` seconds."""

    count: int
    window_s: int
    text: str

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_s)


def parse_cap(text: str) -> Cap | None:
    """A cap from ``2/7d`` (None for ``none``); ValueError saying what is expected otherwise."""
    if text.strip().lower() == NO_CAP:
        return None
    found = _SPEC.match(text)
    if found is None:
        raise ValueError(f"frequency cap {text!r} is not COUNT/WINDOW like 2/7d, 1/30d or 3/36h, or none")
    count, amount, unit = int(found[1]), int(found[2]), found[3]
    if count < 1 or amount < 1:
        raise ValueError(f"frequency cap {text!r}: the count and the window must be at least 1")
    return Cap(count=count, window_s=amount * _UNIT_S[unit], text=f"{count}/{amount}{unit}")


def check_policy(text: str) -> CapPolicy:
    """The cap policy named `text`, or ValueError."""
    for policy in POLICIES:
        if text == policy:
            return policy
    raise ValueError(f"cap policy {text!r} is not one of {', '.join(POLICIES)}")

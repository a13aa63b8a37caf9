"""How many examples a fuzz test tries: its own count scaled by WACAMP_FUZZ_SCALE (raised by `make soak`)."""

from __future__ import annotations

import os

SCALE_ENV = "WACAMP_FUZZ_SCALE"


def examples(count: int) -> int:
    """`count` times WACAMP_FUZZ_SCALE (1 unless set), at least 1."""
    return max(1, round(count * float(os.environ.get(SCALE_ENV) or 1)))

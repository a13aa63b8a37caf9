"""Figures of the reliability suite: what each test tried and what it found, for docs/reliability.md.

Tests call `record("crash_points", 3)` and the like; the counts are kept per test (the current
test's node id) and written as JSON at the end of the session when WACAMP_RELIABILITY_RECORD names a
file (scripts/reliability_report.py sets it). Without it, recording costs a dict update.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

RECORD_ENV = "WACAMP_RELIABILITY_RECORD"

_counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
_outcomes: dict[str, str] = {}
_durations: dict[str, float] = {}


def current_test() -> str:
    """The node id of the running test (without pytest's phase suffix)."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "unknown")
    return current.rsplit(" ", 1)[0]


def record(name: str, amount: int = 1) -> None:
    """Add `amount` to the counter `name` of the running test."""
    _counts[current_test()][name] += amount


def note_outcome(nodeid: str, outcome: str, duration_s: float) -> None:
    """The outcome of one test phase: a failure in any phase wins over a pass."""
    if _outcomes.get(nodeid) in ("failed", "error"):
        return
    _outcomes[nodeid] = outcome
    _durations[nodeid] = _durations.get(nodeid, 0.0) + duration_s


def snapshot() -> dict[str, Any]:
    """Every test's outcome and counters."""
    nodeids = sorted(set(_outcomes) | set(_counts))
    return {
        nodeid: {
            "outcome": _outcomes.get(nodeid, "unknown"),
            "duration_s": round(_durations.get(nodeid, 0.0), 2),
            "counts": dict(_counts.get(nodeid, {})),
        }
        for nodeid in nodeids
    }


def write_if_asked() -> None:
    """Write the snapshot to the file named by WACAMP_RELIABILITY_RECORD, if set."""
    target = os.environ.get(RECORD_ENV)
    if target:
        Path(target).write_text(json.dumps(snapshot(), indent=2, sort_keys=True) + "\n")

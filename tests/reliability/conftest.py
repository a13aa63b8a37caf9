"""Reliability suite hooks: per-test outcomes and counters for scripts/reliability_report.py."""

from __future__ import annotations

import pytest

from tests.reliability.record import note_outcome, write_if_asked


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/reliability/" not in report.nodeid:
        return
    if report.when == "call" or report.outcome != "passed":
        outcome = "error" if report.failed and report.when != "call" else report.outcome
        note_outcome(report.nodeid, outcome, report.duration)


def pytest_sessionfinish(session: pytest.Session) -> None:
    write_if_asked()

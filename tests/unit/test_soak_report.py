"""`make soak`'s page section: rendered from its figures, put between its markers, kept by the report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


SOAK = script("soak")
DATA = {
    "when": "2026-12-07 20:50 UTC",
    "commit": "abc1234",
    "command": "python scripts/soak.py --kills 3 --fuzz 10",
    "seconds": 120.0,
    "scenarios": [
        {"command": "run-due", "backend": "sqlite", "rate": 80, "kills": 2, "unknown_per_kill": [3, 17]},
        {"command": "webhooks-serve", "backend": "postgres", "rate": 80, "kills": 1, "webhook_posts": 50},
    ],
    "fuzz": {"fuzzed_inputs": 12, "fuzzed_csv_files": 3},
}


def test_the_section_counts_kills_and_shows_unknown_per_kill_as_a_distribution() -> None:
    section = SOAK.render(DATA)
    assert section.startswith(SOAK.START_MARK) and section.endswith(SOAK.END_MARK)
    assert "| kill -9 points | 3 |" in section
    assert "min 3, median 10, p90 17, max 17, mean 10.0" in section
    assert "1–5: 1, 6–20: 1" in section
    assert "python scripts/soak.py --kills 3 --fuzz 10" in section


def test_the_section_replaces_the_previous_one_and_the_reliability_report_keeps_it(tmp_path: Path) -> None:
    page = tmp_path / "reliability.md"
    page.write_text("# Reliability\n\nbody\n")
    SOAK.write_section(page, SOAK.render(DATA))
    SOAK.write_section(page, SOAK.render({**DATA, "commit": "def5678"}))
    text = page.read_text()
    assert text.count(SOAK.START_MARK) == 1 and "def5678" in text and "abc1234" not in text
    assert text.startswith("# Reliability\n\nbody\n")
    kept = script("reliability_report").soak_section(page)
    assert kept.strip().startswith(SOAK.START_MARK) and "def5678" in kept

"""Write the code → action table of docs/running.md from the outcome policy (`campaigns.outcomes`).

    .venv/bin/python scripts/outcome_table.py          # rewrite the table in place
    .venv/bin/python scripts/outcome_table.py --check  # exit 1 when the doc and the policy disagree

The table sits between the markers of `campaigns.report.error_catalog` (TABLE_BEGIN, TABLE_END) and
uses the shipped default limits (config/default.toml); tests/unit/test_outcomes.py checks it too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from campaigns.core.settings_loading import load_settings
from campaigns.report.error_catalog import TABLE_BEGIN, TABLE_END, outcome_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "running.md"


def rewritten(text: str, table: str) -> str:
    """`text` with the block between the markers (markers included) replaced by `table`."""
    start = text.index(TABLE_BEGIN)
    end = text.index(TABLE_END, start) + len(TABLE_END)
    return text[:start] + table + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, compare) the table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the doc is up to date")
    args = parser.parse_args(argv)
    settings, _ = load_settings(environ={})
    text = DOC.read_text(encoding="utf-8")
    wanted = rewritten(text, outcome_table(settings.limits))
    if args.check:
        if wanted != text:
            print(f"{DOC}: the outcome table is out of date: run scripts/outcome_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

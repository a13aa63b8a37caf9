"""The soak's figures (`scripts/soak.py`): one scenario's counts, shards merged, the page section rendered.

Kept apart from the soak's runner so the page can be re-rendered (`soak.py --from-json`) and tested
without running anything.
"""

from __future__ import annotations

import copy
import itertools
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_MARK, END_MARK = "<!-- soak:start -->", "<!-- soak:end -->"
#: Arguments that only say where a shard kept its files: left out of the commands the page shows.
SCRATCH_OPTIONS = ("--json", "--out")


@dataclass
class Scenario:
    """One command on one backend at one rate, and what its kills found."""

    command: str
    backend: str
    rate: int
    kills: int = 0
    unknown_per_kill: list[int] = field(default_factory=list)
    recipients: int = 0
    duplicates: int = 0
    losses: int = 0
    unknown: int = 0
    unknown_accepted: int = 0
    webhook_posts: int = 0
    webhook_acknowledged: int = 0
    webhook_lost_after_200: int = 0
    seconds: float = 0.0
    #: Rounds that broke (a command exited 1, a campaign never completed): what was said, cut short.
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        rate = "" if self.command == "webhooks-serve" else f" at {self.rate} msg/s"
        return f"`{self.command}` on {self.backend}{rate}"


# ------------------------------------------------------------------- render
def distribution(values: list[int]) -> str:
    if not values:
        return "—"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (
        f"min {ordered[0]}, median {statistics.median(ordered):g}, p90 {p90}, max {ordered[-1]}, "
        f"mean {statistics.fmean(ordered):.1f}"
    )


BUCKETS = [(0, 0), (1, 5), (6, 20), (21, 60), (61, 150), (151, 10**9)]


def histogram(values: list[int]) -> str:
    parts = []
    for low, high in BUCKETS:
        label = f"{low}" if low == high else (f"{low}–{high}" if high < 10**9 else f">{low - 1}")
        parts.append(f"{label}: {sum(1 for v in values if low <= v <= high)}")
    return ", ".join(parts)


def render(data: dict[str, Any]) -> str:
    rows = [Scenario(**s) for s in data["scenarios"]]
    senders = [s for s in rows if s.command != "webhooks-serve"]
    kills = sum(s.kills for s in rows)
    sender_kills = sum(s.kills for s in senders)
    all_unknown = list(itertools.chain.from_iterable(s.unknown_per_kill for s in senders))
    fuzz = data["fuzz"]
    fuzzed = [fuzz.get(f"fuzzed_{kind}", 0) for kind in ("csv_files", "webhook_bodies", "config_files")]
    fuzzed.append(fuzz.get("fuzzed_template_files", 0))
    figures = [
        ("kill -9 points", f"{kills:,}"),
        ("… of sending commands (`campaigns run`, `run-due`, `worker`)", f"{sender_kills:,}"),
        ("… of `webhooks serve` under load", f"{kills - sender_kills:,}"),
        ("recipients audited against the sandbox", f"{sum(s.recipients for s in senders):,}"),
        ("**duplicates**", f"{sum(s.duplicates for s in senders):,}"),
        (
            "**losses** (accepted without a recorded state, phantom or unsettled)",
            f"{sum(s.losses for s in senders):,}",
        ),
        ("**webhooks lost after their 200**", f"{sum(s.webhook_lost_after_200 for s in rows):,}"),
        ("rows `unknown` at the end", f"{sum(s.unknown for s in senders):,}"),
        ("… of them accepted by the platform", f"{sum(s.unknown_accepted for s in senders):,}"),
        ("unknown per kill (rows the kill left in flight), all rates", distribution(all_unknown)),
        ("fuzzed inputs in all", f"{fuzz.get('fuzzed_inputs', 0):,}"),
        ("… CSV files, webhook bodies, config files, template files", ", ".join(f"{n:,}" for n in fuzzed)),
        ("fuzz tests failed", f"{fuzz.get('tests_failed', 0)}"),
        ("kill rounds that broke (listed below)", f"{sum(len(s.failures) for s in rows)}"),
    ]
    lines = [
        START_MARK,
        "## The soak (`make soak`)",
        "",
        *run_lines(data),
        f"- Scale: {kills:,} kill points, {fuzz.get('fuzzed_inputs', 0):,} fuzzed inputs (`make soak` "
        "defaults: 1,000 and 100,000; a smaller run is a smoke of it)",
        "",
        "| what | count |",
        "|---|---:|",
        *(f"| {label} | {value} |" for label, value in figures),
        "",
        "| scenario | kills | unknown per kill | histogram | recipients | duplicates | losses |",
        "|---|---:|---|---|---:|---:|---:|",
        *map(scenario_row, rows),
        "",
        *(f"- broke: {s.name}: {failure}" for s in rows for failure in s.failures),
        END_MARK,
    ]
    return "\n".join(lines)


def run_lines(data: dict[str, Any]) -> list[str]:
    """When, what and how long; a merged soak names each of its shards."""
    run = f"- Run: {data['when']}, commit `{data['commit']}`, {data['seconds'] / 60:.0f} minutes"
    shards = data.get("shards", [])
    if not shards:
        return [run, f"- Reproduce: `{data['command']}`"]
    return [
        f"{run} (the longest shard's; {len(shards)} shards, some at once, merged with `--from-json`)",
        *(
            f"- Shard {i}: `{public_command(shard['command'])}` "
            f"({shard['seconds'] / 60:.0f} minutes, ended {shard['when']})"
            for i, shard in enumerate(shards, 1)
        ),
    ]


def scenario_row(s: Scenario) -> str:
    if s.command == "webhooks-serve":
        posts = f"{s.webhook_posts:,} POSTs, {s.webhook_acknowledged:,} answered 200"
        return f"| {s.name} | {s.kills} | — | {posts} | — | — | {s.webhook_lost_after_200} lost after 200 |"
    unknown = f"{distribution(s.unknown_per_kill)} | {histogram(s.unknown_per_kill)}"
    return f"| {s.name} | {s.kills} | {unknown} | {s.recipients:,} | {s.duplicates} | {s.losses} |"


def write_section(page: Path, section: str) -> None:
    """Put `section` between the soak markers of `page` (appended when the page has none yet)."""
    text = page.read_text() if page.exists() else ""
    if START_MARK in text and END_MARK in text:
        head, rest = text.split(START_MARK, 1)
        text = head + section + rest.split(END_MARK, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    page.write_text(text)


# -------------------------------------------------------------------- merge
def merge_scenarios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scenarios of the same command, backend and rate summed field by field (lists concatenated)."""
    merged: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["command"], row["backend"], row["rate"])
        if key not in merged:
            merged[key] = copy.deepcopy(row)
            continue
        for name, value in row.items():
            if name not in ("command", "backend", "rate"):
                merged[key][name] = merged[key][name] + value
    return list(merged.values())


def merge_fuzz(totals: list[dict[str, int]]) -> dict[str, int]:
    """Fuzz counters added; pytest's exit code is the worst one (5, no tests, is as good as 0)."""
    ran = [t for t in totals if t]
    merged: dict[str, int] = {}
    for fuzz in ran:
        for key, value in fuzz.items():
            if key != "pytest_exit":
                merged[key] = merged.get(key, 0) + value
    if ran:
        codes = [t.get("pytest_exit", 0) for t in ran]
        merged["pytest_exit"] = next((c for c in codes if c not in (0, 5)), min(codes))
    return merged


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Parallel shards as one soak: its wall time is the longest shard's."""
    if len(runs) == 1:
        return runs[0]
    shards = list(itertools.chain.from_iterable(r.get("shards") or [shard_of(r)] for r in runs))
    commits = sorted({r["commit"] for r in runs})
    return {
        "when": max(r["when"] for r in runs),
        "commit": ", ".join(commits),
        "command": " & ".join(s["command"] for s in shards),
        "seconds": max(r["seconds"] for r in runs),
        "scenarios": merge_scenarios(list(itertools.chain.from_iterable(r["scenarios"] for r in runs))),
        "fuzz": merge_fuzz([r["fuzz"] for r in runs]),
        "shards": shards,
    }


def shard_of(run: dict[str, Any]) -> dict[str, Any]:
    return {"command": run["command"], "when": run["when"], "seconds": run["seconds"]}


def public_command(command: str) -> str:
    """`command` without the options that only name a shard's scratch files (`SCRATCH_OPTIONS`)."""
    words, kept = shlex.split(command), []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in SCRATCH_OPTIONS:
            skip = True
        else:
            kept.append(word)
    return shlex.join(kept)

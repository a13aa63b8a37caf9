"""Run the reliability suite and write docs/reliability.md from what it recorded.

    make reliability-report                       # every tier (about 15 minutes on 2 cores)
    .venv/bin/python scripts/reliability_report.py --quick          # the default tier only
    .venv/bin/python scripts/reliability_report.py --from-json FILE # re-render a recorded run

The tests count what they try (tests/reliability/record.py): crash points, restarts, fault
scenarios, fuzzed inputs, recipients checked, duplicates and losses found. This script runs pytest
over tests/reliability with WACAMP_RELIABILITY_RECORD pointing at a JSON file, then renders the
figures and the per-test outcomes into the Markdown page. PostgreSQL tests run when
WACAMP_TEST_POSTGRES_URL is set, or when a server answers on 127.0.0.1:5432 (then the CI URL is used).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "reliability.md"
DEFAULT_JSON = REPO / "build" / "reliability.json"
CI_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: What each module of the suite does to wacamp, and what wacamp does about it.
AREAS: dict[str, tuple[str, str]] = {
    "test_crash.py": (
        "Crashes: kill -9 of a sending command",
        "`wacamp run-due`, `wacamp worker` and `wacamp campaigns run` are killed with SIGKILL at seeded "
        "random moments (a quarter while starting, the rest once a random number of rows has moved, "
        "plus up to 50 ms), then started again, against `wacamp sandbox serve` in its own process. "
        "**What happens:** a claim only leases rows (`claimed`); a row is marked `sending` in a small "
        "group commit just ahead of its rate-limiter permit. A killed run's `claimed` rows go back to "
        "`planned` when its lease expires (they never left), and only its `sending` rows (the "
        "requests in flight plus rate x 0.1 s) become `unknown` (never resent: the request may have "
        "reached the platform); the next run sends the rest. Checked against `/_sandbox/stats`: no "
        "recipient accepted twice, every accepted recipient has a row saying `accepted` (or `unknown` "
        "for a request cut off by the kill), no row says accepted without the sandbox having accepted "
        "it, none left `claimed` or `sending`. The run-due tests then do what an operator does: the "
        "sandbox's status webhooks (received by `wacamp webhooks serve`) settle every `unknown` row "
        "the platform did accept, `campaigns resolve --resend-unknown` and `campaigns run` send the "
        "rest, and in the end every recipient was accepted exactly once. `test_unknown_per_kill.py` "
        "checks the bound per kill (in flight + rate x 0.1 s) at 80 and 1,000 msg/s.",
    ),
    "test_unknown_per_kill.py": (
        "Crashes: how many rows a kill leaves `unknown`",
        "`wacamp campaigns run` against a fast sandbox at a fixed rate R (80 and 1,000 msg/s), killed "
        "with SIGKILL in the middle of sending, then run again to the end. **What happens:** each kill "
        "leaves at most the requests in flight plus R x 0.1 s rows `sending` (then `unknown`): the "
        "group commit marks only the permits due in the next 0.1 s; the claimed rest goes back to "
        "`planned` by itself. Before the claimed -> sending protocol the same kills left 126-128 "
        "(80 msg/s) and up to 201 (1,000 msg/s) rows `unknown` each.",
    ),
    "test_liveness.py": (
        "Crashes: liveness from the database, never from a pid",
        "A `campaigns run` killed with SIGKILL and left a zombie (its pid still answers `kill(pid, "
        "0)`), on SQLite and PostgreSQL. **What happens:** a new run waits until the dead run's lease "
        "expires on the database's clock (a lease renewed meanwhile would refuse it, exit 75) and then "
        "sends; nothing is decided from a pid.",
    ),
    "test_rollout_membership.py": (
        "Crashes: staged rollouts",
        "A staged campaign planned again, and `run-due` killed with SIGKILL in the middle of a stage. "
        "**What happens:** planning again moves nobody between stages; nobody of a later stage is "
        "sent, nobody twice, nobody lost.",
    ),
    "test_crash_webhooks.py": (
        "Crashes: kill -9 of the webhook receiver",
        "`wacamp webhooks serve` is killed with SIGKILL at seeded moments while a client posts one "
        "correctly signed status per message over 8 connections and posts again whatever got no "
        "answer (as the platform redelivers). **What happens:** a body is committed to "
        "`webhook_inbox` before its 200, so every body answered 200 is found in the inbox after the "
        "restarts, is processed, and its message is `delivered` in the ledger. Redelivered duplicates "
        "change nothing (processing is idempotent).",
    ),
    "test_faults.py": (
        "Platform faults (sandbox scenarios)",
        "`throttle-storm` (130429 bursts), `flaky` (5xx 131000/131016 and connections reset after "
        "the message was accepted), `slow` (200-800 ms per request) and `template-paused` (132015 "
        "after N sends), each through `wacamp run-due`; the slow tier runs them through `wacamp "
        "sandbox serve --faults` with its defaults, and all three send faults at once with two "
        "seeds. **What happens:** throttling slows the sender down and everything is sent; 5xx are "
        "retried; a reset after acceptance leaves the row `unknown` (never resent); a paused template "
        "pauses the campaign (run-due exits 1, the rest stays `planned`). Accounting is exact: the "
        "sandbox's accepted count equals the rows saying accepted plus the `unknown` rows it did "
        "accept, nobody twice.",
    ),
    "test_database_trouble.py": (
        "Database trouble",
        "Another process holds SQLite's write lock (`BEGIN IMMEDIATE`) in the middle of a run for "
        "longer than `[database] busy_timeout_s` (8 s over 1 s; 45 s over the default 30 s in the slow "
        "tier), through `run-due` and `campaigns run`; PostgreSQL is restarted (`pg_ctlcluster ... "
        "restart`) in the middle of a campaign (slow tier); a run is killed with SIGKILL during the "
        "lock. **What happens:** sending pauses, the results already received are retried with "
        "backoff and journaled (fsynced JSON lines), and the run resumes by itself when the database "
        "answers: it completes in the same run, exit 0, with no row the platform accepted left "
        "`unknown` and the journal deleted. Killed during the outage, the next command replays the "
        "journal before it sends: nothing accepted ends `unknown`. `PRAGMA integrity_check` is ok "
        "and the dedup invariant holds throughout; nobody is sent twice. Beyond `[database] "
        "outage_wait_s` (300 s) a run stops resumably (exit 75) and the journal waits for the next "
        "command.",
    ),
    "test_clock.py": (
        "Clock trouble: midnight and the DST change",
        "An injected clock walks a campaign with a 22:00-06:00 Europe/Rome window and a 250-per-24 h "
        "tier through the night of the spring DST change (02:00 CET → 03:00 CEST), SQLite and "
        "PostgreSQL. **What happens:** the window follows the local clock (closed at 06:30 CEST), the "
        "budget follows real time: 22:30 CEST the next day is 24 local hours but 23.5 real hours "
        "later, so nothing is sent until 23:00:02 CEST; no moving 24 h window holds more than 250.",
    ),
    "test_fuzz_csv.py": (
        "Bad input: CSV files (`contacts import`)",
        "Hypothesis writes CSV files with random headers and cells (phones, formulas, quotes, "
        "delimiters, line breaks, NUL), delimiters `, ; tab |`, CRLF/CR line ends, encodings "
        "UTF-8, UTF-8 with BOM, Latin-1, cp1252 and UTF-16, random byte corruption and fields over "
        "the csv module's 128 KiB limit; plus hand-made nasty files through the installed CLI. "
        "**What happens:** the file is imported whole, or refused with one line naming the file "
        "(and line) and nothing at all is stored; the CLI exits 0 or 1, never with a traceback; "
        "rejects files neutralise formulas.",
    ),
    "test_fuzz_webhooks.py": (
        "Bad input: webhook bodies",
        "Correctly signed bodies through the real aiohttp receiver: arbitrary bytes, malformed and "
        "truncated JSON, webhook envelopes with fields missing or of the wrong type, nesting up to "
        "500,000 levels, bodies from just under 1 MiB to 3 MiB. **What happens:** answered 200 and "
        "stored (never 500), or 413 above `[webhooks] max_body_bytes` before the body is read; the "
        "processor marks every row processed, with the reason when it is not a usable webhook, and "
        "never stops; the ledger keeps its invariants. Unsigned or wrongly signed: 401, nothing stored.",
    ),
    "test_fuzz_config.py": (
        "Bad input: config files",
        "Random TOML (known sections and keys with values of every type, unknown keys, broken "
        "syntax, binary) and WACAMP_* values through `load_settings`; bad files through `config "
        "show`. **What happens:** settings, or one `ConfigError` line saying which file and line (or "
        "environment variable) holds the bad value; exit 1 without a traceback.",
    ),
    "test_fuzz_templates.py": (
        "Bad input: template JSON (`templates import`)",
        "The sample templates with fields removed or replaced by random JSON, broken components, "
        "other top-level shapes, truncation, UTF-16, a BOM and deep nesting. **What happens:** the "
        "file is stored whole or refused with one line naming the file, the template and the field; "
        "nothing is stored from a refused file; exit 1 without a traceback.",
    ),
    "test_security.py": (
        "Security",
        "Signatures are compared with `hmac.compare_digest` (a spy on the real receiver) and no "
        "signature, secret or verify token is compared with `==` anywhere (read from the code); "
        "distinctive secrets (token, app secret, verify token, On-Premises password, database "
        "password) appear in no stdout, stderr, JSON log, report (table, JSON, CSV, HTML), error "
        "message or database file of runs that send, fail authentication, sync templates, serve "
        "webhooks and cannot reach the database (`config show` masks them); the receiver refuses an "
        "oversized chunked body (413) and an unsigned body (401) before storing or parsing it; no SQL "
        "is built from strings (one reviewed exception: `PRAGMA busy_timeout=<int>`); `report "
        "--format csv` neutralises formulas from replies and error titles; files wacamp writes are "
        "never group- or world-writable.",
    ),
}

#: The figures of the summary table: label and the counters summed into it.
FIGURES: list[tuple[str, tuple[str, ...]]] = [
    ("kill -9 crash points (each followed by a restart)", ("crash_points",)),
    ("… of them with requests in flight (rows claimed, not settled)", ("crash_points_mid_send",)),
    ("… of them while the command was starting", ("crash_points_during_start",)),
    ("sending commands started in the kill loops (each after the previous was killed)", ("restarts",)),
    ("signed webhook POSTs sent to a receiver being killed", ("webhook_posts",)),
    ("… answered 200", ("webhook_posts_acknowledged",)),
    ("platform fault scenarios run", ("fault_scenarios",)),
    ("database faults (lock held, server restarted)", ("database_faults",)),
    ("clock moments across midnight and the DST change", ("clock_moments",)),
    ("fuzzed inputs in all", ("fuzzed_inputs",)),
    ("… CSV files", ("fuzzed_csv_files",)),
    ("… webhook bodies", ("fuzzed_webhook_bodies",)),
    ("… config files", ("fuzzed_config_files",)),
    ("… template files", ("fuzzed_template_files",)),
    ("command outputs searched for secrets", ("secret_scans",)),
    ("recipients whose ledger row was audited against the sandbox", ("recipients_checked",)),
    ("**duplicates** (a recipient accepted twice)", ("duplicates",)),
    ("**losses** (accepted without a recorded state, phantom or unsettled rows)", ("unrecorded",)),
    ("**webhooks lost after their 200**", ("webhook_lost_after_200",)),
    ("rows left `unknown` by a kill (never resent automatically)", ("unknown_after_crash",)),
    (
        "… of them the platform had accepted (the others never reached it)",
        ("unknown_after_crash_reached_platform",),
    ),
    (
        "… resent by `campaigns resolve --resend-unknown` after the webhooks",
        ("unknown_resent_after_webhooks",),
    ),
    (
        "recipients never reached once unknown rows were settled and resent",
        ("recipients_never_reached_after_settling",),
    ),
    ("rows left `unknown` by a database fault although accepted", ("unknown_after_database_fault",)),
]


def postgres_env() -> dict[str, str]:
    if os.environ.get("WACAMP_TEST_POSTGRES_URL"):
        return {}
    ready = (
        shutil.which("pg_isready")
        and subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False).returncode == 0
    )
    return {"WACAMP_TEST_POSTGRES_URL": CI_POSTGRES_URL} if ready else {}


def run_suite(record_path: Path, *, quick: bool) -> int:
    record_path.parent.mkdir(parents=True, exist_ok=True)
    marker = "not slow" if quick else "slow or not slow"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/reliability",
        "-q",
        "-m",
        marker,
        "-p",
        "no:cacheprovider",
    ]
    env = {**os.environ, **postgres_env(), "WACAMP_RELIABILITY_RECORD": str(record_path)}
    print("running:", " ".join(command), file=sys.stderr)
    return subprocess.run(command, cwd=REPO, env=env, check=False).returncode


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {system}, Python {platform.python_version()}"


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def totals(data: dict[str, Any]) -> Counter[str]:
    total: Counter[str] = Counter()
    for test in data.values():
        total.update(test["counts"])
    return total


def outcome_line(data: dict[str, Any]) -> str:
    outcomes = Counter(test["outcome"] for test in data.values())
    return ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items()))


def short_counts(counts: dict[str, int]) -> str:
    keep = [k for k in counts if not k.startswith("csv_") and k not in ("fuzzed_inputs",)]
    return ", ".join(f"{k.replace('_', ' ')} {counts[k]:,}" for k in sorted(keep)) or "—"


def render(data: dict[str, Any], *, quick: bool, when: str) -> str:
    total = totals(data)
    tier = "the default tier only (`--quick`)" if quick else "every tier (default and `slow`)"
    lines = [
        "# Reliability: faults survived, bad input refused, nothing lost",
        "",
        "Generated by `make reliability-report` (`scripts/reliability_report.py`), which runs",
        "`tests/reliability/` and renders the figures the tests recorded. Do not edit by hand.",
        "",
        f"- Run: {when}, commit `{commit()}`, {tier}",
        f"- Machine: {machine()}",
        f"- Tests: {outcome_line(data)}",
        "",
        "## The figures",
        "",
        "| what | count |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {sum(total[key] for key in keys):,} |" for label, keys in FIGURES]
    lines += ["", "## What was tried and what happens", ""]
    for module, (title, text) in AREAS.items():
        tests = {nodeid: t for nodeid, t in data.items() if nodeid.split("::")[0].endswith(module)}
        lines += [f"### {title}", "", text, "", "| test | outcome | s | counts |", "|---|---|---:|---|"]
        for nodeid, test in sorted(tests.items()):
            name = nodeid.split("::", 1)[1].replace("_", " ").replace("|", "\\|")
            lines.append(
                f"| {name} | {test['outcome']} | {test['duration_s']:.0f} | {short_counts(test['counts'])} |"
            )
        if not tests:
            lines.append("| (not run) | | | |")
        lines.append("")
    lines += [
        "## Decisions",
        "",
        "- **Secrets at rest.** No command writes a secret to a file: settings come from the config",
        "  file the operator writes and from the environment, and `config show` masks them. The SQLite",
        "  database holds contacts (phone numbers) and webhook bodies, which are personal data but no",
        "  credentials; wacamp creates it with the process umask and never makes it group- or",
        "  world-writable. Run wacamp with `UMask=0077` (systemd) or `umask 077` (cron) to keep the",
        "  database, reports and rejects files private to its user.",
        "- **Signatures before parsing.** The receiver checks the body size (Content-Length, then the",
        "  bytes read), then the HMAC over the raw bytes, and only then stores the body; parsing happens",
        "  later in the processor, so a hostile body costs at most one HMAC.",
        "- **Tracebacks.** Bad input never produces one (an unexpected exception prints one line with",
        "  `--debug` advice, and the fuzz tests fail on that line too). A database that disappears in",
        "  the middle of a run is an operational error: its log line carries the traceback for the",
        "  operator, and the run stops resumably.",
        "",
        "Reproduce: `make reliability-report` (or `--quick` for the default tier, about 3 minutes).",
        "",
    ]
    return "\n".join(lines)


def soak_section(page: Path) -> str:
    """The soak's section of the page as it is (written by scripts/soak.py), kept across regenerations."""
    text = page.read_text() if page.exists() else ""
    start, end = "<!-- soak:start -->", "<!-- soak:end -->"
    if start not in text or end not in text:
        return ""
    return "\n" + start + text.split(start, 1)[1].split(end, 1)[0] + end + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the default tier only (no `slow` tests)")
    parser.add_argument("--from-json", type=Path, help="render a recorded run instead of running the suite")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the run's record is kept")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown page to write")
    args = parser.parse_args()
    code = 0
    record_path = args.from_json or args.json
    if args.from_json is None:
        code = run_suite(record_path, quick=args.quick)
    data = json.loads(record_path.read_text())
    when = dt.datetime.fromtimestamp(record_path.stat().st_mtime, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.out.write_text(render(data, quick=args.quick, when=when) + soak_section(args.out))
    print(f"wrote {args.out} ({len(data)} tests; pytest exit {code})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

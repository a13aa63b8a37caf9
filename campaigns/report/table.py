"""The report as rich tables for a terminal (the default `wacamp report` format)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table

from campaigns.planning.summary import format_duration
from campaigns.report.stages_render import ab_table, rollout_table

FUNNEL_ROWS = (
    ("list size", "list_size", None),
    ("planned", "planned", None),
    ("skipped", "skipped", "planned_or_ledger"),
    ("accepted", "accepted", "accepted"),
    ("held (template pacing)", "held", None),
    ("sent", "sent", None),
    ("delivered", "delivered", "delivered"),
    ("read", "read", "read"),
    ("failed", "failed", "failed"),
    ("unknown", "unknown", None),
    ("still pending", "pending", None),
)


def _pct(value: float | None) -> str:
    return f"{value * 100:.1f}%" if value is not None else "–"


def _money(amount: float, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def _definition(facts: dict[str, Any]) -> Table:
    c = facts["campaign"]
    table = Table(title=f"campaign {c['name']} (#{c['id']})", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    state = c["state"] + (f" ({c['pause_reason']})" if c["pause_reason"] else "")
    table.add_row("state", f"[bold]{state}[/bold]")
    table.add_row("template", f"{c['template']} ({c['language']}, {c['category']})")
    if c.get("category_drift"):
        table.add_row("[yellow]category drift[/yellow]", c["category_drift"])
    table.add_row("list / sender", f"{c['list']} / {c['sender']}")
    if c.get("via"):
        policy = f" ({c['product_policy']})" if c.get("product_policy") else ""
        table.add_row("send path", f"{c['via']}{policy}")
    if c["parent"]:
        table.add_row("follow-up of", c["parent"])
    for label, key in (("created", "created_at"), ("started", "started_at"), ("finished", "finished_at")):
        table.add_row(label, c[key] or "–")
    return table


def _funnel(facts: dict[str, Any]) -> Table:
    counts, rates = facts["counts"], facts["rates"]
    table = Table(title="funnel", title_justify="left")
    table.add_column("stage")
    table.add_column("messages", justify="right")
    table.add_column("rate", justify="right")
    notes = {
        "accepted": "of planned",
        "delivered": "of accepted",
        "read": "of delivered",
        "failed": "of planned",
    }
    for label, key, rate_key in FUNNEL_ROWS:
        rate = f"{_pct(rates[rate_key])} {notes[rate_key]}" if rate_key in notes else ""
        table.add_row(label, f"{counts[key]:,}", rate)
    return table


def _skipped(facts: dict[str, Any]) -> Table | None:
    if not facts["skipped"]:
        return None
    table = Table(title="skipped by reason", title_justify="left")
    table.add_column("reason")
    table.add_column("messages", justify="right")
    for reason, count in facts["skipped"].items():
        table.add_row(reason, f"{count:,}")
    return table


def _errors(facts: dict[str, Any]) -> Table | None:
    if not facts["errors"]:
        return None
    table = Table(title="failures by error code", title_justify="left")
    for name, justify in (
        ("code", "right"),
        ("count", "right"),
        ("meaning", "left"),
        ("what wacamp did", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for error in facts["errors"]:
        table.add_row(str(error["code"]), f"{error['count']:,}", error["meaning"], error["action"])
    return table


def _operations(facts: dict[str, Any]) -> Table:
    t, tier, replies = facts["throughput"], facts["tier"], facts["replies"]
    table = Table(title="throughput, tier budget, replies", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("sent in", format_duration(t["duration_s"]) + f" ({t['attempted']:,} requests)")
    table.add_row("mean rate", f"{t['mean_per_s']:,} msg/s")
    table.add_row("busiest second", f"{t['busiest_second']:,} msg at {t['busiest_second_at'] or '–'}")
    codes = ", ".join(f"{code}×{n}" for code, n in t["throttle_by_code"].items())
    table.add_row("throttle events", f"{t['throttle_events']:,}" + (f" ({codes})" if codes else ""))
    limit = f" of {tier['limit']:,}" if tier["limit"] else ""
    table.add_row(
        "tier budget used",
        f"{tier['recipients_counted']:,}{limit} unique recipients ({tier['messaging_tier']})",
    )
    cap = facts.get("frequency_cap") or {}
    if cap.get("cap"):
        held = f"{cap['waiting']:,} waiting for it now, {cap['skipped']:,} skipped as capped"
        table.add_row("frequency cap", f"{cap['cap']} ({cap['policy']}): {held}")
    paths = ", ".join(f"{via} {n:,}" for via, n in sorted(facts.get("paths", {}).items()))
    table.add_row("accepted by API", paths or "–")
    table.add_row(
        "replies",
        f"{replies['replies']:,} replies, {replies['button_taps']:,} button taps, "
        f"{replies['opt_outs']:,} opt-outs from {replies['repliers']:,} people",
    )
    return table


def _cost(facts: dict[str, Any]) -> Table:
    cost = facts["cost"]
    currency = cost["currency"]
    table = Table(title=f"cost ({cost['category']} rate card)", title_justify="left")
    for name in ("", "country code", "messages", "unit price", "total"):
        table.add_column(name, justify="left" if not name or name == "country code" else "right")
    estimate = cost["estimate"]
    for line in estimate["by_country"]:
        total = line["planned"] * line["unit_price"]
        table.add_row(
            "estimate",
            f"+{line['country_code']}",
            f"{line['planned']:,}",
            f"{line['unit_price']:.4f}",
            _money(total, currency),
        )
    table.add_row(
        "[bold]estimate[/bold]", "all", "", "", f"[bold]{_money(estimate['planned'], currency)}[/bold]"
    )
    actual = cost["actual"]
    for line in actual["by_category_country"]:
        table.add_row(
            f"actual {line['category']}",
            f"+{line['country_code']}",
            f"{line['messages']:,}",
            f"{line['unit_price']:.4f}",
            _money(line["total"], currency),
        )
    table.add_row(
        "[bold]actual[/bold] (billable delivered)",
        "all",
        f"{actual['billable_messages']:,}",
        "",
        f"[bold]{_money(actual['total'], currency)}[/bold]",
    )
    if cost["example_prices"]:
        table.caption = f"EXAMPLE prices from {cost['rate_card']}: put your own rate card there"
    return table


def render_table(facts: dict[str, Any], console: Console) -> None:
    """Print the report for people."""
    parts = [
        _definition(facts),
        _funnel(facts),
        _skipped(facts),
        _errors(facts),
        _operations(facts),
        _cost(facts),
        rollout_table(facts),
        ab_table(facts),
    ]
    console.print(Group(*(part for part in parts if part is not None)))

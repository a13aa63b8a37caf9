"""The rollout part of the report (`campaigns.report.stages`) as a terminal table and an HTML section."""

from __future__ import annotations

import html
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_RATES = (
    ("read", "read_rate"),
    ("reply", "reply_rate"),
    ("button", "button_rate"),
    ("opt-out", "opt_out_rate"),
)


def _pct(value: float | None) -> str:
    return f"{value * 100:.1f}%" if value is not None else "–"


def _verdict(stage: dict[str, Any]) -> str:
    guardrails = stage["guardrails"]
    if guardrails is None:
        return "not sent" if not stage["released"] else "–"
    crossed = [c["detail"] for c in guardrails["checks"] if not c["ok"]]
    return str(guardrails["verdict"]) + (": " + "; ".join(crossed) if crossed else "")


def rollout_table(facts: dict[str, Any]) -> Group | None:
    """One row per stage (members, funnel, rates, cost), then each stage's guardrail verdict."""
    rollout = facts.get("rollout")
    if not rollout:
        return None
    table = Table(title="rollout stages", title_justify="left")
    for name in ("stage", "members", "sent", "delivered", "failed", "pending"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    for label, _ in _RATES:
        table.add_column(label, justify="right")
    table.add_column("cost", justify="right")
    for s in rollout["per_stage"]:
        counts = (s["members"], s["sends"], s["delivered"], s["failed"], s["pending"])
        rates = (_pct(s[key]) for _, key in _RATES)
        table.add_row(str(s["stage"]), *map(str, counts), *rates, f"{s['cost']:.2f}")
    lines = [Text(f"rollout: {rollout['current']}; waiting for {rollout['waiting_for']}")]
    lines += [Text(f"{s['label']}: {_verdict(s)}") for s in rollout["per_stage"]]
    return Group(table, *lines)


def _bar(value: float | None) -> str:
    width = 0 if value is None else max(0.0, min(100.0, value * 100))
    return (
        f'<div style="background:#e5e7eb;width:8em;display:inline-block">'
        f'<div style="background:#2563eb;height:0.8em;width:{width:.1f}%"></div></div> {_pct(value)}'
    )


def rollout_html(facts: dict[str, Any]) -> str:
    """The rollout section of the HTML page: a table per stage with a bar per rate ("" without one)."""
    rollout = facts.get("rollout")
    if not rollout:
        return ""
    e = html.escape
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "stage",
            "members",
            "sent",
            "delivered",
            "failed",
            *(n for n, _ in _RATES),
            "cost",
            "guardrails",
        )
    )
    rows = []
    for s in rollout["per_stage"]:
        counts = "".join(f'<td class="n">{s[k]}</td>' for k in ("members", "sends", "delivered", "failed"))
        bars = "".join(f"<td>{_bar(s[key])}</td>" for _, key in _RATES)
        rows.append(
            f'<tr><td>{e(s["label"])}</td>{counts}{bars}<td class="n">{s["cost"]:.2f}</td>'
            f"<td>{e(_verdict(s))}</td></tr>"
        )
    return (
        f"<h2>Rollout</h2><p>{e(rollout['current'])}; waiting for {e(rollout['waiting_for'])}</p>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>"
    )


def ab_table(facts: dict[str, Any]) -> Group | None:
    """One row per A/B variant (members, funnel, rates, cost), then the decision with its numbers."""
    ab = facts.get("ab")
    if not ab:
        return None
    table = Table(title=f"A/B test (metric {ab['metric']}, alpha {ab['alpha']})", title_justify="left")
    for name in ("variant", "template", "members", "delivered", "failed"):
        table.add_column(name, justify="left" if name in ("variant", "template") else "right")
    for label, _ in _RATES:
        table.add_column(label, justify="right")
    table.add_column("cost", justify="right")
    for v in ab["per_variant"]:
        counts = (v["members"], v["delivered"], v["failed"])
        rates = (_pct(v[key]) for _, key in _RATES)
        table.add_row(v["variant"], v["template"], *map(str, counts), *rates, f"{v['cost']:.2f}")
    state = "decided" if ab["decided"] else "so far"
    return Group(table, Text(f"{state}: {ab['decision']['summary']}"))


def ab_html(facts: dict[str, Any]) -> str:
    """The A/B section of the HTML page: the decision, then a block of rate bars per variant."""
    ab = facts.get("ab")
    if not ab:
        return ""
    e = html.escape
    blocks = []
    for v in ab["per_variant"]:
        bars = "".join(f"<tr><td>{label}</td><td>{_bar(v[key])}</td></tr>" for label, key in _RATES)
        head = f"variant {e(v['variant'])}: {e(v['template'])}"
        head += f", {v['members']} members, {v['delivered']} delivered"
        blocks.append(f"<div><h3>{head}</h3><table>{bars}</table></div>")
    state = "Decided" if ab["decided"] else "So far"
    return (
        f"<h2>A/B test</h2><p>{state}: {e(ab['decision']['summary'])}</p>"
        f'<div class="grid">{"".join(blocks)}</div>'
    )

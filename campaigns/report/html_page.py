"""The report as ONE self-contained HTML file: facts, tables and four charts, no network at all.

Charts are drawn by Chart.js (vendored in `vendor/`, MIT), inlined into the page together with the
facts as JSON. A Content-Security-Policy of ``default-src 'none'`` makes the "no network" promise
checkable: the browser itself refuses any fetch, font or image from elsewhere. After drawing, the
page marks ``<body data-charts-ready="4">`` and every canvas with the number of pixels it painted,
which is what the browser test reads.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from campaigns.report.stages_render import ab_html, rollout_html

CHARTJS_VERSION = "4.6.1"
CHART_IDS = ("funnel", "sends", "deliveries", "errors")


def _asset(name: str) -> str:
    return (resources.files("campaigns.report") / "vendor" / name).read_text(encoding="utf-8")


def chartjs_source() -> str:
    """The vendored Chart.js (UMD build)."""
    return _asset("chart.umd.min.js")


def _e(value: Any) -> str:
    return html.escape("–" if value is None else str(value))


def _json_for_script(data: Any) -> str:
    """JSON that cannot close its <script> element (``</`` and ``<!--`` are escaped)."""
    return (
        json.dumps(data, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _rows(rows: list[tuple[Any, ...]], *, numeric: tuple[int, ...] = ()) -> str:
    out = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{_e(v)}</td>' if i in numeric else f"<td>{_e(v)}</td>" for i, v in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    return "".join(out)


def _summary(facts: dict[str, Any]) -> str:
    c, counts, rates = facts["campaign"], facts["counts"], facts["rates"]
    t, replies, cost = facts["throughput"], facts["replies"], facts["cost"]
    funnel = [
        ("list size", counts["list_size"], ""),
        ("planned", counts["planned"], ""),
        ("skipped", counts["skipped"], ", ".join(f"{k}: {v}" for k, v in facts["skipped"].items())),
        ("accepted", counts["accepted"], _rate(rates["accepted"], "of planned")),
        ("held (template pacing)", counts["held"], "accepted, waiting for the template's review"),
        ("sent", counts["sent"], ""),
        ("delivered", counts["delivered"], _rate(rates["delivered"], "of accepted")),
        ("read", counts["read"], _rate(rates["read"], "of delivered")),
        ("failed", counts["failed"], _rate(rates["failed"], "of planned")),
        ("unknown", counts["unknown"], ""),
        ("still pending", counts["pending"], ""),
    ]
    errors = [(e["code"], e["count"], e["title"], e["meaning"], e["action"]) for e in facts["errors"]]
    operations = [
        ("mean rate", f"{t['mean_per_s']} msg/s over {t['duration_s']} s"),
        ("busiest second", f"{t['busiest_second']} messages at {t['busiest_second_at'] or '–'}"),
        ("throttle events", t["throttle_events"]),
        ("accepted by API", ", ".join(f"{via} {n}" for via, n in sorted(facts["paths"].items())) or "–"),
        (
            "tier budget used",
            f"{facts['tier']['recipients_counted']} unique recipients ({facts['tier']['messaging_tier']})",
        ),
        (
            "replies",
            f"{replies['replies']} replies, {replies['button_taps']} taps, {replies['opt_outs']} opt-outs",
        ),
        ("frequency cap", _cap(facts.get("frequency_cap") or {})),
        ("cost estimate", f"{cost['estimate']['planned']:.2f} {cost['currency']}"),
        ("actual cost", f"{cost['actual']['total']:.2f} {cost['currency']}"),
        ("billable delivered", cost["actual"]["billable_messages"]),
    ]
    note = ""
    if cost["example_prices"]:
        source = _e(cost["rate_card"])
        note = f'<p class="note">Prices are EXAMPLE values from {source}: use your own rate card.</p>'
    pause = f" · {_e(c['pause_reason'])}" if c["pause_reason"] else ""
    drift = f"<p><b>Category drift:</b> {_e(c['category_drift'])}</p>" if c.get("category_drift") else ""
    funnel_head = '<tr><th>stage</th><th class="n">messages</th><th>rate</th></tr>'
    error_head = "".join(
        f'<th class="n">{h}</th>' if h in ("code", "count") else f"<th>{h}</th>"
        for h in ("code", "count", "title", "meaning", "what wacamp did")
    )
    return f"""
<h1>{_e(c["name"])}</h1>
<p class="muted">template {_e(c["template"])} ({_e(c["language"])}, {_e(c["category"])}) ·
list {_e(c["list"])} · sender {_e(c["sender"])} · state <b>{_e(c["state"])}</b>{pause} ·
started {_e(c["started_at"])} · report generated {_e(facts["generated_at"])}</p>
{drift}<div class="grid">
<div><h2>Funnel</h2><table>{funnel_head}{_rows(funnel, numeric=(1,))}</table></div>
<div><h2>&nbsp;</h2><div class="chart"><canvas id="funnel"></canvas></div></div>
</div>
<h2>Sending</h2><div class="grid"><div class="chart"><canvas id="sends"></canvas></div>
<div class="chart"><canvas id="deliveries"></canvas></div></div>
<table>{_rows(operations)}</table>{note}
{rollout_html(facts)}
{ab_html(facts)}
<h2>Failures by error code</h2>
<table><tr>{error_head}</tr>{_rows(errors, numeric=(0, 1))}</table>
<div class="chart"><canvas id="errors"></canvas></div>
"""


def _cap(cap: dict[str, Any]) -> str:
    if not cap.get("cap"):
        return "none"
    return f"{cap['cap']} ({cap['policy']}): {cap['waiting']} waiting for it now, {cap['skipped']} skipped"


def _rate(value: float | None, what: str) -> str:
    return f"{value * 100:.1f}% {what}" if value is not None else ""


def render_html(facts: dict[str, Any]) -> str:
    """The whole page: summary tables, the facts as JSON, Chart.js and the drawing code, inline."""
    title = f"wacamp report: {facts['campaign']['name']}"
    csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_asset("report.css")}</style></head>
<body>{_summary(facts)}
<script type="application/json" id="facts">{_json_for_script(facts)}</script>
<script>/* Chart.js {CHARTJS_VERSION} (MIT licence, https://www.chartjs.org) */
{chartjs_source()}</script>
<script>{_asset("draw_charts.js")}</script>
</body></html>
"""

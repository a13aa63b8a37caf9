"""Report facts from a ledger driven by real webhook bodies, and the table/json/csv/html renderers."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.engine import Engine

from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import ThrottleEvent
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.report.facts import campaign_facts
from campaigns.report.html_page import CHART_IDS, render_html
from campaigns.report.recipients_csv import write_recipients_csv
from campaigns.report.table import render_table
from scheduler.webhooks.inbox import InboxItem, insert_bodies
from scheduler.webhooks.processor import process_pending
from tests.ledger_factory import (
    Seeded,
    add_sender,
    envelope,
    inbound_body,
    phone_number,
    seed_campaign,
    status_body,
)

START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
T0 = int(START.timestamp())

#: index → state of the seeded rows: 12 recipients, 2 skipped (one kind of everything, plus a few reads).
STATES = ["accepted"] * 9 + ["unknown", "planned", "skipped"]


@pytest.fixture
def settings() -> Settings:
    loaded, _ = load_settings(environ={})
    return loaded


def drive(engine: Engine, settings: Settings, payloads: list[dict[str, Any]]) -> None:
    insert_bodies(engine, [InboxItem(json.dumps(p)) for p in payloads])
    process_pending(engine, settings)


def seed_report_campaign(engine: Engine, settings: Settings) -> Seeded:
    """12 recipients: 2 read, 2 delivered (1 free), 1 sent, 1 accepted, 3 failed, 1 unknown/planned/skip."""
    phones = [phone_number(i) for i in range(10)] + ["+447700900001", "+447700900002"]
    seeded = seed_campaign(engine, states=STATES, phones=phones, start=START)
    m = seeded.messages
    with engine.begin() as conn:  # spread the sends over 3 seconds: 5, 4, 1
        for index, (mid, _, _) in enumerate(m[:10]):
            second = 0 if index < 5 else (1 if index < 9 else 2)
            at = START + timedelta(seconds=second, milliseconds=index)
            answered = at + timedelta(milliseconds=5) if index < 9 else None
            conn.execute(
                sa.update(MESSAGE).where(MESSAGE.c.id == mid).values(sending_at=at, accepted_at=answered)
            )
        conn.execute(
            sa.insert(ThrottleEvent.__table__),  # type: ignore[attr-defined]
            [{"sender_name": "default", "campaign_id": seeded.campaign_id, "code": 130429, "at": START}],
        )
    s = status_body
    payloads = [
        s(wamid=m[0][2], message_id=m[0][0], status="read", timestamp=T0 + 30),
        s(wamid=m[1][2], message_id=m[1][0], status="delivered", timestamp=T0 + 10),
        s(wamid=m[1][2], message_id=m[1][0], status="read", timestamp=T0 + 40),
        s(wamid=m[2][2], message_id=m[2][0], status="delivered", timestamp=T0 + 12),
        s(wamid=m[3][2], message_id=m[3][0], status="delivered", timestamp=T0 + 12, billable=False),
        s(wamid=m[4][2], message_id=m[4][0], status="sent", timestamp=T0 + 2),
        s(wamid=m[6][2], message_id=m[6][0], status="failed", error_code=131049),
        s(wamid=m[7][2], message_id=m[7][0], status="failed", error_code=131049),
        s(wamid=m[8][2], message_id=m[8][0], status="failed", error_code=131026),
        inbound_body(phone=m[0][1], wamid="wamid.R1", text='=HYPERLINK("http://x")', context=m[0][2]),
        inbound_body(phone=m[1][1], wamid="wamid.R2", text="Stop", payload="STOP", context=m[1][2]),
        inbound_body(phone=m[2][1], wamid="wamid.R3", text="who is this?"),
    ]
    drive(engine, settings, payloads)
    return seeded


def test_the_counts_are_a_funnel_beside_failed_unknown_and_pending(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_report_campaign(engine, settings)
    facts = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)
    assert facts["counts"] == {
        "list_size": 12,
        "ledger": 12,
        "planned": 11,
        "skipped": 1,
        "accepted": 6,
        "sent": 5,
        "delivered": 4,
        "read": 2,
        "held": 0,
        "failed": 3,
        "unknown": 1,
        "pending": 1,
    }
    counts = facts["counts"]
    assert counts["planned"] == counts["accepted"] + counts["failed"] + counts["unknown"] + counts["pending"]
    assert facts["skipped"] == {"suppressed": 1}
    assert facts["rates"] == {
        "accepted": round(6 / 11, 4),
        "delivered": round(4 / 6, 4),
        "read": 0.5,
        "failed": round(3 / 11, 4),
    }


def test_errors_are_listed_by_code_with_meaning_and_action(engine: Engine, settings: Settings) -> None:
    seeded = seed_report_campaign(engine, settings)
    errors = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)["errors"]
    assert [(e["code"], e["count"], e["title"]) for e in errors] == [
        (131049, 2, "error 131049"),
        (131026, 1, "error 131026"),
    ]
    assert "deferred" in errors[0]["action"]
    assert "undeliverable" in errors[1]["meaning"]


def test_throughput_reports_mean_busiest_second_and_throttle_events(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_report_campaign(engine, settings)
    throughput = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)["throughput"]
    assert throughput["attempted"] == 10
    assert throughput["busiest_second"] == 5
    assert throughput["busiest_second_at"] == START.isoformat()
    assert throughput["throttle_events"] == 1
    assert throughput["throttle_by_code"] == {"130429": 1}
    assert throughput["duration_s"] == 3.0  # whole seconds spanned: the sends fall in seconds 0, 1 and 2
    assert throughput["mean_per_s"] == round(10 / 3, 2)


def test_replies_taps_and_opt_outs_are_attributed_to_the_campaign(engine: Engine, settings: Settings) -> None:
    seeded = seed_report_campaign(engine, settings)
    replies = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)["replies"]
    # the third message has no context: it opens a window but is not attributed to the campaign
    assert replies == {"messages": 2, "replies": 1, "button_taps": 1, "opt_outs": 1, "repliers": 2}


def test_actual_cost_counts_billable_delivered_messages_at_the_rate_card(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_report_campaign(engine, settings)
    cost = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)["cost"]
    assert cost["actual"]["billable_messages"] == 3  # 2 read + 1 delivered billable; one delivered is free
    assert cost["actual"]["by_category_country"] == [
        {
            "category": "marketing",
            "country_code": 39,
            "messages": 3,
            "unit_price": 0.0572,
            "total": round(3 * 0.0572, 4),
        }
    ]
    estimate = {line["country_code"]: line for line in cost["estimate"]["by_country"]}
    assert (estimate[39]["planned"], estimate[44]["planned"]) == (10, 1)
    assert cost["estimate"]["planned"] == pytest.approx(10 * 0.0572 + 0.0529)
    assert cost["estimate"]["accepted"] == pytest.approx(6 * 0.0572)
    assert cost["example_prices"] is True


def test_the_timeline_has_sends_deliveries_and_reads_by_second(engine: Engine, settings: Settings) -> None:
    seeded = seed_report_campaign(engine, settings)
    timeline = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)["timeline"]
    assert timeline["bucket_s"] == 1
    assert timeline["start"] == START.isoformat()
    assert timeline["sends"] == [[0, 5], [1, 4], [2, 1]]
    assert sum(n for _, n in timeline["delivered"]) == 4
    assert timeline["read"] == [[30, 1], [40, 1]]


def test_the_csv_has_one_row_per_recipient_and_neutralises_formulas(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_report_campaign(engine, settings)
    out = io.StringIO()
    assert write_recipients_csv(engine, seeded.campaign_id, out) == 12
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["phone"] for r in rows] == [p for _, p, _ in seeded.messages]
    first = rows[0]
    assert first["reply"] == '\'=HYPERLINK("http://x")'
    assert (first["state"], first["billable"], first["pricing_category"]) == ("read", "yes", "marketing")
    assert first["read_at"] == "2026-11-20T09:00:30.000000+00:00"
    assert datetime.fromisoformat(first["read_at"]) == START + timedelta(seconds=30)
    assert rows[1]["opted_out"] == "yes" and rows[1]["button_payload"] == "STOP"
    assert (rows[6]["state"], rows[6]["error_code"]) == ("failed", "131049")
    assert rows[11]["skip_reason"] == "suppressed"


def test_the_table_shows_the_funnel_errors_and_cost(engine: Engine, settings: Settings) -> None:
    seeded = seed_report_campaign(engine, settings)
    console = Console(file=io.StringIO(), width=140, no_color=True)
    render_table(campaign_facts(engine, settings=settings, campaign=seeded.campaign_id), console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"delivered\s+│\s+4\s+│\s+66\.7% of accepted", text)
    assert "131049" in text and "deferred that recipient" in text
    assert "EXAMPLE prices" in text


def test_the_html_is_one_file_without_any_network_reference(engine: Engine, settings: Settings) -> None:
    seeded = seed_report_campaign(engine, settings)
    page = render_html(campaign_facts(engine, settings=settings, campaign=seeded.campaign_id))
    assert "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert page.count("<canvas") == len(CHART_IDS)
    assert "Chart.js v4" in page  # the library itself is inlined
    for line in ("held (template pacing)", "accepted by API", "frequency cap"):
        assert f"<td>{line}</td>" in page, line


def test_campaign_text_cannot_break_out_of_the_html(engine: Engine, settings: Settings) -> None:
    seeded = seed_report_campaign(engine, settings)
    facts = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)
    facts["campaign"]["name"] = "</script><script>alert(1)</script>"
    page = render_html(facts)
    assert "<script>alert(1)" not in page


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")


@pytest.mark.browser
def test_headless_chromium_draws_every_chart_of_the_html_report(
    sqlite_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    browser = chromium()
    seeded = seed_report_campaign(sqlite_engine, settings)
    page = tmp_path / "report.html"
    page.write_text(
        render_html(campaign_facts(sqlite_engine, settings=settings, campaign=seeded.campaign_id))
    )
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    dom = result.stdout
    assert 'data-charts-ready="4"' in dom, result.stderr[-2000:]
    painted = {
        chart_id: int(pixels)
        for chart_id, pixels in re.findall(r'<canvas id="(\w+)"[^>]*data-painted-pixels="(\d+)"', dom)
    }
    assert set(painted) == set(CHART_IDS)
    assert all(pixels > 500 for pixels in painted.values()), painted


def test_the_tier_is_the_one_the_platform_last_reported_when_configured_as_auto(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_report_campaign(engine, settings)
    add_sender(engine)
    value = {"max_daily_conversations_per_business": 10000}
    drive(engine, settings, [envelope("business_capability_update", value)])
    tier = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)["tier"]
    assert tier == {
        "messaging_tier": "TIER_10K",
        "source": "platform",
        "limit": 10000,
        "recipients_counted": 10,
    }


def test_a_campaign_with_an_empty_ledger_reports_zeros_in_every_format(
    engine: Engine, settings: Settings
) -> None:
    seeded = seed_campaign(engine, phones=["+393470000001"], states=["skipped"])
    with engine.begin() as conn:
        conn.execute(sa.delete(MESSAGE))
    facts = campaign_facts(engine, settings=settings, campaign=seeded.campaign_id)
    assert facts["counts"]["ledger"] == 0 and facts["rates"]["delivered"] is None
    assert facts["throughput"]["busiest_second_at"] is None and facts["timeline"]["sends"] == []
    console = Console(file=io.StringIO(), width=140, no_color=True)
    render_table(facts, console)
    assert "funnel" in console.file.getvalue()  # type: ignore[attr-defined]
    assert "<canvas" in render_html(facts)
    out = io.StringIO()
    assert write_recipients_csv(engine, seeded.campaign_id, out) == 0
    assert out.getvalue().startswith("phone,state,")

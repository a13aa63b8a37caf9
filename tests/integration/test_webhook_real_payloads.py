"""Real payloads (Meta's OpenAPI examples, pywa's fixtures) re-addressed, signed, posted and processed."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from campaigns.core.models import InboundMessage, WebhookInbox
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from scheduler.webhooks.processor import process_pending
from scheduler.webhooks.server import WebhookServer
from scheduler.webhooks.signature import HEADER, sign
from tests.fixtures import META_OPENAPI_SPEC as OPENAPI
from tests.fixtures import PYWA_DIR as PYWA
from tests.ledger_factory import row, seed_campaign

OUR_WABA = "200000000000001"
OUR_PHONE_NUMBER_ID = "100000000000001"


@functools.cache
def _spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(OPENAPI.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return loaded


def openapi_examples() -> dict[str, dict[str, Any]]:
    spec = _spec()
    examples = spec["paths"]["/whatsapp/webhooks"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]
    return {name: example["value"] for name, example in examples.items()}


def pywa_cases() -> dict[str, dict[str, Any]]:
    cases: dict[str, dict[str, Any]] = {}
    for path in sorted(PYWA.glob("*.json")):
        for case, body in json.loads(path.read_text(encoding="utf-8")).items():
            cases[f"{path.stem}/{case}"] = body
    assert cases, f"no pywa fixtures in {PYWA} (vendored: see its ORIGIN.md)"
    return cases


def readdress(payload: dict[str, Any], *, wamids: dict[str, str] | None = None) -> dict[str, Any]:
    """Point a foreign payload at our WABA and number (and optionally at our wamids), structure untouched."""
    ours = copy.deepcopy(payload)
    for entry in ours.get("entry", []):
        entry["id"] = OUR_WABA
        for change in entry.get("changes", []):
            value = change.get("value", {})
            if isinstance(value.get("metadata"), dict):
                value["metadata"]["phone_number_id"] = OUR_PHONE_NUMBER_ID
            for status in value.get("statuses", []):
                status["id"] = (wamids or {}).get(status.get("id"), status.get("id"))
    return ours


@pytest.fixture
def settings() -> Settings:
    loaded, _ = load_settings(environ={})
    return loaded


@pytest.fixture
async def server(engine: Engine, settings: Settings) -> AsyncIterator[WebhookServer]:
    async with WebhookServer(engine, settings, port=0, sandbox=True, process=False) as srv:
        yield srv


async def post_all(server: WebhookServer, payloads: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as session:
        for payload in payloads:
            body = json.dumps(payload).encode()
            headers = {HEADER: sign(server.app_secret, body), "Content-Type": "application/json"}
            async with session.post(server.url, data=body, headers=headers) as response:
                assert response.status == 200


def inbox_errors(engine: Engine) -> list[tuple[int, str | None, bool]]:
    table = WebhookInbox.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return [
            (r.id, r.error, r.processed_at is not None)
            for r in conn.execute(sa.select(table).order_by(table.c.id))
        ]


async def test_every_webhook_example_of_metas_openapi_spec_is_ingested_without_error(
    server: WebhookServer, engine: Engine, settings: Settings
) -> None:
    examples = openapi_examples()
    assert len(examples) >= 10
    await post_all(server, [readdress(body) for body in examples.values()])
    process_pending(engine, settings)
    assert inbox_errors(engine) == [(i + 1, None, True) for i in range(len(examples))]
    with engine.connect() as conn:
        inbound = conn.execute(sa.select(sa.func.count()).select_from(InboundMessage.__table__)).scalar_one()  # type: ignore[attr-defined]
    wamids = {
        message["id"]
        for body in examples.values()
        for change in body["entry"][0]["changes"]
        for message in change["value"].get("messages", [])
    }
    assert inbound == len(wamids) >= 8  # every user message example became one inbound row


async def test_every_pywa_fixture_is_ingested_without_error(
    server: WebhookServer, engine: Engine, settings: Settings
) -> None:
    cases = pywa_cases()
    assert len(cases) >= 50
    await post_all(server, [readdress(body) for body in cases.values()])
    process_pending(engine, settings)
    errors = [(name, error) for name, (_, error, _) in zip(cases, inbox_errors(engine), strict=True) if error]
    assert errors == []


async def test_pywa_statuses_readdressed_to_our_rows_drive_the_ledger(
    server: WebhookServer, engine: Engine, settings: Settings
) -> None:
    cases = json.loads((PYWA / "message_status.json").read_text(encoding="utf-8"))
    seeded = seed_campaign(engine, count=2)
    ours, failing = seeded.wamid(0), seeded.wamid(1)
    payloads = [
        readdress(cases[name], wamids={"wamid.xyzxyz": ours}) for name in ("read", "sent", "delivered")
    ]
    payloads.append(readdress(cases["failed"], wamids={"wamid.xyzxyz": failing}))
    await post_all(server, payloads)
    process_pending(engine, settings)
    read, failed = row(engine, seeded.messages[0][0]), row(engine, seeded.messages[1][0])
    assert (read.state, read.pricing_category, read.billable) == ("read", "service", True)
    assert (failed.state, failed.error_code) == ("failed", 130472)
    assert failed.error_title == "User's number is part of an experiment"


def test_readdressing_keeps_the_structure_of_a_payload() -> None:
    original = {
        "object": "x",
        "entry": [{"id": "1", "changes": [{"field": "f", "value": {"metadata": {"phone_number_id": "9"}}}]}],
    }
    moved = readdress(original)
    assert moved["entry"][0]["id"] == OUR_WABA
    assert moved["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] == OUR_PHONE_NUMBER_ID
    assert original["entry"][0]["id"] == "1"

"""Fuzzed webhook bodies, correctly signed, through the real aiohttp receiver, then the processor.

Whatever the body (arbitrary bytes, malformed JSON, wrong types, missing fields, deep nesting,
oversized), the receiver answers 200 (stored) or 413 (over the size limit) and never 500; the
processor marks every stored row processed (with an error when it is not a usable webhook) and never
raises; the ledger keeps its invariants (dedup_hash NULL exactly for failed/skipped rows, states only
from the contract). Unsigned bodies get 401 and are not stored.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.models import WEBHOOK_INBOX_TABLE as INBOX
from campaigns.core.models import MessageState
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from scheduler.webhooks.processor import pending_count, process_pending
from scheduler.webhooks.server import WebhookServer
from scheduler.webhooks.signature import HEADER, sign
from tests.ledger_factory import Seeded, seed_campaign
from tests.reliability import fuzzing
from tests.reliability.record import record
from tests.scheduling_support import MESSAGE

SECRET = "sandbox-secret"
LIMIT_BYTES = 1_048_576
STATES = {state.value for state in MessageState}


@dataclass
class Receiver:
    """A `WebhookServer` (receiver only) on a port of its own, in a thread with its own event loop."""

    engine: Engine
    settings: Settings
    url: str
    seeded: Seeded

    def post(self, body: bytes, *, signed: bool = True) -> int:
        request = urllib.request.Request(self.url, data=body, method="POST")
        if signed:
            request.add_header(HEADER, sign(SECRET, body))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code


@dataclass
class Stopper:
    """Set by the server thread: its loop and the event that ends it."""

    loop: asyncio.AbstractEventLoop | None = None
    event: asyncio.Event | None = None

    def stop(self) -> None:
        assert self.loop is not None and self.event is not None
        self.loop.call_soon_threadsafe(self.event.set)


def _serve(server: WebhookServer, ready: threading.Event, stopper: Stopper) -> None:
    async def main() -> None:
        stopper.loop, stopper.event = asyncio.get_running_loop(), asyncio.Event()
        async with server:
            ready.set()
            await stopper.event.wait()

    asyncio.run(main())


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    path: Path = tmp_path_factory.mktemp("fuzz-webhooks") / "wacamp.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    seeded = seed_campaign(engine, count=6)
    app_settings, _ = load_settings(environ={})
    server = WebhookServer(engine, app_settings, port=0, sandbox=True, process=False)
    ready, stopper = threading.Event(), Stopper()
    thread = threading.Thread(target=_serve, args=(server, ready, stopper), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield Receiver(engine, app_settings, server.url.replace("0.0.0.0", "127.0.0.1"), seeded)
    stopper.stop()
    thread.join(30)
    engine.dispose()


# -- strategies ------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def webhook_like(draw: st.DrawFn, wamids: list[str]) -> dict[str, Any]:
    """A webhook envelope whose fields may be missing or of the wrong type."""

    def maybe(value: Any) -> Any:
        return draw(st.one_of(st.just(value), json_values))

    status = {
        "id": maybe(draw(st.sampled_from([*wamids, "wamid.nope"]))),
        "status": maybe(draw(st.sampled_from(["sent", "delivered", "read", "failed", "deleted", ""]))),
        "timestamp": maybe(str(draw(st.integers(min_value=-(2**63), max_value=2**63)))),
        "recipient_id": maybe("393470000000"),
        "biz_opaque_callback_data": maybe(f"wacamp:{draw(st.integers(min_value=-5, max_value=2**70))}"),
        "errors": maybe([{"code": maybe(131026), "title": maybe("x")}]),
        "pricing": maybe({"billable": maybe(True), "category": maybe("marketing")}),
    }
    status = {k: v for k, v in status.items() if draw(st.booleans()) or k in ("id", "status")}
    inbound = {
        "from": maybe("393470000000"),
        "id": maybe("wamid.in"),
        "timestamp": maybe("1790000000"),
        "type": maybe(draw(st.sampled_from(["text", "button", "interactive", "image"]))),
        "text": maybe({"body": maybe("STOP")}),
        "context": maybe({"id": maybe(draw(st.sampled_from(wamids)))}),
    }
    field = maybe(
        draw(
            st.sampled_from(
                [
                    "messages",
                    "user_preferences",
                    "message_template_status_update",
                    "phone_number_quality_update",
                    "business_capability_update",
                    "account_update",
                ]
            )
        )
    )
    value = {
        "messaging_product": "whatsapp",
        "statuses": maybe([status]),
        "messages": maybe([inbound]),
        "event": maybe("PAUSED"),
        "message_template_name": maybe("promo"),
        "message_template_language": maybe("it"),
        "user_preferences": maybe([{"wa_id": maybe("393470000000"), "value": maybe("stop")}]),
        "current_limit": maybe("TIER_1K"),
    }
    return {
        "object": "whatsapp_business_account",
        "entry": maybe([{"id": "1", "changes": maybe([{"field": field, "value": maybe(value)}])}]),
    }


def nested(depth: int, *, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def bodies(wamids: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
        webhook_like(wamids).map(lambda v: json.dumps(v).encode()),
        webhook_like(wamids).map(lambda v: json.dumps(v).encode()[: len(json.dumps(v)) // 2]),
        st.builds(
            nested, st.integers(min_value=1, max_value=400_000), kind=st.sampled_from(["list", "dict"])
        ),
        st.integers(min_value=LIMIT_BYTES - 10, max_value=3 * LIMIT_BYTES).map(lambda n: b" " * n),
    )


# -- the property ----------------------------------------------------------------------------------


def assert_ledger_invariants(engine: Engine, campaign_id: int) -> None:
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(MESSAGE).where(MESSAGE.c.campaign_id == campaign_id)))
    for row in rows:
        assert row.state in STATES, row
        assert (row.dedup_hash is None) == (row.state in ("failed", "skipped")), row


def check_body(receiver: Receiver, body: bytes) -> None:
    record("fuzzed_inputs")
    record("fuzzed_webhook_bodies")
    with receiver.engine.connect() as conn:
        before = conn.scalar(sa.select(sa.func.count()).select_from(INBOX))
    status = receiver.post(body)
    assert status in (200, 413), status
    with receiver.engine.connect() as conn:
        after = conn.scalar(sa.select(sa.func.count()).select_from(INBOX))
    assert after == before + (1 if status == 200 else 0)
    if len(body) > LIMIT_BYTES:
        assert status == 413
    process_pending(receiver.engine, receiver.settings)
    assert pending_count(receiver.engine) == 0
    assert_ledger_invariants(receiver.engine, receiver.seeded.campaign_id)


def wamids_of(receiver: Receiver) -> list[str]:
    return [receiver.seeded.wamid(i) for i in range(len(receiver.seeded.messages))]


def fuzz(examples: int) -> settings:
    """Hypothesis settings for `examples` inputs, no deadline (a 1 MB body takes its time)."""
    return settings(
        max_examples=fuzzing.examples(examples),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def test_any_signed_body_is_stored_or_refused_as_too_large_and_processing_never_breaks(
    receiver: Receiver,
) -> None:
    @fuzz(150)
    @given(body=bodies(wamids_of(receiver)))
    def property_(body: bytes) -> None:
        check_body(receiver, body)

    property_()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_thousands_of_signed_bodies_are_stored_or_refused_and_processing_never_breaks(
    receiver: Receiver,
) -> None:
    @fuzz(1000)
    @given(body=bodies(wamids_of(receiver)))
    def property_(body: bytes) -> None:
        check_body(receiver, body)

    property_()


@pytest.mark.parametrize(
    "body",
    [
        nested(500_000, kind="list"),
        nested(200_000, kind="dict"),
        b'{"entry": "not a list"}',
        b'{"entry": [1, 2, 3]}',
        b"\x00\xff\xfe",
    ],
    ids=["deep-list", "deep-dict", "entry-not-list", "entry-of-ints", "binary"],
)
def test_a_hostile_signed_body_is_stored_answered_200_and_processed_with_an_error(
    receiver: Receiver, body: bytes
) -> None:
    check_body(receiver, body)
    with receiver.engine.connect() as conn:
        error = conn.scalar(sa.select(INBOX.c.error).order_by(INBOX.c.id.desc()).limit(1))
    assert error, "a body that is not a webhook is kept with the reason"


def test_a_status_with_fields_of_the_wrong_type_is_ignored_and_the_ledger_is_untouched(
    receiver: Receiver,
) -> None:
    wamid = receiver.seeded.wamid(0)
    item = {"id": wamid, "status": ["delivered"], "timestamp": {"x": 1}, "recipient_id": 39}
    body = {"entry": [{"changes": [{"field": "messages", "value": {"statuses": [item]}}]}]}
    with receiver.engine.connect() as conn:
        before = list(conn.execute(sa.select(MESSAGE).order_by(MESSAGE.c.id)))
    check_body(receiver, json.dumps(body).encode())
    with receiver.engine.connect() as conn:
        assert list(conn.execute(sa.select(MESSAGE).order_by(MESSAGE.c.id))) == before


def test_a_three_megabyte_body_is_refused_with_413_before_it_is_read_or_stored(receiver: Receiver) -> None:
    check_body(receiver, b"{" + b" " * (3 * LIMIT_BYTES) + b"}")


def test_unsigned_and_wrongly_signed_bodies_get_401_and_nothing_is_stored(receiver: Receiver) -> None:
    with receiver.engine.connect() as conn:
        before = conn.scalar(sa.select(sa.func.count()).select_from(INBOX))
    body = nested(100_000, kind="list")
    assert receiver.post(body, signed=False) == 401
    request = urllib.request.Request(receiver.url, data=body, method="POST")
    request.add_header(HEADER, sign("another-secret", body))
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a wrong signature was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    with receiver.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(INBOX)) == before
    record("fuzzed_inputs", 2)

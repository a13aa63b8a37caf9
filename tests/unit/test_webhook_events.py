"""The webhook body parser: pure, lenient about the platform's inconsistencies, strict about the envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.webhooks.events import (
    AccountEvent,
    InboundEvent,
    MalformedWebhook,
    SenderCapabilityEvent,
    StatusEvent,
    message_id_of,
    parse_webhook,
    phone_of,
    tier_name,
    timestamp_of,
)
from scheduler.webhooks.signature import is_valid, sign

RECEIVED = datetime(2026, 11, 21, tzinfo=UTC)
TIERS = {"TIER_250": 250, "TIER_2K": 2000, "TIER_10K": 10000}


def envelope(field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": field, "value": value}]}],
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [("wacamp:42", 42), ("wacamp:", None), ("some data", None), (None, None), ("wacamp:4x", None)],
)
def test_only_wacamp_callback_data_names_a_ledger_row(data: object, expected: int | None) -> None:
    assert message_id_of(data) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("TIER_10K", "TIER_10K"),
        ("tier_2k", "TIER_2K"),
        (2000, "TIER_2K"),
        ("250", "TIER_250"),
        (777, "777"),
        ("UNLIMITED", "TIER_UNLIMITED"),
        (None, None),
    ],
)
def test_a_messaging_limit_is_read_as_a_tier_string_or_an_integer(
    value: object, expected: str | None
) -> None:
    assert tier_name(value, TIERS) == expected


def test_timestamps_are_strings_or_integers_and_fall_back_to_receipt_time() -> None:
    assert timestamp_of("1790000000", RECEIVED) == datetime.fromtimestamp(1790000000, tz=UTC)
    assert timestamp_of(1790000000, RECEIVED) == datetime.fromtimestamp(1790000000, tz=UTC)
    assert timestamp_of("soon", RECEIVED) == RECEIVED
    assert timestamp_of(None, RECEIVED) == RECEIVED


def test_a_wa_id_becomes_an_e164_phone() -> None:
    assert (phone_of("393471234567"), phone_of("+393471234567"), phone_of("")) == (
        "+393471234567",
        "+393471234567",
        None,
    )


@pytest.mark.parametrize(
    "payload", [[], "x", {"object": "whatsapp_business_account"}, {"entry": "x"}, {"entry": [1]}]
)
def test_a_body_that_is_not_an_envelope_is_malformed(payload: object) -> None:
    with pytest.raises(MalformedWebhook):
        parse_webhook(payload, received_at=RECEIVED)


def test_one_post_may_carry_several_statuses_and_messages() -> None:
    value = {
        "statuses": [
            {
                "id": "w1",
                "status": "DELIVERED",
                "timestamp": "1790000000",
                "biz_opaque_callback_data": "wacamp:7",
                "pricing": {"billable": True, "category": "marketing"},
            },
            {"id": "w2", "status": "failed", "errors": [{"code": "131049", "message": "limit"}]},
            {"id": "w3"},
        ],
        "messages": [
            {
                "from": "393470000001",
                "id": "in1",
                "type": "interactive",
                "interactive": {"type": "button_reply", "button_reply": {"id": "STOP", "title": "Stop"}},
                "context": {"id": "w1"},
            },
        ],
    }
    events = parse_webhook(envelope("messages", value), received_at=RECEIVED)
    assert events == [
        StatusEvent("delivered", "w1", 7, datetime.fromtimestamp(1790000000, tz=UTC), "marketing", True),
        StatusEvent("failed", "w2", None, RECEIVED, error_code=131049, error_title="limit"),
        InboundEvent(
            "in1", "+393470000001", "interactive", RECEIVED, text="Stop", payload="STOP", context_wamid="w1"
        ),
    ]


def test_a_throughput_upgrade_without_a_level_means_high() -> None:
    value = {
        "display_phone_number": "1555",
        "event": "THROUGHPUT_UPGRADE",
        "max_daily_conversations_per_business": 10000,
    }
    (event,) = parse_webhook(envelope("business_capability_update", value), received_at=RECEIVED, tiers=TIERS)
    assert event == SenderCapabilityEvent(
        "business_capability_update", "THROUGHPUT_UPGRADE", None, "1555", "TIER_10K", "HIGH"
    )


@pytest.mark.parametrize(
    ("value", "restricts"),
    [
        ({"event": "ACCOUNT_RESTRICTION"}, True),
        ({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE"}}, True),
        ({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "REINSTATE"}}, False),
        ({"event": "ACCOUNT_VIOLATION"}, False),
    ],
)
def test_only_restrictions_and_bans_stop_sending(value: dict[str, Any], restricts: bool) -> None:
    (event,) = parse_webhook(envelope("account_update", value), received_at=RECEIVED)
    assert isinstance(event, AccountEvent) and event.restricts is restricts


def test_unknown_fields_give_no_events() -> None:
    assert parse_webhook(envelope("security", {"event": "PIN_CHANGED"}), received_at=RECEIVED) == []


def test_a_signature_is_valid_only_for_the_same_bytes_and_secret() -> None:
    body = b'{"entry": []}'
    header = sign("s3cret", body)
    assert header.startswith("sha256=") and is_valid("s3cret", body, header)
    assert not is_valid("s3cret", body + b" ", header)
    assert not is_valid("other", body, header)
    assert not is_valid("s3cret", body, header.upper().replace("SHA256=", "sha256="))
    assert not is_valid("s3cret", body, None)


def test_values_no_column_can_hold_are_dropped_not_passed_on() -> None:
    status = {
        "id": "w" * 200,
        "status": "failed",
        "timestamp": "253402300799",  # year 9999: date arithmetic on it would overflow
        "biz_opaque_callback_data": "wacamp:" + "9" * 30,
        "errors": [{"code": float("-inf"), "title": "bad\x00title"}],
    }
    inbound = {"from": "3" * 40, "id": "in1", "type": "text", "text": {"body": "x"}}
    events = parse_webhook(
        envelope("messages", {"statuses": [status], "messages": [inbound]}), received_at=RECEIVED
    )
    assert events == [StatusEvent("failed", None, None, RECEIVED, error_code=None, error_title="badtitle")]


@pytest.mark.parametrize("code", [float("inf"), 2**40, True, "13x", None])
def test_an_error_code_that_is_no_storable_integer_is_left_out(code: object) -> None:
    item = {"id": "w1", "status": "failed", "errors": [{"code": code}]}
    (event,) = parse_webhook(envelope("messages", {"statuses": [item]}), received_at=RECEIVED)
    assert isinstance(event, StatusEvent) and event.error_code is None

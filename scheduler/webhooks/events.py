"""A webhook body turned into typed events. Pure: no database, no clock beyond the given default.

The parser is lenient where the platform is inconsistent (ids as strings or integers, timestamps as
strings or integers, fields that appear only sometimes) and strict only about the envelope: a body
that is not ``{"entry": [...]}`` raises `MalformedWebhook`. Fields and event kinds wacamp does not
use are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CALLBACK_PREFIX = "wacamp:"
#: Longest wamid / id the ledger stores (String(128)); longer ones cannot be ours.
MAX_ID_LEN = 128
#: Largest ledger row id (BIGINT) and error code (INTEGER) the database accepts.
MAX_ROW_ID = 2**63 - 1
MAX_ERROR_CODE = 2**31 - 1
#: Longest phone the contact and ledger tables store (E.164 is at most 16 characters with the +).
MAX_PHONE_LEN = 20
#: Event times outside these years are not believed (and would overflow date arithmetic).
EARLIEST_S, LATEST_S = 946_684_800, 4_102_444_800  # 2000-01-01, 2100-01-01


class MalformedWebhook(ValueError):
    """The body is not a webhook envelope (`{"object": ..., "entry": [...]}`)."""


@dataclass(frozen=True)
class StatusEvent:
    """A `statuses[]` item: what happened to one message the business sent."""

    status: str
    wamid: str | None
    message_id: int | None
    at: datetime
    pricing_category: str | None = None
    billable: bool | None = None
    error_code: int | None = None
    error_title: str | None = None
    #: The recipient as E.164 (`recipient_id`): settles rows sent without callback data (marketing path).
    recipient: str | None = None
    #: pricing.type: regular, free_customer_service or free_entry_point.
    pricing_type: str | None = None


@dataclass(frozen=True)
class InboundEvent:
    """A `messages[]` item: a user's message, button tap or interactive reply."""

    wamid: str
    phone: str
    type: str
    at: datetime
    text: str | None = None
    payload: str | None = None
    context_wamid: str | None = None


@dataclass(frozen=True)
class PreferenceEvent:
    """A `user_preferences[]` item: the user stopped or resumed marketing messages."""

    phone: str
    value: str
    category: str
    at: datetime


@dataclass(frozen=True)
class TemplateStatusEvent:
    """`message_template_status_update`: the platform changed a template's status."""

    event: str
    platform_id: str | None
    name: str | None
    language: str | None
    reason: str | None


@dataclass(frozen=True)
class TemplateCategoryEvent:
    """`template_category_update`: a template's category changes (`new_category`) or will change
    (`correct_category`, announced about 24 h ahead)."""

    platform_id: str | None
    name: str | None
    language: str | None
    new_category: str | None
    previous_category: str | None
    correct_category: str | None


@dataclass(frozen=True)
class SenderCapabilityEvent:
    """`phone_number_quality_update` / `business_capability_update`: tier or throughput changed."""

    field: str
    event: str | None
    phone_number_id: str | None
    display_phone_number: str | None
    messaging_tier: str | None
    throughput_level: str | None


@dataclass(frozen=True)
class AccountEvent:
    """`account_update`: something happened to the business account."""

    event: str
    detail: str
    #: True when sending should stop: a restriction, or a ban that is not a reinstatement.
    restricts: bool = False


Event = (
    StatusEvent
    | InboundEvent
    | PreferenceEvent
    | TemplateStatusEvent
    | TemplateCategoryEvent
    | SenderCapabilityEvent
    | AccountEvent
)


def parse_webhook(
    payload: Any, *, received_at: datetime, tiers: Mapping[str, int] | None = None
) -> list[Event]:
    """Every event in one webhook body (one POST may carry many entries, changes and items)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        raise MalformedWebhook("not a webhook envelope: no entry list")
    events: list[Event] = []
    for entry in payload["entry"]:
        if not isinstance(entry, dict):
            raise MalformedWebhook("an entry is not an object")
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if isinstance(value, dict):
                events.extend(_parse_change(str(change.get("field", "")), value, received_at, tiers or {}))
    return events


def _parse_change(
    field: str, value: dict[str, Any], received_at: datetime, tiers: Mapping[str, int]
) -> list[Event]:
    if field == "messages":
        statuses = [_status(item, received_at) for item in _dicts(value.get("statuses"))]
        inbound = [_inbound(item, received_at) for item in _dicts(value.get("messages"))]
        found: list[Event] = [event for event in statuses if event is not None]
        return found + [event for event in inbound if event is not None]
    if field == "user_preferences":
        prefs = [_preference(item, received_at) for item in _dicts(value.get("user_preferences"))]
        return [event for event in prefs if event is not None]
    if field == "message_template_status_update":
        return [_template_status(value)] if value.get("event") else []
    if field == "template_category_update":
        return [_template_category(value)]
    if field in ("phone_number_quality_update", "business_capability_update"):
        return [_capability(field, value, tiers)]
    if field == "account_update" and value.get("event"):
        return [_account(value)]
    return []


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, *, max_len: int | None = None) -> str | None:
    """Text as the database can hold it: no NUL characters, cut to `max_len` (None when empty)."""
    if value is None or value == "":
        return None
    text = str(value).replace("\x00", "")
    return (text[:max_len] if max_len else text) or None


def _id(value: Any) -> str | None:
    """A platform id (wamid, …) that fits wacamp's columns, else None: an id that long is not one of ours."""
    text = _str(value)
    return text if text is not None and len(text) <= MAX_ID_LEN else None


def timestamp_of(value: Any, default: datetime) -> datetime:
    """A platform timestamp (unix seconds as a string or number) as an aware UTC datetime.

    Missing, unreadable or unbelievable (before 2000, after 2100) times become `default`.
    """
    try:
        seconds = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    if isinstance(value, bool) or not EARLIEST_S <= seconds <= LATEST_S:
        return default
    return datetime.fromtimestamp(seconds, tz=UTC)


def message_id_of(callback_data: Any) -> int | None:
    """The ledger row id in ``biz_opaque_callback_data`` ("wacamp:<id>"), else None."""
    if not isinstance(callback_data, str) or not callback_data.startswith(CALLBACK_PREFIX):
        return None
    tail = callback_data.removeprefix(CALLBACK_PREFIX)
    if not (tail.isascii() and tail.isdigit()):
        return None
    row_id = int(tail)
    return row_id if 0 < row_id <= MAX_ROW_ID else None


def phone_of(wa_id: Any) -> str | None:
    """A WhatsApp id ("393471234567") as the E.164 phone wacamp stores ("+393471234567")."""
    text = _str(wa_id)
    if text is None:
        return None
    phone = text if text.startswith("+") else f"+{text}"
    return phone if len(phone) <= MAX_PHONE_LEN else None


def _status(item: dict[str, Any], received_at: datetime) -> StatusEvent | None:
    status = _str(item.get("status"))
    if status is None:
        return None
    pricing = _obj(item.get("pricing"))
    errors = _dicts(item.get("errors"))
    error = errors[0] if errors else {}
    billable = pricing.get("billable")
    return StatusEvent(
        status=status.lower(),
        wamid=_id(item.get("id")),
        message_id=message_id_of(item.get("biz_opaque_callback_data")),
        at=timestamp_of(item.get("timestamp"), received_at),
        pricing_category=_str(pricing.get("category"), max_len=40),
        pricing_type=_str(pricing.get("type"), max_len=40),
        billable=billable if isinstance(billable, bool) else None,
        error_code=_int(error.get("code")),
        error_title=_error_title(error),
        recipient=phone_of(item.get("recipient_id")),
    )


def _int(value: Any) -> int | None:
    """An error code as an int the database can store (bools, infinities, huge or odd values: None)."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if -MAX_ERROR_CODE <= number <= MAX_ERROR_CODE else None


def _error_title(error: dict[str, Any]) -> str | None:
    title = _str(error.get("title")) or _str(error.get("message"))
    return title[:500] if title else None


def _inbound(item: dict[str, Any], received_at: datetime) -> InboundEvent | None:
    wamid, phone = _id(item.get("id")), phone_of(item.get("from"))
    if wamid is None or phone is None:
        return None
    kind = _str(item.get("type")) or "unknown"
    text, payload = _inbound_content(kind, item)
    context = _obj(item.get("context"))
    return InboundEvent(
        wamid=wamid,
        phone=phone,
        type=kind,
        at=timestamp_of(item.get("timestamp"), received_at),
        text=text,
        payload=payload,
        context_wamid=_id(context.get("id")),
    )


def _inbound_content(kind: str, item: dict[str, Any]) -> tuple[str | None, str | None]:
    """(text, payload) of an inbound message: what the user wrote, and what a button carried."""
    body = _obj(item.get(kind))
    if kind == "text":
        return _str(body.get("body")), None
    if kind == "button":
        return _str(body.get("text")), _str(body.get("payload"))
    if kind == "interactive":
        reply = body.get(str(body.get("type"))) if isinstance(body.get("type"), str) else None
        if isinstance(reply, dict):
            return _str(reply.get("title")), _str(reply.get("id"))
        return None, None
    if kind == "reaction":
        return _str(body.get("emoji")), None
    return _str(body.get("caption")), None


def _preference(item: dict[str, Any], received_at: datetime) -> PreferenceEvent | None:
    phone, value = phone_of(item.get("wa_id")), _str(item.get("value"))
    if phone is None or value is None:
        return None
    return PreferenceEvent(
        phone=phone,
        value=value.lower(),
        category=_str(item.get("category")) or "",
        at=timestamp_of(item.get("timestamp"), received_at),
    )


def _template_status(value: dict[str, Any]) -> TemplateStatusEvent:
    return TemplateStatusEvent(
        event=(_str(value["event"], max_len=32) or "").upper(),
        platform_id=_str(value.get("message_template_id"), max_len=64),
        name=_str(value.get("message_template_name")),
        language=_str(value.get("message_template_language")),
        reason=_str(value.get("reason"), max_len=200),
    )


def _category(value: Any) -> str | None:
    text = _str(value, max_len=32)
    return text.upper() if text else None


def _template_category(value: dict[str, Any]) -> TemplateCategoryEvent:
    return TemplateCategoryEvent(
        platform_id=_str(value.get("message_template_id"), max_len=64),
        name=_str(value.get("message_template_name")),
        language=_str(value.get("message_template_language")),
        new_category=_category(value.get("new_category")),
        previous_category=_category(value.get("previous_category")),
        correct_category=_category(value.get("correct_category")),
    )


def tier_name(value: Any, tiers: Mapping[str, int]) -> str | None:
    """`max_daily_conversations_per_business` as a tier name: "TIER_2K" as is, 2000 → "TIER_2K".

    An integer that is no known tier is kept as its digits (the tier budget reads those too).
    """
    if value is None or value == "":
        return None
    text = str(value).strip().upper()
    if text.startswith("TIER_"):
        return text
    if text in ("UNLIMITED", "-1"):
        return "TIER_UNLIMITED"
    if text.isdigit():
        by_limit = {limit: name for name, limit in tiers.items()}
        return by_limit.get(int(text), text)
    return text


def _capability(field: str, value: dict[str, Any], tiers: Mapping[str, int]) -> SenderCapabilityEvent:
    raw_tier = value.get("max_daily_conversations_per_business", value.get("current_limit"))
    throughput = value.get("throughput")
    level = throughput.get("level") if isinstance(throughput, dict) else throughput
    event = _str(value.get("event"))
    if level is None and event == "THROUGHPUT_UPGRADE":
        level = "HIGH"
    metadata = _obj(value.get("metadata"))
    return SenderCapabilityEvent(
        field=field,
        event=event,
        phone_number_id=_str(value.get("phone_number_id")) or _str(metadata.get("phone_number_id")),
        display_phone_number=_str(value.get("display_phone_number")),
        messaging_tier=tier_name(raw_tier, tiers),
        throughput_level=_str(level),
    )


def _account(value: dict[str, Any]) -> AccountEvent:
    event = (_str(value["event"], max_len=100) or "").upper()
    ban = _obj(value.get("ban_info"))
    ban_state = str(ban.get("waba_ban_state", "")).upper()
    restricts = event == "ACCOUNT_RESTRICTION" or (event == "DISABLED_UPDATE" and ban_state != "REINSTATE")
    return AccountEvent(event=event, detail=_account_detail(value), restricts=restricts)


def _account_detail(value: dict[str, Any]) -> str:
    """A short human reason from an account_update (restriction type, ban state, …)."""
    parts: list[str] = []
    for item in _dicts(value.get("restriction_info")):
        parts.append(str(item.get("restriction_type", "")))
    for key in ("ban_info", "violation_info"):
        info = value.get(key)
        if isinstance(info, dict):
            parts.extend(f"{k}={v}" for k, v in info.items() if isinstance(v, str | int))
    return "; ".join(part for part in parts if part)[:300]

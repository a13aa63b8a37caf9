"""Request bodies for a template message, for the Cloud API and the On-Premises API.

The ledger stores the body as the exact JSON text the dispatcher POSTs (`dumps`), so everything a
send depends on is decided here, once, at planning time:

Cloud API (``POST /{version}/{phone_number_id}/messages``)::

    {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+393471234567",
     "type": "template", "biz_opaque_callback_data": "wacamp:42",
     "template": {"name": "promo", "language": {"code": "it"}, "components": [...]}}

On-Premises API (``POST /v1/messages``): the same without ``messaging_product``, with the language
``policy: "deterministic"`` it requires and the template ``namespace`` when one is configured.

The documented limits (`settings_sections.TextLimits`: text parameters, captions, button payloads,
URL suffixes, ``biz_opaque_callback_data``) are enforced here: `ParameterTooLong` names the parameter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from campaigns.core.exceptions import UserError
from campaigns.core.settings_sections import TextLimits

ApiKind = Literal["cloud", "onprem"]
CALLBACK_PREFIX = "wacamp:"
MEDIA_TYPES = {"IMAGE": "image", "VIDEO": "video", "DOCUMENT": "document"}

#: The limits Meta documents, for callers without settings (the shipped defaults are the same).
DEFAULT_LIMITS = TextLimits(
    body_parameter_max=4096,
    header_parameter_max=60,
    caption_max=1024,
    button_payload_max=128,
    url_button_parameter_max=2000,
    biz_opaque_callback_data_max=512,
)


class PayloadError(UserError):
    """A request body cannot be built as asked."""


class ParameterTooLong(PayloadError):
    """A parameter is longer than the platform accepts."""

    def __init__(self, *, parameter: str, length: int, limit: int) -> None:
        self.parameter = parameter
        self.length = length
        self.limit = limit
        super().__init__(f"parameter {parameter} is {length} characters long, the limit is {limit}")


def _check_length(value: str, *, parameter: str, limit: int) -> str:
    if len(value) > limit:
        raise ParameterTooLong(parameter=parameter, length=len(value), limit=limit)
    return value


def text_parameter(
    text: str, *, parameter: str, limit: int, parameter_name: str | None = None
) -> dict[str, Any]:
    """A ``text`` parameter; `parameter_name` for templates with NAMED parameters."""
    if not text:
        raise PayloadError(f"parameter {parameter} is empty (the platform refuses empty parameters)")
    param: dict[str, Any] = {"type": "text"}
    if parameter_name is not None:
        param["parameter_name"] = parameter_name
    param["text"] = _check_length(text, parameter=parameter, limit=limit)
    return param


def media_parameter(
    header_format: str,
    *,
    link: str | None = None,
    media_id: str | None = None,
    caption: str | None = None,
    limits: TextLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """A header ``image`` / ``video`` / ``document`` parameter: an uploaded `media_id`, else `link`."""
    media_type = MEDIA_TYPES.get(header_format.upper())
    if media_type is None:
        raise PayloadError(f"header format {header_format!r} does not take a media link")
    if not link and not media_id:
        raise PayloadError(
            f"the {media_type} header needs a media URL (--header-media-url) or file (--header-media-file)"
        )
    media: dict[str, Any] = {"id": media_id} if media_id else {"link": link}
    if caption:
        media["caption"] = _check_length(caption, parameter="header caption", limit=limits.caption_max)
    return {"type": media_type, media_type: media}


def header_component(parameters: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"type": "header", "parameters": list(parameters)}


def body_component(parameters: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"type": "body", "parameters": list(parameters)}


def quick_reply_button(index: int, payload: str, *, limits: TextLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """A quick-reply button's payload (echoed back in the inbound ``button`` message)."""
    label = f"button.{index} payload"
    _check_length(payload, parameter=label, limit=limits.button_payload_max)
    if not payload:
        raise PayloadError(f"parameter {label} is empty")
    return {
        "type": "button",
        "sub_type": "quick_reply",
        "index": str(index),
        "parameters": [{"type": "payload", "payload": payload}],
    }


def url_button(index: int, suffix: str, *, limits: TextLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The variable suffix of a URL button's link."""
    param = text_parameter(suffix, parameter=f"button.{index}", limit=limits.url_button_parameter_max)
    return {"type": "button", "sub_type": "url", "index": str(index), "parameters": [param]}


def copy_code_button(index: int, code: str, *, limits: TextLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The coupon code of a COPY_CODE button."""
    _check_length(code, parameter=f"button.{index}", limit=limits.button_payload_max)
    return {
        "type": "button",
        "sub_type": "copy_code",
        "index": str(index),
        "parameters": [{"type": "coupon_code", "coupon_code": code}],
    }


def callback_data_for(message_id: int) -> str:
    """The ``biz_opaque_callback_data`` of a ledger row: every status webhook echoes it back."""
    return f"{CALLBACK_PREFIX}{message_id}"


def message_id_from_callback(data: str | None) -> int | None:
    """The ledger row id in a webhook's ``biz_opaque_callback_data``, or None if it is not ours."""
    if not data or not data.startswith(CALLBACK_PREFIX):
        return None
    tail = data[len(CALLBACK_PREFIX) :]
    return int(tail) if tail.isdigit() else None


def template_object(
    *,
    api: ApiKind,
    name: str,
    language: str,
    components: Sequence[Mapping[str, Any]],
    namespace: str | None = None,
) -> dict[str, Any]:
    """The ``template`` object of a send."""
    template: dict[str, Any] = {}
    if api == "onprem" and namespace:
        template["namespace"] = namespace
    template["name"] = name
    template["language"] = (
        {"policy": "deterministic", "code": language} if api == "onprem" else {"code": language}
    )
    if components:
        template["components"] = [dict(c) for c in components]
    return template


def build_template_body(
    *,
    api: ApiKind,
    to: str,
    template: Mapping[str, Any],
    callback_data: str | None = None,
    limits: TextLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The whole request body for one recipient (`template` from `template_object`)."""
    if not to:
        raise PayloadError("the recipient phone number is empty")
    body: dict[str, Any] = {"messaging_product": "whatsapp"} if api == "cloud" else {}
    body.update({"recipient_type": "individual", "to": to, "type": "template", "template": dict(template)})
    if callback_data is not None:
        body["biz_opaque_callback_data"] = _check_length(
            callback_data, parameter="biz_opaque_callback_data", limit=limits.biz_opaque_callback_data_max
        )
    return body


def dumps(body: Mapping[str, Any]) -> str:
    """The JSON text stored in the ledger and POSTed byte for byte."""
    return compact_json(body)


# Our bodies are built by us and cannot hold cycles: skipping the check saves a quarter of the time.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def compact_json(value: Any) -> str:
    """Compact JSON text, keys in the order they were built (our builders' order is fixed).

    The text is the standard library's ``json`` with ``ensure_ascii=False`` and no blanks, byte for
    byte (content hashes depend on it), written by orjson: about 5x faster, and planning encodes every
    recipient's components. Our bodies hold only text, integers, booleans and null, where the two
    agree (tests/unit/test_payloads.py checks every character); whatever orjson refuses (a lone
    surrogate, an integer past 64 bits) goes through ``json``.
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _COMPACT.encode(value)


def content_hash(*, name: str, language: str, components: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the content a recipient sees: template, language and rendered components.

    Everything but the recipient (and the ledger id) goes in, so the same content to the same contact
    has the same hash in any campaign.
    """
    prefix = content_hash_prefix(name=name, language=language)
    return content_hash_of(prefix=prefix, components_json=compact_json(list(components)))


def content_hash_prefix(*, name: str, language: str) -> bytes:
    """What every content hash of one template and language starts from (compute it once)."""
    return f"{compact_json(name)}\x00{compact_json(language)}\x00".encode()


def content_hash_of(*, prefix: bytes, components_json: str) -> str:
    """`content_hash` from `content_hash_prefix` and the components' compact JSON text."""
    return hashlib.sha256(prefix + components_json.encode("utf-8")).hexdigest()


class BodyFormatter:
    """Writes the body JSON of many recipients of one template quickly.

    The text is exactly ``dumps(build_template_body(...))`` (a unit test holds it to that), built by
    joining pre-encoded pieces so planning a million recipients encodes each one's components once.
    """

    def __init__(
        self,
        *,
        api: ApiKind,
        name: str,
        language: str,
        namespace: str | None = None,
        limits: TextLimits = DEFAULT_LIMITS,
        marketing: MarketingOptions | None = None,
    ) -> None:
        #: The Marketing Messages API path: its fields instead of ``biz_opaque_callback_data``.
        self._marketing_tail = marketing.tail_json() if marketing is not None else None
        head = dumps(
            template_object(api=api, name=name, language=language, components=[], namespace=namespace)
        )
        self._template_head = head[:-1]  # without the closing brace: components go there
        self._prefix = '{"messaging_product":"whatsapp",' if api == "cloud" else "{"
        self._limits = limits

    def body(self, *, to: str, components_json: str, message_id: int) -> str:
        """The whole body text of one recipient."""
        return self.finish(self.head(to=to, components_json=components_json), message_id=message_id)

    def head(self, *, to: str, components_json: str) -> str:
        """Everything before the ledger id: computed before the row's id is known."""
        if not to:
            raise PayloadError("the recipient phone number is empty")
        components = f',"components":{components_json}' if components_json != "[]" else ""
        return (
            f'{self._prefix}"recipient_type":"individual","to":{compact_json(to)},"type":"template",'
            f'"template":{self._template_head}{components}}}'
        )

    def finish(self, head: str, *, message_id: int) -> str:
        """`head` completed with the row's ``biz_opaque_callback_data`` (cheap: inside the write lock).

        On the Marketing Messages API path the marketing fields take its place (the API refuses it).
        """
        if self._marketing_tail is not None:
            return f"{head}{self._marketing_tail}}}"
        callback = _check_length(
            callback_data_for(message_id),
            parameter="biz_opaque_callback_data",
            limit=self._limits.biz_opaque_callback_data_max,
        )
        return f'{head},"biz_opaque_callback_data":{compact_json(callback)}}}'


# ------------------------------------------------------------------ the Marketing Messages API path


@dataclass(frozen=True)
class MarketingOptions:
    """What a body for ``POST /{phone_number_id}/marketing_messages`` carries besides the template.

    Meta's schema (``MarketingMessageRequestPayload``, additionalProperties false) has no
    ``biz_opaque_callback_data``: rows of this path are settled by the wamid of the answer (and, when no
    answer came, by recipient and time: `scheduler.webhooks.status_updates`).
    """

    #: CLOUD_API_FALLBACK or STRICT.
    product_policy: str
    #: None leaves the field out.
    message_activity_sharing: bool | None = None

    def fields(self) -> dict[str, Any]:
        """The body fields, in the order they are written."""
        extra: dict[str, Any] = {"product_policy": self.product_policy}
        if self.message_activity_sharing is not None:
            extra["message_activity_sharing"] = self.message_activity_sharing
        return extra

    def tail_json(self) -> str:
        """The fields as JSON text to append inside the body object (starting with a comma)."""
        return "," + compact_json(self.fields())[1:-1]


def build_marketing_body(
    *, to: str, template: Mapping[str, Any], marketing: MarketingOptions
) -> dict[str, Any]:
    """The whole Marketing Messages API body for one recipient (`template` from `template_object`)."""
    body = build_template_body(api="cloud", to=to, template=template)
    body.update(marketing.fields())
    return body


def cloud_body_from_marketing(body_json: str, *, message_id: int, limits: TextLimits = DEFAULT_LIMITS) -> str:
    """The Cloud API body of a frozen marketing body (fallback): its fields out, the callback data in."""
    body = json.loads(body_json)
    for key in ("product_policy", "message_activity_sharing"):
        body.pop(key, None)
    body["biz_opaque_callback_data"] = _check_length(
        callback_data_for(message_id),
        parameter="biz_opaque_callback_data",
        limit=limits.biz_opaque_callback_data_max,
    )
    return dumps(body)

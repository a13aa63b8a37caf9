"""Request bodies: Cloud vs On-Premises shape, limits, callback data and the content hash."""

from __future__ import annotations

import json

import pytest

from campaigns.content import payloads
from campaigns.content.payloads import ParameterTooLong, PayloadError


def _template(api: payloads.ApiKind) -> dict[str, object]:
    return payloads.template_object(
        api=api,
        name="promo",
        language="it",
        components=[payloads.body_component([{"type": "text", "text": "Marco"}])],
        namespace="ns-1",
    )


def test_cloud_body_has_messaging_product_and_the_callback_data() -> None:
    body = payloads.build_template_body(
        api="cloud",
        to="+393471234567",
        template=_template("cloud"),
        callback_data=payloads.callback_data_for(42),
    )
    assert body["messaging_product"] == "whatsapp"
    assert body["biz_opaque_callback_data"] == "wacamp:42"
    assert body["template"] == {
        "name": "promo",
        "language": {"code": "it"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Marco"}]}],
    }


def test_onprem_body_has_no_messaging_product_but_a_namespace_and_a_language_policy() -> None:
    body = payloads.build_template_body(api="onprem", to="+393471234567", template=_template("onprem"))
    assert "messaging_product" not in body
    assert body["template"]["namespace"] == "ns-1"  # type: ignore[index]
    assert body["template"]["language"] == {"policy": "deterministic", "code": "it"}  # type: ignore[index]


def test_a_text_parameter_over_the_limit_names_the_parameter() -> None:
    with pytest.raises(
        ParameterTooLong, match=r"parameter body\.2 is 4097 characters long, the limit is 4096"
    ):
        payloads.text_parameter("x" * 4097, parameter="body.2", limit=4096)
    assert payloads.text_parameter("x" * 4096, parameter="body.2", limit=4096)["text"] == "x" * 4096


def test_button_payload_and_url_suffix_and_callback_data_limits_are_enforced() -> None:
    with pytest.raises(ParameterTooLong, match=r"button\.0 payload"):
        payloads.quick_reply_button(0, "P" * 129)
    with pytest.raises(ParameterTooLong, match=r"button\.1"):
        payloads.url_button(1, "s" * 2001)
    with pytest.raises(ParameterTooLong, match="biz_opaque_callback_data"):
        payloads.build_template_body(
            api="cloud", to="+39", template=_template("cloud"), callback_data="c" * 513
        )
    with pytest.raises(ParameterTooLong, match="caption"):
        payloads.media_parameter("IMAGE", link="https://x/i.jpg", caption="c" * 1025)


def test_empty_parameters_and_missing_media_links_are_refused() -> None:
    with pytest.raises(PayloadError, match="empty"):
        payloads.text_parameter("", parameter="body.1", limit=10)
    with pytest.raises(PayloadError, match="media URL"):
        payloads.media_parameter("IMAGE", link="")


def test_named_parameters_carry_their_name() -> None:
    param = payloads.text_parameter(
        "Anna", parameter="body.first_name", limit=10, parameter_name="first_name"
    )
    assert param == {"type": "text", "parameter_name": "first_name", "text": "Anna"}


def test_the_content_hash_ignores_the_recipient_but_not_the_content() -> None:
    components = [payloads.body_component([{"type": "text", "text": "Marco"}])]
    same = payloads.content_hash(name="promo", language="it", components=components)
    assert same == payloads.content_hash(
        name="promo", language="it", components=json.loads(json.dumps(components))
    )
    other = [payloads.body_component([{"type": "text", "text": "Maria"}])]
    assert same != payloads.content_hash(name="promo", language="it", components=other)
    assert same != payloads.content_hash(name="promo", language="en", components=components)


def test_the_callback_data_gives_back_the_ledger_id() -> None:
    assert payloads.message_id_from_callback(payloads.callback_data_for(7)) == 7
    assert payloads.message_id_from_callback("someone-else:7") is None
    assert payloads.message_id_from_callback(None) is None


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert payloads.dumps({"a": "sì", "b": [1]}) == '{"a":"sì","b":[1]}'


@pytest.mark.parametrize("api", ["cloud", "onprem"])
@pytest.mark.parametrize(
    "components",
    [
        [],
        [payloads.body_component([{"type": "text", "parameter_name": "nome", "text": 'Niccolò "N" \\ 😀'}])],
        [payloads.quick_reply_button(0, "STOP"), payloads.url_button(1, "a/b?c=d")],
    ],
)
def test_the_fast_body_formatter_writes_exactly_what_the_builder_builds(
    api: payloads.ApiKind, components: list[dict[str, object]]
) -> None:
    formatter = payloads.BodyFormatter(api=api, name="promo_è", language="it", namespace="ns-1")
    fast = formatter.body(
        to="+393471234567", components_json=payloads.compact_json(components), message_id=77
    )
    template = payloads.template_object(
        api=api, name="promo_è", language="it", components=components, namespace="ns-1"
    )
    slow = payloads.build_template_body(
        api=api, to="+393471234567", template=template, callback_data=payloads.callback_data_for(77)
    )
    assert fast == payloads.dumps(slow)

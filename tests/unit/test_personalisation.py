"""Binding placeholders to contact attributes: keys, value texts, defaults and validation."""

from __future__ import annotations

import pytest

from campaigns.content.payloads import DEFAULT_LIMITS, ParameterTooLong
from campaigns.content.personalisation import (
    BindingError,
    Bindings,
    MissingColumn,
    Personaliser,
    ValueText,
    binding_problems,
    canonical_key,
)
from campaigns.templates.catalog import parse_template
from tests.unit.test_templates import NAMED, PROMO


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("1", "body.1"),
        ("first_name", "body.first_name"),
        ("header.1", "header.1"),
        ("button.0", "button.0"),
        ("button.2.1", "button.2"),
        ("body.code", "body.code"),
    ],
)
def test_param_keys_default_to_the_body(key: str, canonical: str) -> None:
    assert canonical_key(key) == canonical


def test_an_unreadable_param_key_is_refused() -> None:
    with pytest.raises(BindingError):
        canonical_key("button.x")
    with pytest.raises(BindingError):
        canonical_key("first name")


def test_value_texts_replace_columns_and_keep_doubled_braces() -> None:
    text = ValueText.compile("Ciao {first_name} {{ok}}")
    assert text.columns == ["first_name"]
    assert text.render({"first_name": "Marco"}) == "Ciao Marco {ok}"
    with pytest.raises(BindingError, match="unbalanced"):
        ValueText.compile("Ciao {first_name")


def test_binding_problems_are_all_listed_at_once() -> None:
    shape = parse_template(PROMO).shape()
    problems = binding_problems(
        shape,
        Bindings(params={"body.1": "X", "body.9": "Y"}, button_payloads={"1": "P"}, defaults={"city": ""}),
    )
    text = "\n".join(problems)
    assert "placeholder header.1 is not bound" in text
    assert "placeholder body.2 is not bound" in text
    assert "placeholder button.1 is not bound" in text
    assert "--param body.9: the template has no such placeholder" in text
    assert "--button-payload 1: not a quick-reply button" in text
    assert "--default city=" in text
    assert len(problems) == 6


def test_a_media_header_without_url_or_file_is_a_problem() -> None:
    data = {**PROMO, "components": [{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "x"}]}
    shape = parse_template(data).shape()
    assert binding_problems(shape, Bindings()) == [
        "the template's IMAGE header needs --header-media-url or --header-media-file"
    ]
    both = Bindings(header_media_url="https://x.it/a.png", header_media_file="/tmp/a.png")
    assert binding_problems(shape, both) == ["give --header-media-url or --header-media-file, not both"]


def _promo(**kw: object) -> Personaliser:
    params = {"header.1": "{first_name}", "body.1": "SPRING20", "body.2": "31/3", "button.1": "{phone}"}
    bindings = Bindings(params=params, button_payloads={"0": "STOP"}, **kw)  # type: ignore[arg-type]
    return Personaliser(
        template_name="spring_promo",
        language="it",
        shape=parse_template(PROMO).shape(),
        bindings=bindings,
        limits=DEFAULT_LIMITS,
    )


def test_rendering_builds_header_body_and_button_components() -> None:
    rendered = _promo().render(phone="+393471234567", attributes={"first_name": " Marco "})
    assert rendered.components == [
        {"type": "header", "parameters": [{"type": "text", "text": "Marco"}]},
        {
            "type": "body",
            "parameters": [{"type": "text", "text": "SPRING20"}, {"type": "text", "text": "31/3"}],
        },
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "STOP"}],
        },
        {
            "type": "button",
            "sub_type": "url",
            "index": "1",
            "parameters": [{"type": "text", "text": "+393471234567"}],
        },
    ]


def test_a_missing_attribute_takes_its_default_or_names_the_column() -> None:
    with pytest.raises(MissingColumn, match="first_name"):
        _promo().render(phone="+39", attributes={"first_name": "  "})
    rendered = _promo(defaults={"first_name": "amico"}).render(phone="+39", attributes={})
    assert rendered.components[0]["parameters"][0]["text"] == "amico"


def test_a_header_parameter_over_60_characters_is_too_long() -> None:
    with pytest.raises(ParameterTooLong, match=r"header\.1"):
        _promo().render(phone="+39", attributes={"first_name": "M" * 61})


def test_named_templates_send_parameter_names() -> None:
    shape = parse_template(NAMED).shape()
    bindings = Bindings(params={"body.first_name": "{name}", "body.code": "C-{phone}"})
    assert binding_problems(shape, bindings) == []
    personaliser = Personaliser(
        template_name="welcome", language="en_US", shape=shape, bindings=bindings, limits=DEFAULT_LIMITS
    )
    rendered = personaliser.render(phone="+1555", attributes={"name": "Anna"})
    assert rendered.components == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "first_name", "text": "Anna"},
                {"type": "text", "parameter_name": "code", "text": "C-+1555"},
            ],
        }
    ]


def test_attributes_the_campaign_does_not_use_leave_the_content_hash_unchanged() -> None:
    a = _promo().render(phone="+391", attributes={"first_name": "Marco"})
    b = _promo(defaults={}).render(phone="+391", attributes={"first_name": "Marco", "city": "Roma"})
    c = _promo().render(phone="+391", attributes={"first_name": "Maria"})
    assert a.content_hash == b.content_hash != c.content_hash


def _image_header(**kw: str) -> Personaliser:
    data = {**PROMO, "components": [{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "x"}]}
    return Personaliser(
        template_name="pic",
        language="it",
        shape=parse_template(data).shape(),
        bindings=Bindings(**kw),  # type: ignore[arg-type]
        limits=DEFAULT_LIMITS,
    )


def test_an_uploaded_header_is_sent_by_id_and_hashed_by_the_file_not_the_upload() -> None:
    first = _image_header(header_media_id="111", header_media_sha256="ab" * 32)
    again = _image_header(header_media_id="222", header_media_sha256="ab" * 32)  # re-uploaded: new id
    other = _image_header(header_media_id="111", header_media_sha256="cd" * 32)  # other bytes
    render = [p.render(phone="+393471234567", attributes={}) for p in (first, again, other)]
    assert render[0].components[0] == {
        "type": "header",
        "parameters": [{"type": "image", "image": {"id": "111"}}],
    }
    assert '"image":{"id":"222"}' in render[1].components_json
    assert render[0].content_hash == render[1].content_hash  # same file: same content for dedup
    assert render[0].content_hash != render[2].content_hash

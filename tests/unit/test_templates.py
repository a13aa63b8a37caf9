"""Reading templates: placeholders per component, parameter formats, header formats, buttons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from campaigns.core.exceptions import InputFileError
from campaigns.templates.catalog import (
    TemplateFormatError,
    load_templates_file,
    parse_template,
    placeholder_keys,
)

PROMO = {
    "name": "spring_promo",
    "language": "it",
    "status": "APPROVED",
    "category": "MARKETING",
    "parameter_format": "POSITIONAL",
    "id": "111",
    "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Ciao {{1}}", "example": {"header_text": ["Marco"]}},
        {
            "type": "BODY",
            "text": "Usa il codice {{1}} entro il {{2}}.",
            "example": {"body_text": [["SPRING20", "31 marzo"]]},
        },
        {"type": "FOOTER", "text": "Rispondi STOP per non ricevere altro"},
        {
            "type": "BUTTONS",
            "buttons": [
                {"type": "QUICK_REPLY", "text": "Stop"},
                {
                    "type": "URL",
                    "text": "Shop",
                    "url": "https://x.it/s/{{1}}",
                    "example": ["https://x.it/s/abc"],
                },
                {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+39021234567"},
            ],
        },
    ],
}

NAMED = {
    "name": "welcome",
    "language": "en_US",
    "status": "APPROVED",
    "category": "MARKETING",
    "parameter_format": "NAMED",
    "components": [
        {
            "type": "BODY",
            "text": "Hi {{first_name}}, your code is {{code}}. Bye {{first_name}}!",
            "example": {
                "body_text_named_params": [
                    {"param_name": "first_name", "example": "Anna"},
                    {"param_name": "code", "example": "X1"},
                ]
            },
        }
    ],
}


def test_positional_placeholders_are_read_from_header_body_and_url_button() -> None:
    shape = parse_template(PROMO).shape()
    assert [p.label for p in shape.placeholders()] == ["header.1", "body.1", "body.2", "button.1"]
    assert shape.quick_reply_indexes() == [0]
    assert shape.header_format == "TEXT"
    assert not shape.needs_header_media


def test_named_placeholders_are_listed_once_in_order_of_first_use() -> None:
    shape = parse_template(NAMED).shape()
    assert [p.label for p in shape.body] == ["body.first_name", "body.code"]
    assert [p.example for p in shape.body] == ["Anna", "X1"]


def test_example_rendering_uses_the_template_examples() -> None:
    rendered = parse_template(PROMO).shape().render_example()
    assert rendered["header"] == "Ciao Marco"
    assert rendered["body"] == "Usa il codice SPRING20 entro il 31 marzo."
    assert rendered["buttons"] == ["[Stop]", "[Shop] https://x.it/s/abc", "[Call]"]


def test_positional_keys_are_ordered_by_number() -> None:
    assert placeholder_keys("{{2}} then {{1}} and {{ 2 }}") == ["1", "2"]


@pytest.mark.parametrize("fmt", ["IMAGE", "VIDEO", "DOCUMENT"])
def test_a_media_header_needs_a_media_url(fmt: str) -> None:
    data = {**PROMO, "components": [{"type": "HEADER", "format": fmt}, {"type": "BODY", "text": "x"}]}
    assert parse_template(data).shape().needs_header_media


def test_parameter_format_is_inferred_when_the_platform_omits_it() -> None:
    data = {k: v for k, v in NAMED.items() if k != "parameter_format"}
    assert parse_template(data).parameter_format == "NAMED"
    data = {k: v for k, v in PROMO.items() if k != "parameter_format"}
    assert parse_template(data).parameter_format == "POSITIONAL"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "'name'"),
        ({"components": [{"type": "HEADER", "format": "GIF"}, {"type": "BODY", "text": "x"}]}, "format"),
        ({"components": [{"type": "FOOTER", "text": "x"}]}, "exactly one BODY"),
        ({"parameter_format": "WHATEVER"}, "parameter_format"),
    ],
)
def test_malformed_templates_are_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(TemplateFormatError, match=field):
        parse_template({**PROMO, **change})


def test_an_import_file_error_names_the_file_and_the_template_index(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"data": [PROMO, {**NAMED, "status": None}]}), encoding="utf-8")
    with pytest.raises(InputFileError, match=r"t\.json: template 1 \('welcome'\): field 'status'"):
        load_templates_file(path)


def test_an_import_file_may_be_a_plain_list(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps([PROMO, NAMED]), encoding="utf-8")
    assert [t.name for t in load_templates_file(path)] == ["spring_promo", "welcome"]


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"data": [\n  {,}\n]}', encoding="utf-8")
    with pytest.raises(InputFileError, match="line 2"):
        load_templates_file(path)

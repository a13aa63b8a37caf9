"""Contract: the bodies we build validate against Meta's own OpenAPI schemas (v23.0).

Top level against `BaseMessageProperties`, the template against `TemplateObject`, and each component and
parameter against the schema its `type` maps to (jsonschema ignores OpenAPI's `discriminator`, so we
follow the mapping ourselves). Two known defects of the spec are coded around here, in memory, without
touching the file (see tests/fixtures/meta_openapi/README.md): the button `index` pattern `^[2-6, 11-14]$`
rejects the "0" the spec's own examples use, and `LanguageObject` requires a `policy` the Cloud API does not
take.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema
import yaml

from campaigns.content import payloads
from campaigns.content.payloads import DEFAULT_LIMITS
from campaigns.content.personalisation import Bindings, Personaliser
from campaigns.templates.catalog import parse_template
from tests.fixtures import META_OPENAPI_SPEC as SPEC
from tests.unit.test_templates import NAMED, PROMO


def _patched_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = copy.deepcopy(spec["components"]["schemas"])
    # Spec defect 1: a character class instead of "0-9"; the description says "Position index (0-9)".
    schemas["TemplateComponent"]["properties"]["index"]["pattern"] = "^[0-9]$"
    for part in schemas["ButtonComponent"]["allOf"]:
        if "index" in part.get("properties", {}):
            part["properties"]["index"]["pattern"] = "^[0-9]$"
    # Spec defect 2: `policy` is required but the Cloud API and the spec's examples omit it.
    schemas["LanguageObject"]["required"] = ["code"]
    return schemas


@pytest.fixture(scope="module")
def validate() -> Any:
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    spec["components"]["schemas"] = _patched_schemas(spec)
    resource = referencing.Resource.from_contents(
        spec, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry = referencing.Registry().with_resource("urn:meta", resource)

    def check(instance: Any, schema_name: str) -> None:
        schema = {"$ref": f"urn:meta#/components/schemas/{schema_name}"}
        jsonschema.Draft202012Validator(schema, registry=registry).validate(instance)

    return check


COMPONENT_SCHEMAS = {"header": "HeaderComponent", "body": "BodyComponent", "button": "ButtonComponent"}
PARAMETER_SCHEMAS = {
    "text": "TextParameter",
    "image": "ImageParameter",
    "video": "VideoParameter",
    "document": "DocumentParameter",
    "payload": "ButtonPayloadParameter",
}


def _validate_body(validate: Any, body: dict[str, Any]) -> None:
    validate(body, "BaseMessageProperties")
    validate(body["template"], "TemplateObject")
    for component in body["template"].get("components", []):
        validate(component, COMPONENT_SCHEMAS[component["type"]])
        for parameter in component["parameters"]:
            validate(parameter, PARAMETER_SCHEMAS[parameter["type"]])


def _body(data: dict[str, Any], bindings: Bindings, *, api: payloads.ApiKind = "cloud") -> dict[str, Any]:
    template = parse_template(data)
    personaliser = Personaliser(
        template_name=template.name,
        language=template.language,
        shape=template.shape(),
        bindings=bindings,
        limits=DEFAULT_LIMITS,
    )
    rendered = personaliser.render(phone="+393471234567", attributes={"first_name": "Marco"})
    return personaliser.body_for(rendered, api=api, to="+393471234567", message_id=9, namespace="ns")


def test_a_positional_template_with_header_url_and_quick_reply_buttons_matches_the_spec(
    validate: Any,
) -> None:
    params = {"header.1": "{first_name}", "body.1": "SPRING20", "body.2": "31/3", "button.1": "abc"}
    body = _body(PROMO, Bindings(params=params, button_payloads={"0": "STOP"}))
    _validate_body(validate, body)
    assert [c["type"] for c in body["template"]["components"]] == ["header", "body", "button", "button"]


def test_a_named_template_matches_the_spec(validate: Any) -> None:
    body = _body(NAMED, Bindings(params={"body.first_name": "{first_name}", "body.code": "X"}))
    _validate_body(validate, body)  # raises jsonschema.ValidationError on any mismatch
    named = body["template"]["components"][0]["parameters"]
    assert {p["parameter_name"] for p in named} == {"first_name", "code"}


@pytest.mark.parametrize("fmt", ["IMAGE", "VIDEO", "DOCUMENT"])
def test_a_media_header_matches_the_spec(validate: Any, fmt: str) -> None:
    data = {**PROMO, "components": [{"type": "HEADER", "format": fmt}, {"type": "BODY", "text": "Hi"}]}
    body = _body(data, Bindings(header_media_url="https://example.com/m/{first_name}"))
    _validate_body(validate, body)  # raises jsonschema.ValidationError on any mismatch
    header = body["template"]["components"][0]
    assert header["type"] == "header" and header["parameters"][0]["type"] == fmt.lower()


def test_the_contract_test_can_fail(validate: Any) -> None:
    body = _body(NAMED, Bindings(params={"body.first_name": "{first_name}", "body.code": "X"}))
    del body["to"]
    with pytest.raises(jsonschema.ValidationError):
        _validate_body(validate, body)
    broken = _body(NAMED, Bindings(params={"body.first_name": "{first_name}", "body.code": "X"}))
    broken["template"]["components"][0]["parameters"][0] = {"type": "text"}
    with pytest.raises(jsonschema.ValidationError):
        _validate_body(validate, broken)


def test_an_onprem_body_matches_the_template_schema(validate: Any) -> None:
    body = _body(NAMED, Bindings(params={"body.first_name": "{first_name}", "body.code": "X"}), api="onprem")
    validate(body["template"], "TemplateObject")
    assert "messaging_product" not in body

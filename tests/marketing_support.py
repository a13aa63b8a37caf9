"""Meta's `MarketingMessageRequestPayload` (v23.0, additionalProperties false) as a validator for tests.

The same two spec defects as `tests/integration/test_payload_contract.py` are patched in memory; the
components and parameters are checked against the schema their `type` maps to, as there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema
import yaml

from tests.fixtures import META_OPENAPI_SPEC as SPEC
from tests.integration.test_payload_contract import COMPONENT_SCHEMAS, PARAMETER_SCHEMAS, _patched_schemas


@functools.cache
def _validator() -> Callable[[Any, str], None]:
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    spec["components"]["schemas"] = _patched_schemas(spec)
    resource = referencing.Resource.from_contents(
        spec, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry = referencing.Registry().with_resource("urn:meta", resource)
    validators: dict[str, jsonschema.Draft202012Validator] = {}

    def check(instance: Any, schema_name: str) -> None:
        if schema_name not in validators:
            schema = {"$ref": f"urn:meta#/components/schemas/{schema_name}"}
            validators[schema_name] = jsonschema.Draft202012Validator(schema, registry=registry)
        validators[schema_name].validate(instance)

    return check


def validate_marketing_body(body: dict[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` unless `body` is a valid Marketing Messages API request."""
    check = _validator()
    check(body, "MarketingMessageRequestPayload")
    for component in body["template"].get("components", []):
        check(component, COMPONENT_SCHEMAS[component["type"]])
        for parameter in component["parameters"]:
            check(parameter, PARAMETER_SCHEMAS[parameter["type"]])

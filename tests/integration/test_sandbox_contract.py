"""Contract test: every status webhook the sandbox emits validates against Meta's `WebhookPayload` schema."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

from sandbox.config import SandboxConfig, WebhookTiming
from sandbox.server import running_sandbox
from tests.fixtures import META_OPENAPI_SPEC as SPEC
from tests.sandbox_support import client_for, numbers, receiving, spring_sale, template_body


@functools.cache
def _registry() -> Any:
    import yaml
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource("urn:meta-spec", resource)


def validator_for(pointer: str) -> Any:
    """A validator for the schema at a JSON pointer of the spec (path segments escaped)."""
    import jsonschema

    escaped = "/".join(quote(part.replace("~", "~0").replace("/", "~1")) for part in pointer)
    return jsonschema.Draft202012Validator({"$ref": f"urn:meta-spec#/{escaped}"}, registry=_registry())


def webhook_validator() -> Any:
    return validator_for(["components", "schemas", "WebhookPayload"])


async def test_every_status_webhook_validates_against_the_specs_webhook_payload() -> None:
    timing = WebhookTiming(
        sent_delay_s=(0.0, 0.02),
        delivered_delay_s=(0.0, 0.05),
        read_delay_s=(0.0, 0.05),
        delivered_share=0.8,
        read_share=0.6,
        duplicate_share=0.3,
        out_of_order_share=0.2,
        skip_delivered_share=0.2,
    )
    named = [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Emma", "parameter_name": "first_name"},
                {"type": "text", "text": "A-9", "parameter_name": "order_id"},
            ],
        }
    ]
    async with receiving() as receiver:
        config = SandboxConfig(
            webhook_url=receiver.url,
            webhook=timing,
            pair_spacing_s=0,
            not_on_whatsapp_share=0.15,
            marketing_limit_share=0.15,
            opted_out_numbers=frozenset({"393470000003"}),
        )
        async with running_sandbox(config) as sb, client_for(sb) as client:
            for index, to in enumerate(numbers(40)):
                await client.send(spring_sale(to, callback=f"wacamp:{index}"))
            await client.send(template_body("+447700900123", "order_shipped", "en", named))
            await client.send(
                {
                    "messaging_product": "whatsapp",
                    "to": "447700900124",
                    "type": "text",
                    "text": {"body": "hi"},
                }
            )
            assert await sb.webhooks_drained(timeout_s=20)
    validator = webhook_validator()
    status_payloads = [
        payload
        for payload in receiver.payloads()
        if any("statuses" in change["value"] for entry in payload["entry"] for change in entry["changes"])
    ]
    kinds = {status["status"] for status in receiver.statuses()}
    assert kinds == {"sent", "delivered", "read", "failed"}
    for payload in status_payloads:
        errors = sorted(validator.iter_errors(payload), key=str)
        assert not errors, f"{errors[0].message} at {list(errors[0].absolute_path)}"


def test_the_validator_rejects_a_status_without_recipient_id() -> None:
    bad = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "1", "phone_number_id": "1"},
                            "statuses": [{"id": "wamid.x", "status": "sent", "timestamp": "1"}],
                        },
                    }
                ],
            }
        ],
    }
    assert not webhook_validator().is_valid(bad)


async def test_the_send_success_body_validates_against_the_specs_message_response() -> None:
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        answer = await client.send(spring_sale("+393471234567"))
    validator = validator_for(["components", "schemas", "MessageResponsePayload"])
    assert answer.status == 200
    assert not list(validator.iter_errors(answer.body))


async def test_every_templates_listing_page_validates_against_the_specs_listing_response() -> None:
    path = ["paths", "/{Version}/{WABA-ID}/message_templates", "get", "responses", "200", "content"]
    validator = validator_for([*path, "application/json", "schema"])
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        pages = [await client.get(f"/v23.0/{sb.config.waba_id}/message_templates", limit="3")]
        while "next" in pages[-1].body.get("paging", {}):
            after = pages[-1].body["paging"]["cursors"]["after"]
            pages.append(
                await client.get(f"/v23.0/{sb.config.waba_id}/message_templates", limit="3", after=after)
            )
    assert len(pages) == 4
    for page in pages:
        errors = list(validator.iter_errors(page.body))
        assert not errors, errors[0].message

"""The sandbox's send endpoint over real HTTP: success body, auth, validation, templates, limits, stats."""

from __future__ import annotations

import asyncio

import aiohttp

from sandbox.config import SandboxConfig
from sandbox.server import running_sandbox
from tests.sandbox_support import client_for, numbers, spring_sale, template_body


async def test_an_accepted_message_gets_the_platforms_exact_success_body() -> None:
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        answer = await client.send(spring_sale("+393471234567"))
    assert answer.status == 200
    assert set(answer.body) == {"messaging_product", "contacts", "messages"}
    assert answer.body["messaging_product"] == "whatsapp"
    assert answer.body["contacts"] == [{"input": "+393471234567", "wa_id": "393471234567"}]
    [message] = answer.body["messages"]
    assert message["id"].startswith("wamid.")
    assert message["message_status"] == "accepted"


async def test_a_wrong_bearer_token_gets_190_in_the_cloud_error_shape() -> None:
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        answer = await client.send(spring_sale("+393471234567"), token="nope")
        stats = sb.stats()
    assert (stats.requests, stats.accepted, stats.errors_by_code) == (1, 0, {190: 1})
    assert answer.status == 401
    error = answer.body["error"]
    assert error["code"] == 190
    assert error["type"] == "OAuthException"
    assert error["message"].startswith("(#190) ")
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["fbtrace_id"]


async def test_a_missing_field_gets_100_naming_the_field() -> None:
    body = spring_sale("+393471234567")
    del body["to"]
    no_product = spring_sale("+393471234567")
    del no_product["messaging_product"]
    no_name = spring_sale("+393471234567")
    del no_name["template"]["name"]
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        answers = [await client.send(b) for b in (body, no_product, no_name, b"{not json")]
    assert [a.code for a in answers] == [100, 100, 100, 100]
    details = [a.body["error"]["error_data"]["details"] for a in answers]
    assert "to" in details[0]
    assert "messaging_product" in details[1]
    assert "template['name']" in details[2]


async def test_unknown_unapproved_and_wrong_language_templates_get_132001() -> None:
    body_params = [{"type": "body", "parameters": [{"type": "text", "text": "Emma"}]}]
    bodies = [
        template_body("+393471234567", "no_such_template", "it", []),
        template_body("+393471234568", "welcome_offer", "en", body_params),  # PENDING
        template_body("+393471234569", "flash_sale", "it", body_params),  # REJECTED
        template_body("+393471234570", "spring_sale", "fr", []),  # exists in it/en only
    ]
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        answers = [await client.send(b) for b in bodies]
    assert [a.code for a in answers] == [132001] * 4
    assert all(a.status == 404 for a in answers)
    assert (
        answers[3]
        .body["error"]["error_data"]["details"]
        .endswith("does not exist in fr; it exists in en, it")
    )


async def test_a_paused_template_gets_132015() -> None:
    body = template_body(
        "+393471234567",
        "summer_teaser",
        "en",
        [{"type": "body", "parameters": [{"type": "text", "text": "E"}]}],
    )
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        answer = await client.send(body)
    assert answer.code == 132015


async def test_a_parameter_count_mismatch_gets_132000() -> None:
    one_param = template_body(
        "+393471234567",
        "spring_sale",
        "it",
        [{"type": "body", "parameters": [{"type": "text", "text": "Marco"}]}],
    )
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        answer = await client.send(one_param)
    assert answer.code == 132000
    assert "(1)" in answer.body["error"]["error_data"]["details"]


async def test_named_parameters_need_parameter_name_and_are_accepted_with_it() -> None:
    def body(to: str, named: bool) -> dict[str, object]:
        parameters = [{"type": "text", "text": "Marco"}, {"type": "text", "text": "A-1"}]
        if named:
            parameters[0]["parameter_name"] = "first_name"
            parameters[1]["parameter_name"] = "order_id"
        return template_body(to, "order_shipped", "it", [{"type": "body", "parameters": parameters}])

    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        unnamed = await client.send(body("+393471234567", named=False))
        named = await client.send(body("+393471234568", named=True))
    assert unnamed.code == 132000
    assert named.status == 200


async def test_an_image_header_template_needs_its_image_parameter() -> None:
    body_params = {
        "type": "body",
        "parameters": [{"type": "text", "text": "Giulia"}, {"type": "text", "text": "Milano"}],
    }
    image = {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://example.com/a.jpg"}}],
    }
    async with running_sandbox(SandboxConfig()) as sb, client_for(sb) as client:
        without = await client.send(template_body("+393471234567", "new_collection", "it", [body_params]))
        with_image = await client.send(
            template_body("+393471234568", "new_collection", "it", [image, body_params])
        )
    assert without.code == 132000
    assert with_image.status == 200


async def test_more_than_mps_accepted_in_the_trailing_second_gets_130429_with_status_400() -> None:
    config = SandboxConfig(mps=2, pair_spacing_s=0)
    async with running_sandbox(config) as sb, client_for(sb) as client:
        answers = await asyncio.gather(*(client.send(spring_sale(to)) for to in numbers(12)))
        stats = sb.stats()
    throttled = [a for a in answers if a.code == 130429]
    assert throttled, "12 simultaneous sends at mps=2 must hit the limit"
    assert all(a.status == 400 for a in throttled)
    assert throttled[0].body["error"]["error_subcode"] == 2494055
    assert stats.max_accepted_trailing_1s <= 2
    assert stats.errors_by_code[130429] == len(throttled)


async def test_the_throttle_status_can_be_429_while_the_code_stays_130429() -> None:
    config = SandboxConfig(mps=1, pair_spacing_s=0, throttle_status=429)
    async with running_sandbox(config) as sb, client_for(sb) as client:
        answers = [await client.send(spring_sale(to)) for to in numbers(3)]
    assert answers[0].status == 200
    assert {(a.status, a.code) for a in answers[1:]} == {(429, 130429)}


async def test_the_same_recipient_within_the_pair_spacing_gets_131056_and_later_is_accepted() -> None:
    async with running_sandbox(SandboxConfig(pair_spacing_s=1.0)) as sb, client_for(sb) as client:
        first = await client.send(spring_sale("+393471234567", first_name="A"))
        second = await client.send(spring_sale("+393471234567", first_name="B"))
        await asyncio.sleep(1.05)
        third = await client.send(spring_sale("+393471234567", first_name="C"))
    assert (first.status, second.code, third.status) == (200, 131056, 200)


async def test_stats_count_duplicates_per_recipient_and_windows() -> None:
    async with running_sandbox(SandboxConfig(pair_spacing_s=0)) as sb, client_for(sb) as client:
        await client.send(spring_sale("+393471234567"))
        await client.send(spring_sale("+393471234567"))  # same content again: a duplicate
        await client.send(spring_sale("+393471234567", discount="30%"))  # different content
        await client.send(spring_sale("+393471234568"))
        await client.send(spring_sale("+39347", first_name="x"))  # invalid number: 100
        answer = await client.get("/_sandbox/stats")
    stats = answer.body
    assert stats["accepted"] == 4
    assert stats["requests"] == 5
    assert stats["duplicates"] == 1
    assert stats["accepted_per_recipient"] == {"393471234567": 3, "393471234568": 1}
    assert sum(stats["requests_per_window"].values()) == 5
    assert stats["largest_request_window"] >= 1
    assert stats["errors_by_code"] == {"100": 1}
    assert stats["template_sends"] == {"spring_sale/it": 4}


async def test_the_stats_endpoint_can_leave_out_the_per_recipient_counts() -> None:
    async with (
        running_sandbox(SandboxConfig()) as sb,
        aiohttp.ClientSession() as session,
        session.get(f"{sb.base_url}/_sandbox/stats", params={"per_recipient": "0"}) as response,
    ):
        body = await response.json()
    assert body["accepted_per_recipient"] == {}

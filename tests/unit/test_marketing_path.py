"""The Marketing Messages API path in pure parts: which path a campaign takes, its bodies, the policy on
its refusals (131055, 131009) and the sandbox's checks of that endpoint (issue #14, part A)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from campaigns import outcome_descriptions
from campaigns.content import payloads
from campaigns.content.paths import SendPath, SendPathRefused, choose_via
from campaigns.core import exceptions as exc
from campaigns.core.settings_loading import load_settings
from campaigns.core.settings_sections import MarketingSettings, SenderSettings
from campaigns.outcome_causes import Cause
from campaigns.outcomes import FailRow, FallBackToCloud, Requeue, StopCampaign, decide, for_send_error
from sandbox.config import SandboxConfig
from sandbox.marketing import MarketingDesk
from sandbox.templates import TemplateSpec
from tests.marketing_support import validate_marketing_body

SETTINGS, _ = load_settings(environ={})
LIMITS = SETTINGS.limits


def marketing(**changes: object) -> MarketingSettings:
    return SETTINGS.marketing.model_copy(update=changes)


def sender(api: str) -> SenderSettings:
    return SenderSettings(name="shop", phone_number_id="1", api=api)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ the path chosen


@pytest.mark.parametrize(
    ("api", "requested", "category", "default_via", "expected"),
    [
        ("cloud", None, "MARKETING", "cloud", "cloud"),
        ("cloud", None, "MARKETING", "marketing", "marketing"),
        ("cloud", None, "UTILITY", "marketing", "cloud"),
        ("cloud", "marketing", "MARKETING", "cloud", "marketing"),
        ("marketing", None, "MARKETING", "cloud", "marketing"),
        ("marketing", "cloud", "UTILITY", "cloud", "cloud"),
        ("marketing", "cloud", "MARKETING", "marketing", "cloud"),
        ("onprem", None, "MARKETING", "marketing", None),
    ],
)
def test_the_path_follows_the_option_then_the_sender_then_the_setting(
    api: str, requested: str | None, category: str, default_via: str, expected: str | None
) -> None:
    via = choose_via(
        requested=requested,  # type: ignore[arg-type]
        sender=sender(api),
        category=category,
        marketing=marketing(default_via=default_via),
    )
    assert via == expected


@pytest.mark.parametrize(
    ("api", "requested", "reason"),
    [
        ("cloud", "marketing", "--via marketing: the Marketing Messages API takes MARKETING templates only"),
        ("marketing", None, "which takes MARKETING templates only and this one is UTILITY: use --via cloud"),
        ("onprem", "cloud", "uses the On-Premises API"),
    ],
)
def test_a_path_the_template_or_sender_cannot_use_is_refused_with_one_line(
    api: str, requested: str | None, reason: str
) -> None:
    with pytest.raises(SendPathRefused, match=reason) as refused:
        choose_via(
            requested=requested,  # type: ignore[arg-type]
            sender=sender(api),
            category="UTILITY",
            marketing=marketing(),
        )
    assert "\n" not in str(refused.value)


def test_a_stored_campaign_keeps_its_path_and_its_product_policy() -> None:
    path = SendPath.of(via="marketing", product_policy="STRICT", sender=sender("cloud"), settings=marketing())
    assert (path.via, path.body_api) == ("marketing", "cloud")
    assert path.marketing == payloads.MarketingOptions(product_policy="STRICT")
    assert (
        SendPath.of(via=None, product_policy=None, sender=sender("marketing"), settings=marketing()).via
        == "cloud"
    )
    assert SendPath.of(
        via="marketing", product_policy=None, sender=sender("onprem"), settings=marketing()
    ).via == ("onprem")


# ---------------------------------------------------------------------------------------- the bodies

COMPONENTS = [payloads.body_component([{"type": "text", "text": "Marco"}])]


def _formatter(options: payloads.MarketingOptions | None) -> payloads.BodyFormatter:
    return payloads.BodyFormatter(api="cloud", name="promo", language="it", marketing=options)


@pytest.mark.parametrize("sharing", [None, True, False])
def test_a_marketing_body_is_the_template_body_with_its_fields_and_no_callback_data(
    sharing: bool | None,
) -> None:
    options = payloads.MarketingOptions(product_policy="CLOUD_API_FALLBACK", message_activity_sharing=sharing)
    components_json = payloads.compact_json(COMPONENTS)
    text = _formatter(options).body(to="+393471234567", components_json=components_json, message_id=7)
    template = payloads.template_object(api="cloud", name="promo", language="it", components=COMPONENTS)
    built = payloads.build_marketing_body(to="+393471234567", template=template, marketing=options)
    assert text == payloads.dumps(built)
    body = json.loads(text)
    validate_marketing_body(body)
    assert "biz_opaque_callback_data" not in body
    assert body["product_policy"] == "CLOUD_API_FALLBACK"
    assert body.get("message_activity_sharing") is sharing


def test_the_cloud_fallback_body_is_byte_for_byte_the_cloud_body_of_that_row() -> None:
    components_json = payloads.compact_json(COMPONENTS)
    options = payloads.MarketingOptions(product_policy="CLOUD_API_FALLBACK", message_activity_sharing=True)
    frozen = _formatter(options).body(to="+393471234567", components_json=components_json, message_id=7)
    cloud = _formatter(None).body(to="+393471234567", components_json=components_json, message_id=7)
    assert payloads.cloud_body_from_marketing(frozen, message_id=7) == cloud


def test_the_marketing_contract_test_can_fail() -> None:
    cloud = json.loads(_formatter(None).body(to="+39347", components_json="[]", message_id=7))
    with pytest.raises(jsonschema.ValidationError, match="biz_opaque_callback_data"):
        validate_marketing_body(cloud)
    with pytest.raises(jsonschema.ValidationError):
        validate_marketing_body({**cloud, "product_policy": "SOMETIMES"})


# ---------------------------------------------------------------------------------------- the policy


def test_terms_not_accepted_fall_back_when_the_campaign_allows_it_else_stop_the_campaign() -> None:
    error = exc.classify_platform_error(code=131055, title="terms")
    assert isinstance(error, exc.MarketingTermsError)
    assert for_send_error(error, limits=LIMITS, attempt=1, cloud_fallback=True) == FallBackToCloud(
        Cause.MARKETING_TERMS
    )
    stop = for_send_error(error, limits=LIMITS, attempt=1)
    assert stop == StopCampaign(Cause.MARKETING_TERMS)
    assert "accept" in outcome_descriptions.describe(
        stop
    ) and "WhatsApp Manager" in outcome_descriptions.describe(stop)


def test_a_template_not_synced_is_requeued_with_a_doubling_wait_then_failed() -> None:
    error = exc.TemplateWarmingError(code=131009, title="sync")
    waits = [for_send_error(error, limits=LIMITS, attempt=n, warmup_s=(60.0, 600.0)) for n in (1, 2, 3, 4)]
    assert waits == [
        Requeue(Cause.TEMPLATE_WARMING, after_s=s, refund_attempt=False) for s in (60.0, 120.0, 240.0, 480.0)
    ]
    capped = decide(Cause.TEMPLATE_WARMING, limits=LIMITS, attempt=4, warmup_s=(60.0, 300.0))
    assert isinstance(capped, Requeue) and capped.after_s == 300.0
    assert decide(Cause.TEMPLATE_WARMING, limits=LIMITS, attempt=LIMITS.max_attempts) == FailRow(
        Cause.TEMPLATE_WARMING, attempts_spent=LIMITS.max_attempts
    )
    # The same code on the Cloud API is a bad parameter for that recipient: no warm-up there.
    assert for_send_error(exc.classify_platform_error(code=131009), limits=LIMITS, attempt=1) == FailRow(
        Cause.RECIPIENT
    )


# ------------------------------------------------------------------------------- the sandbox's checks

SPEC = TemplateSpec(
    id="1",
    name="promo",
    language="it",
    status="APPROVED",
    category="MARKETING",
    parameter_format="POSITIONAL",
    header_format=None,
    header_params=(),
    body_params=(),
    button_count=0,
)


def _raw(**fields: object) -> bytes:
    body = {"messaging_product": "whatsapp", "to": "393471234567", "type": "template", "template": {}}
    return json.dumps({**body, **fields}).encode()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (_raw(biz_opaque_callback_data="wacamp:1"), "biz_opaque_callback_data is not a valid parameter"),
        (_raw(type="text", text={"body": "hi"}), "Message must be a template message"),
        (_raw(product_policy="SOMETIMES"), "product_policy must be one of"),
        (_raw(message_activity_sharing="yes"), "message_activity_sharing must be a boolean"),
    ],
)
def test_the_sandbox_refuses_bodies_the_schema_refuses(raw: bytes, words: str) -> None:
    problem = MarketingDesk(SandboxConfig()).check_body(raw)
    assert problem is not None and problem.code == 100 and words in problem.details


def test_the_sandbox_takes_a_valid_body_and_refuses_by_terms_category_and_warm_up() -> None:
    desk = MarketingDesk(SandboxConfig(marketing_warmup_s=5.0))
    assert desk.check_body(_raw(product_policy="STRICT", message_activity_sharing=False)) is None
    utility = TemplateSpec(**{**SPEC.__dict__, "category": "UTILITY"})
    refused = desk.check_template(utility, 0.0)
    assert refused is not None and refused.code == 100 and "MARKETING templates only" in refused.details
    warming = desk.check_template(SPEC, 0.0)
    assert warming is not None and warming.code == 131009
    assert desk.check_template(SPEC, 5.0) is None
    desk.control({"terms_accepted": False})
    terms = desk.check_template(SPEC, 6.0)
    assert terms is not None and terms.code == 131055

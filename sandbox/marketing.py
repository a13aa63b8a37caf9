"""The sandbox's Marketing Messages API: ``POST /{version}/{phone_number_id}/marketing_messages``.

It takes what the Cloud API takes for a template, with the checks of that path (Meta's schema
``MarketingMessageRequestPayload`` and the platform's documented refusals):

- the body has only the schema's fields (additionalProperties false: no ``biz_opaque_callback_data``),
  ``type`` "template" (else ``(#100) Message must be a template message``), ``product_policy``
  CLOUD_API_FALLBACK or STRICT, ``message_activity_sharing`` a boolean;
- the business has accepted the API's terms (`terms_accepted`, config ``marketing_terms_accepted``,
  switched at run time by ``POST /_sandbox/marketing``), else ``131055``;
- the template is MARKETING, else ``(#100)`` naming its category;
- a template is refused with ``131009`` for ``marketing_warmup_s`` after its first send on this path
  (Meta syncs a template created recently, or idle for more than 7 days, within 10 minutes).

Messages it accepts are priced ``marketing_lite`` in their status webhooks.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.errors import Problem
from sandbox.templates import TemplateSpec

ALLOWED_FIELDS = frozenset(
    {
        "messaging_product",
        "recipient_type",
        "to",
        "type",
        "template",
        "product_policy",
        "message_activity_sharing",
    }
)
PRODUCT_POLICIES = ("CLOUD_API_FALLBACK", "STRICT")
#: `pricing.category` of a message sent through this API.
PRICING_CATEGORY = "marketing_lite"
#: Bodies kept for inspection (tests validate them against Meta's schema).
BODIES_KEPT = 20_000


class MarketingDesk:
    """The state and checks of the Marketing Messages API in one sandbox."""

    def __init__(self, config: SandboxConfig) -> None:
        self.terms_accepted = config.marketing_terms_accepted
        self.warmup_s = config.marketing_warmup_s
        self._first_send_s: dict[str, float] = {}
        #: The raw bodies of accepted requests, newest last.
        self.bodies: deque[bytes] = deque(maxlen=BODIES_KEPT)
        self.refusals: Counter[int] = Counter()

    def check_body(self, raw: bytes) -> Problem | None:
        """The body's fields and values, as the schema and the platform require."""
        try:
            body = json.loads(raw)
        except ValueError:
            return None  # parse_message answers that
        if not isinstance(body, dict):
            return None
        if body.get("type", "text") != "template":
            return Problem(100, "(#100) Message must be a template message")
        extra = sorted(set(body) - ALLOWED_FIELDS)
        if extra:
            return Problem(100, f"(#100) Param {extra[0]} is not a valid parameter for marketing messages.")
        return _value_problem(body)

    def check_template(self, spec: TemplateSpec | None, now: float) -> Problem | None:
        """Terms accepted, a MARKETING template, and one synced to this path (warm-up)."""
        if not self.terms_accepted:
            return Problem(
                131055, "The business portfolio has not accepted the Marketing Messages API terms."
            )
        if spec is None or not spec.is_marketing:
            category = spec.category if spec is not None else "none"
            return Problem(
                100, f"(#100) The Marketing Messages API takes MARKETING templates only, not {category}."
            )
        first_s = self._first_send_s.setdefault(f"{spec.name}/{spec.language}", now)
        if now - first_s < self.warmup_s:
            return Problem(
                131009,
                "Template sync to the Marketing Messages API is not complete (sandbox warm-up).",
            )
        return None

    def accepted(self, raw: bytes) -> None:
        """Keep an accepted body."""
        self.bodies.append(raw)

    def control(self, data: Any) -> dict[str, Any] | Problem:
        """``POST /_sandbox/marketing`` ``{"terms_accepted": bool, "warmup_s": float}``: switches."""
        if not isinstance(data, dict):
            return Problem(100, "expected a JSON object")
        if "terms_accepted" in data:
            if not isinstance(data["terms_accepted"], bool):
                return Problem(100, "terms_accepted must be true or false")
            self.terms_accepted = data["terms_accepted"]
        if "warmup_s" in data:
            if not isinstance(data["warmup_s"], int | float) or data["warmup_s"] < 0:
                return Problem(100, "warmup_s must be a number >= 0")
            self.warmup_s = float(data["warmup_s"])
        return self.to_json()

    def to_json(self) -> dict[str, Any]:
        """The desk's switches and counters."""
        return {
            "terms_accepted": self.terms_accepted,
            "warmup_s": self.warmup_s,
            "accepted": len(self.bodies),
        }


def _value_problem(body: dict[str, Any]) -> Problem | None:
    policy = body.get("product_policy")
    if policy is not None and policy not in PRODUCT_POLICIES:
        return Problem(100, f"(#100) Param product_policy must be one of {{{', '.join(PRODUCT_POLICIES)}}}.")
    sharing = body.get("message_activity_sharing")
    if sharing is not None and not isinstance(sharing, bool):
        return Problem(100, "(#100) Param message_activity_sharing must be a boolean.")
    return None


def marketing_success_body(*, to: str, wa_id: str, wamid: str, status: str) -> bytes:
    """The answer of an accepted marketing message (like Cloud's, with ``success``)."""
    return json.dumps(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [{"id": wamid, "message_status": status}],
            "success": True,
        }
    ).encode()

"""The Marketing Messages API: ``POST {base}/{version}/{phone_number_id}/marketing_messages``.

Same bearer token, same session and same answers as the Cloud API (`scheduler.providers.cloud`), so a
Cloud sender sends there through its own `CloudProvider` (`CloudProvider.send_marketing`); what differs
is the body (`campaigns.content.payloads.MarketingOptions`: ``product_policy``,
``message_activity_sharing``, no ``biz_opaque_callback_data``) and two answers of this path only:

- ``131055``: the business portfolio has not accepted the API's terms (`MarketingTermsError`, by code);
- ``131009``: a template just created, or unused for more than 7 days, is not synced to this path yet
  (up to 10 minutes, Meta's doc): raised here as `TemplateWarmingError`, which the outcome policy
  requeues; on the Cloud API the same code is a bad parameter (a permanent error for that recipient).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from campaigns.core.exceptions import TEMPLATE_WARMING_CODES, PlatformError, TemplateWarmingError
from scheduler.providers.base import SendResult
from scheduler.providers.http import HttpTransport, send_result_from

#: The path segment after the phone number id.
ENDPOINT = "marketing_messages"


@runtime_checkable
class MarketingCapable(Protocol):
    """A provider that can also send through the Marketing Messages API (Cloud senders)."""

    async def send_marketing(self, body_json: str) -> SendResult:
        """POST one frozen marketing body to ``/marketing_messages``."""
        ...


def marketing_url(messages_url: str) -> str:
    """The Marketing Messages API URL next to a Cloud API ``…/messages`` URL."""
    base, _, _ = messages_url.rpartition("/")
    return f"{base}/{ENDPOINT}"


async def send_marketing(
    transport: HttpTransport, url: str, *, headers: Mapping[str, str], body_json: str
) -> SendResult:
    """POST the body as it is; the answer like a Cloud send's, 131009 raised as `TemplateWarmingError`."""
    answer = await transport.request("POST", url, headers=headers, body=body_json.encode("utf-8"))
    try:
        return send_result_from(answer)
    except PlatformError as exc:
        if exc.code in TEMPLATE_WARMING_CODES:
            raise TemplateWarmingError(
                code=exc.code,
                title=exc.title or "template not synced to the Marketing Messages API yet",
                http_status=exc.http_status,
                details=exc.details,
            ) from exc
        raise

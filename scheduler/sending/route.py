"""Which endpoint a run's sends go to: the sender's API, or the Marketing Messages API, with fallback.

A campaign's path is decided once, at create time (`campaigns.content.paths`), and its ledger bodies
are frozen for it. A run of a ``marketing`` campaign POSTs each frozen body to ``/marketing_messages``
until the platform answers 131055 (terms not accepted) and the campaign's product_policy is
CLOUD_API_FALLBACK: the outcome policy then says `FallBackToCloud`, and from that moment this run
sends every row through the Cloud API (``/messages``), each body turned into the Cloud shape with the
row's ``biz_opaque_callback_data`` (`campaigns.content.payloads.cloud_body_from_marketing`). The next
run tries the marketing path again. Every accepted row records the path that took it (`via`).
"""

from __future__ import annotations

import logging

from campaigns.content.paths import CLOUD, FALLBACK_POLICY, MARKETING, ONPREM
from campaigns.content.payloads import cloud_body_from_marketing
from campaigns.core.exceptions import UserError
from scheduler.providers.base import Provider, SendResult
from scheduler.providers.marketing import MarketingCapable
from scheduler.sending.ledger import ClaimedRow

log = logging.getLogger(__name__)


class SendRoute:
    """The endpoint of one run's sends; `via` is the path the next send takes."""

    def __init__(self, provider: Provider, *, via: str, product_policy: str | None = None) -> None:
        self.provider = provider
        self.via = via
        self.planned_via = via
        self.product_policy = product_policy
        self._marketing = provider if isinstance(provider, MarketingCapable) else None
        if via == MARKETING and self._marketing is None:
            raise UserError(
                "this campaign is sent through the Marketing Messages API (--via marketing), "
                "which its sender's API cannot do: use a Cloud API sender"
            )

    @classmethod
    def for_campaign(
        cls, provider: Provider, *, via: str | None, product_policy: str | None, sender_api: str
    ) -> SendRoute:
        """The route of a campaign (`via` None: the sender's own API, Cloud or On-Premises)."""
        if via == MARKETING:
            return cls(provider, via=MARKETING, product_policy=product_policy)
        return cls(provider, via=ONPREM if sender_api == ONPREM else CLOUD)

    @property
    def can_fall_back(self) -> bool:
        """Whether a refusal of the marketing path (131055) may send through the Cloud API instead."""
        return self.planned_via == MARKETING and self.product_policy == FALLBACK_POLICY

    @property
    def fell_back(self) -> bool:
        """Whether this run switched from the marketing path to the Cloud API."""
        return self.planned_via == MARKETING and self.via == CLOUD

    def fall_back(self) -> None:
        """From now on, send through the Cloud API."""
        if self.via == MARKETING:
            log.warning("the Marketing Messages API refused the campaign: sending through the Cloud API")
        self.via = CLOUD

    async def send(self, row: ClaimedRow) -> tuple[SendResult, str]:
        """Send one claimed row by the current path; the answer and the path that took it."""
        via = self.via
        if via == MARKETING and self._marketing is not None:
            return await self._marketing.send_marketing(row.body), via
        if self.planned_via == MARKETING:  # fallen back: the frozen body is a marketing one
            return await self.provider.send(cloud_body_from_marketing(row.body, message_id=row.id)), via
        return await self.provider.send(row.body), via

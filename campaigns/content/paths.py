"""Which API a campaign's messages go through: Cloud API, the Marketing Messages API, or On-Premises.

The one place that decides a campaign's send path (`choose_via`, at `campaigns create`) and what the
ledger bodies of that path look like (`SendPath.of`, at planning):

- a sender with ``api = "onprem"`` sends through the On-Premises API, whatever is asked;
- a sender with ``api = "marketing"`` sends MARKETING campaigns through the Marketing Messages API
  (``POST /{phone_number_id}/marketing_messages``) unless ``--via cloud``;
- a sender with ``api = "cloud"`` sends through the Cloud API unless ``--via marketing`` or, for a
  MARKETING template, ``[marketing] default_via = "marketing"``;
- only MARKETING templates may use the Marketing Messages API (the platform refuses the others):
  anything else asking for it is refused at create time with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from campaigns.content.payloads import ApiKind, MarketingOptions
from campaigns.core.exceptions import UserError
from campaigns.core.settings_sections import MarketingSettings, SenderSettings

CLOUD: Final = "cloud"
MARKETING: Final = "marketing"
ONPREM: Final = "onprem"
#: The product policy that lets wacamp send through the Cloud API when the marketing path refuses (131055).
FALLBACK_POLICY = "CLOUD_API_FALLBACK"


class SendPathRefused(UserError):
    """A campaign asked for a send path its template or sender cannot use."""


def choose_via(
    *,
    requested: Literal["cloud", "marketing"] | None,
    sender: SenderSettings,
    category: str,
    marketing: MarketingSettings,
) -> str | None:
    """The campaign's path ("cloud" or "marketing"; None = On-Premises), or `SendPathRefused` with why."""
    if sender.api == ONPREM:
        if requested is not None:
            raise SendPathRefused(
                f'--via {requested}: sender {sender.name!r} uses the On-Premises API (api = "onprem")'
            )
        return None
    is_marketing = category.upper() == "MARKETING"
    if requested is None:
        wanted = sender.api == MARKETING or marketing.default_via == MARKETING
        requested = MARKETING if wanted and is_marketing else CLOUD
        if sender.api == MARKETING and not is_marketing:
            raise SendPathRefused(
                f'sender {sender.name!r} sends through the Marketing Messages API (api = "marketing"), '
                f"which takes MARKETING templates only and this one is {category}: use --via cloud"
            )
    if requested == MARKETING and not is_marketing:
        raise SendPathRefused(
            f"--via marketing: the Marketing Messages API takes MARKETING templates only, "
            f"and this one is {category}"
        )
    return requested


@dataclass(frozen=True)
class SendPath:
    """How a campaign's ledger bodies are built and which path its rows are planned for."""

    #: "cloud", "marketing" or "onprem" (stored in each planned row's `via`).
    via: str
    #: The body shape for `campaigns.content.payloads`.
    body_api: ApiKind
    #: The Marketing Messages API fields, on that path only.
    marketing: MarketingOptions | None = None

    @classmethod
    def of(
        cls,
        *,
        via: str | None,
        product_policy: str | None,
        sender: SenderSettings,
        settings: MarketingSettings,
    ) -> SendPath:
        """The path of a stored campaign (`via` None: campaigns from before the column, the sender's API)."""
        if sender.api == ONPREM:
            return cls(via=ONPREM, body_api="onprem")
        if via != MARKETING:
            return cls(via=CLOUD, body_api="cloud")
        options = MarketingOptions(
            product_policy=product_policy or settings.product_policy,
            message_activity_sharing=settings.message_activity_sharing,
        )
        return cls(via=MARKETING, body_api="cloud", marketing=options)

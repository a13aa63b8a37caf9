"""How recipients react to each template, by seed: how often they read it, reply, or answer STOP.

`SandboxConfig.template_behaviour` maps a template name, or ``name/language`` (which wins), to a
`Propensity`; templates not named there
behave as the global `WebhookTiming` says (and nobody replies). Who reads, replies or stops is drawn
from the seed, the template and the number, so a rehearsal gives the same recipients every time: a
template with ``optout_share=0.3`` gets STOP from 30 % of its recipients, a variant with twice the
``read_share`` of another is read twice as often.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sandbox.config import SandboxConfig, WebhookTiming
from sandbox.outcomes import share_hit

#: Seconds after acceptance at which a reply or a STOP arrives.
REPLY_AFTER_S = 0.5
STOP_TEXT = "STOP"
REPLY_TEXT = "Grazie, mi interessa!"


@dataclass(frozen=True)
class Propensity:
    """Shares (0..1) of a template's delivered recipients who read it, reply to it, or answer STOP."""

    read_share: float | None = None
    reply_share: float = 0.0
    optout_share: float = 0.0

    @classmethod
    def parse(cls, text: str) -> tuple[str, Propensity]:
        """``NAME[/LANG]:read=0.3,reply=0.1,optout=0.2`` (`sandbox serve --template-behaviour`)."""
        name, _, spec = text.partition(":")
        keys = {"read": "read_share", "reply": "reply_share", "optout": "optout_share"}
        values: dict[str, float] = {}
        usage = f"{text!r}: use NAME[/LANG]:read=0.3,reply=0.1,optout=0.2 (shares from 0 to 1)"
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key not in keys or not name:
                raise ValueError(usage)
            try:
                values[keys[key]] = float(value)
            except ValueError:
                raise ValueError(usage) from None
            if not 0 <= values[keys[key]] <= 1:
                raise ValueError(usage)
        return name, cls(**values)


def _propensity(config: SandboxConfig, template: str | None) -> Propensity | None:
    """The reactions to `template` (``name/language``): its own, else its name's, else None."""
    if template is None:
        return None
    found = config.template_behaviour.get(template) or config.template_behaviour.get(template.split("/")[0])
    return found if isinstance(found, Propensity) else None


def timing_for(config: SandboxConfig, template: str | None) -> WebhookTiming:
    """The status timing of one template's (``name/language``) messages (its own read share, if any)."""
    found = _propensity(config, template)
    if found is None or found.read_share is None:
        return config.webhook
    return dataclasses.replace(config.webhook, read_share=found.read_share)


def replies_to(config: SandboxConfig, *, template: str | None, wa_id: str) -> list[str]:
    """The texts this recipient sends back after receiving `template` (``name/language``): STOP or a reply."""
    found = _propensity(config, template)
    if found is None:
        return []
    texts = []
    if share_hit(seed=config.seed, salt=f"optout:{template}", key=wa_id, share=found.optout_share):
        texts.append(STOP_TEXT)
    elif share_hit(seed=config.seed, salt=f"reply:{template}", key=wa_id, share=found.reply_share):
        texts.append(REPLY_TEXT)
    return texts


def reply_request(*, wa_id: str, text: str, context_wamid: str) -> dict[str, Any]:
    """The `/_sandbox/inbound` request a reply is made from (a text answering the message)."""
    return {"from": wa_id, "kind": "text", "text": text, "context_id": context_wamid}

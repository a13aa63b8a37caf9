"""Asynchronous outcomes decided when a message is accepted: which recipients fail later, and why.

Decisions hash the seed with the number (and a salt per outcome), so the same seed marks the same
numbers whatever the order or timing of the requests.
"""

from __future__ import annotations

import hashlib

from sandbox.config import SandboxConfig
from sandbox.templates import TemplateSpec


def share_hit(*, seed: int, salt: str, key: str, share: float) -> bool:
    """True for a deterministic `share` of keys (0.0 = none, 1.0 = all) for this seed and salt."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}:{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def not_on_whatsapp(config: SandboxConfig, wa_id: str) -> bool:
    """Is this number one the sandbox treats as not having WhatsApp (131026)?"""
    return wa_id in config.not_on_whatsapp_numbers or share_hit(
        seed=config.seed, salt="not-on-whatsapp", key=wa_id, share=config.not_on_whatsapp_share
    )


def async_failure(
    config: SandboxConfig, *, wa_id: str, spec: TemplateSpec | None, opted_out: set[str]
) -> tuple[int, str] | None:
    """The error code and details a `failed` webhook will carry for this accepted message, or None."""
    if not_on_whatsapp(config, wa_id):
        return 131026, "Message failed to send because the recipient is not a WhatsApp user."
    if spec is None or not spec.is_marketing:
        return None
    if wa_id in config.opted_out_numbers or wa_id in opted_out:
        return 131050, "The recipient has chosen to stop receiving marketing messages from your business."
    if config.us_marketing_blocked and wa_id.startswith("1"):
        return 131049, "Marketing template messages cannot be delivered to US phone numbers."
    if wa_id in config.marketing_limit_numbers or share_hit(
        seed=config.seed, salt="marketing-limit", key=wa_id, share=config.marketing_limit_share
    ):
        return 131049, "This message was not delivered to maintain healthy ecosystem engagement."
    return None

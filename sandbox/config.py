"""Everything the sandbox can be told: identities, limits, asynchronous outcomes, webhooks, faults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Names accepted by `--faults` (comma separated).
FAULT_NAMES = ("throttle-storm", "flaky", "slow", "template-paused")


@dataclass(frozen=True)
class WebhookTiming:
    """When and how status webhooks follow an accepted message (seconds and shares of messages)."""

    sent_delay_s: tuple[float, float] = (0.05, 0.3)
    delivered_delay_s: tuple[float, float] = (0.2, 1.5)
    read_delay_s: tuple[float, float] = (1.0, 8.0)
    delivered_share: float = 0.95
    read_share: float = 0.6
    #: A delivered status sent twice.
    duplicate_share: float = 0.05
    #: `read` emitted before `delivered` (which follows `out_of_order_gap_s` later).
    out_of_order_share: float = 0.03
    out_of_order_gap_s: float = 0.3
    #: `read` without any `delivered` at all.
    skip_delivered_share: float = 0.02
    #: Statuses gathered into one POST at most, and how long the emitter waits to fill one.
    batch_max: int = 25
    batch_wait_s: float = 0.05
    #: Failed POSTs (non-2xx, connection errors) are retried with doubling backoff for this long.
    retry_for_s: float = 30.0
    retry_base_s: float = 0.25
    retry_max_s: float = 5.0
    request_timeout_s: float = 5.0
    #: POSTs in flight at most.
    max_in_flight: int = 16


@dataclass(frozen=True)
class FaultSettings:
    """Knobs of the fault scenarios (see `sandbox.faults`)."""

    #: throttle-storm: every `storm_every_s`, starting when the sandbox starts, `storm_length_s` of 130429.
    storm_every_s: float = 5.0
    storm_length_s: float = 1.0
    #: flaky: shares of requests answered 5xx (131000 / 131016) and reset after being accepted.
    flaky_error_share: float = 0.05
    flaky_reset_share: float = 0.02
    #: slow: extra latency per request, uniform in this range (milliseconds).
    slow_ms: tuple[float, float] = (200.0, 800.0)
    #: template-paused: the template that reaches this many accepted sends is paused.
    pause_after_sends: int = 50


@dataclass(frozen=True)
class TemplatePacing:
    """Template pacing (`sandbox.pacing`): the first `hold` accepted sends of `template` are held
    (``held_for_quality_assessment``); `after_s` after the first hold they are released (sent as usual)
    or, with `outcome` "pause", the template is PAUSED and every held message fails with 132015."""

    template: str
    hold: int = 10
    outcome: str = "release"
    after_s: float = 2.0

    def __post_init__(self) -> None:
        if self.outcome not in ("release", "pause"):
            raise ValueError(f"pacing outcome must be release or pause, not {self.outcome!r}")
        if self.hold < 1 or self.after_s < 0:
            raise ValueError("pacing needs hold >= 1 and after_s >= 0")


@dataclass(frozen=True)
class SandboxConfig:
    """How one sandbox behaves. Every field has the platform's default (docs/sandbox.md lists them)."""

    host: str = "127.0.0.1"
    port: int = 0
    access_token: str = "sandbox-token"
    app_secret: str = "sandbox-secret"
    phone_number_id: str = "100000000000001"
    display_phone_number: str = "15550000001"
    waba_id: str = "200000000000001"
    version: str = "v23.0"
    #: Messages accepted per second per phone number before 130429; 0 turns the limit off.
    mps: int = 80
    #: Two messages to one recipient closer than this → 131056; 0 turns the limit off.
    pair_spacing_s: float = 6.0
    #: HTTP status of 130429 / 131056 answers (the platform uses both).
    throttle_status: int = 400
    #: Templates in the Graph API listing shape (the `data` items); None = the shipped samples.
    templates: tuple[dict[str, Any], ...] | None = None
    #: Share of numbers (chosen by seed + number) that are not on WhatsApp (131026 by webhook).
    not_on_whatsapp_share: float = 0.02
    #: Share of marketing sends failing with the per-user marketing limit (131049 by webhook).
    marketing_limit_share: float = 0.02
    not_on_whatsapp_numbers: frozenset[str] = frozenset()
    marketing_limit_numbers: frozenset[str] = frozenset()
    #: Users who stopped marketing messages (131050 by webhook on marketing templates).
    opted_out_numbers: frozenset[str] = frozenset()
    #: Marketing templates to US numbers (+1) fail with 131049, as the platform does (second-hand).
    us_marketing_blocked: bool = True
    webhook_url: str | None = None
    webhook: WebhookTiming = field(default_factory=WebhookTiming)
    #: Per-template reactions by name (`sandbox.propensity.Propensity`): read, reply and STOP shares.
    template_behaviour: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    faults: tuple[str, ...] = ()
    fault_settings: FaultSettings = field(default_factory=FaultSettings)
    #: What `GET /{phone_number_id}?fields=...` reports.
    messaging_tier: str = "TIER_2K"
    throughput_level: str = "STANDARD"
    quality_rating: str = "GREEN"
    #: On-Premises login (basic auth) and token lifetime.
    onprem_username: str = "admin"
    onprem_password: str = "sandbox-password"
    onprem_token_ttl_s: float = 7 * 24 * 3600.0
    #: Template submissions are reviewed this many seconds after `POST …/message_templates`; a name
    #: containing `reject_names_containing` is REJECTED (INVALID_FORMAT), any other APPROVED.
    template_review_s: float = 2.0
    reject_names_containing: str = "reject"
    #: Marketing Messages API (`sandbox.marketing`): whether the business accepted its terms (else
    #: 131055), and how long a template is refused (131009) after its first send there (its sync).
    marketing_terms_accepted: bool = True
    marketing_warmup_s: float = 0.0
    #: Template pacing of one template (`TemplatePacing`), None = no pacing.
    pacing: TemplatePacing | None = None

    def __post_init__(self) -> None:
        unknown = [name for name in self.faults if name not in FAULT_NAMES]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r} (known: {', '.join(FAULT_NAMES)})")
        if self.throttle_status not in (400, 429):
            raise ValueError(f"throttle_status must be 400 or 429, not {self.throttle_status}")
        if self.mps < 0:
            raise ValueError("mps must be >= 0 (0 turns the limit off)")

    def has_fault(self, name: str) -> bool:
        """Whether the fault scenario `name` is on."""
        return name in self.faults

"""The sections of the configuration: one frozen pydantic model per `[section]` of a config file.

`campaigns.core.settings.Settings` holds one of each; `campaigns.core.settings_loading` fills them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from campaigns.core.exceptions import ConfigError
from campaigns.core.frequency_cap import CapPolicy, parse_cap

ApiKind = Literal["cloud", "onprem", "marketing"]
#: The path of a campaign on a Cloud sender: Cloud API or the Marketing Messages API.
Via = Literal["cloud", "marketing"]
ProductPolicy = Literal["CLOUD_API_FALLBACK", "STRICT"]
TIER_UNLIMITED = "TIER_UNLIMITED"
#: Tier names of older material, still read (config, platform answers, webhooks); never written.
LEGACY_TIERS: dict[str, int] = {"TIER_50": 50, "TIER_1K": 1000}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str
    busy_timeout_s: float = Field(gt=0)
    pool_size: int = Field(ge=1)
    max_overflow: int = Field(ge=0)
    #: PostgreSQL: a connection attempt gives up after this many seconds (libpq takes whole seconds, >= 2).
    connect_timeout_s: int = Field(default=10, ge=2)
    #: How long a run waits for a database that is unreachable, locked or restarting before it stops (75).
    outage_wait_s: float = Field(ge=0)
    #: Where results that could not be written are journaled; "" = next to the SQLite file, else the
    #: state directory (`journal_directory`).
    journal_dir: str = ""

    def journal_directory(self) -> Path:
        """The outcome journal's directory: `journal_dir`, else next to the SQLite file, else the state dir.

        The state directory is systemd's ``$STATE_DIRECTORY``, else ``$XDG_STATE_HOME/wacamp``, else
        ``~/.local/state/wacamp``.
        """
        if self.journal_dir:
            return Path(self.journal_dir).expanduser()
        sqlite_file = self.url.partition(":///")[2] if self.url.startswith("sqlite") else ""
        if sqlite_file and sqlite_file != ":memory:" and "mode=memory" not in sqlite_file:
            return Path(sqlite_file.partition("?")[0]).expanduser().resolve().parent
        if state := os.environ.get("STATE_DIRECTORY"):
            return Path(state.split(":")[0])
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "wacamp"


class WhatsAppSettings(_Section):
    api: ApiKind
    base_url: str
    version: str
    phone_number_id: str
    waba_id: str
    access_token: str
    app_secret: str
    verify_token: str
    username: str
    password: str
    namespace: str
    connect_timeout_s: float = Field(gt=0)
    request_timeout_s: float = Field(gt=0)
    management_max_retries: int = Field(ge=0)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


class ThroughputSettings(_Section):
    profile: str
    rate_per_s: float = Field(ge=0)
    burst: int = Field(ge=1)
    safety_factor: float = Field(gt=0, le=1)
    profiles: dict[str, float]

    @model_validator(mode="after")
    def _known_profile(self) -> ThroughputSettings:
        if self.profile not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise ValueError(f"profile {self.profile!r} is not one of {known}")
        return self

    def profile_rate_per_s(self, profile: str | None = None) -> float:
        """Messages per second for a profile (the configured one by default), before the safety factor."""
        name = profile or self.profile
        if name not in self.profiles:
            raise ConfigError(
                f"unknown throughput profile {name!r} (known: {', '.join(sorted(self.profiles))})"
            )
        return self.profiles[name]

    def effective_rate_per_s(self, profile: str | None = None) -> float:
        """The limiter rate: explicit `rate_per_s`, else the profile rate, times the safety factor."""
        base = (
            self.rate_per_s if self.rate_per_s > 0 and profile is None else self.profile_rate_per_s(profile)
        )
        return base * self.safety_factor


class TextLimits(_Section):
    body_parameter_max: int
    header_parameter_max: int
    caption_max: int
    button_payload_max: int
    url_button_parameter_max: int
    biz_opaque_callback_data_max: int


class LimitsSettings(_Section):
    messaging_tier: str
    tier_window_h: float = Field(gt=0)
    pair_spacing_s: float = Field(ge=0)
    pair_retry_base_s: float = Field(gt=1)
    max_attempts: int = Field(ge=1)
    backoff_base_s: float = Field(gt=0)
    backoff_max_s: float = Field(gt=0)
    maintenance_retry_s: float = Field(ge=0)
    marketing_defer_h: float = Field(ge=0)
    customer_service_window_h: float = Field(gt=0)
    #: Frequency caps per contact across campaigns (`campaigns.caps`): "2/7d" or "none".
    marketing_cap: str = "none"
    utility_cap: str = "none"
    cap_policy: CapPolicy = "wait"
    tiers: dict[str, int]
    text: TextLimits

    @field_validator("marketing_cap", "utility_cap")
    @classmethod
    def _readable_cap(cls, value: str) -> str:
        cap = parse_cap(value)  # a ValueError names the value and the expected form
        return "none" if cap is None else cap.text

    @model_validator(mode="after")
    def _known_tier(self) -> LimitsSettings:
        if self.messaging_tier not in ("auto", TIER_UNLIMITED, *self.tiers, *LEGACY_TIERS):
            known = ", ".join(["auto", *self.tiers, TIER_UNLIMITED])
            raise ValueError(f"messaging_tier {self.messaging_tier!r} is not one of {known}")
        return self

    def knows_tier(self, tier: str) -> bool:
        """Whether `tier` names a tier: today's names, the older ones, TIER_UNLIMITED or a plain number."""
        return tier == TIER_UNLIMITED or tier in self.tiers or tier in LEGACY_TIERS or tier.isdigit()

    def tier_limit(self, tier: str) -> int | None:
        """Unique recipients per moving window for a tier name; None means unlimited."""
        if tier == TIER_UNLIMITED:
            return None
        if tier in self.tiers:
            return self.tiers[tier]
        if tier in LEGACY_TIERS:
            return LEGACY_TIERS[tier]
        if tier.isdigit():
            return int(tier)
        raise ConfigError(f"unknown messaging tier {tier!r}")


class DispatchSettings(_Section):
    claim_batch: int = Field(ge=1)
    write_batch_rows: int = Field(ge=1)
    write_batch_ms: int = Field(ge=1)
    max_in_flight: int = Field(ge=1)
    lease_s: float = Field(gt=0)
    throttle_decrease: float = Field(gt=0, lt=1)
    throttle_recovery_s: float = Field(gt=0)
    shutdown_grace_s: float = Field(ge=0)
    control_poll_s: float = Field(gt=0)
    arrival_guard_ms: float = Field(default=50.0, ge=0)


class WebhookSettings(_Section):
    host: str
    port: int = Field(ge=0, le=65535)
    path: str
    max_body_bytes: int = Field(ge=1024)
    optout_keywords: list[str]
    optout_payloads: list[str]
    process_batch: int = Field(ge=1)


class PricingSettings(_Section):
    rate_card: str


class MediaSettings(_Section):
    """Header media uploaded from a file (`campaigns create --header-media-file`): limits and validity."""

    image_types: list[str]
    image_max_bytes: int = Field(ge=1)
    video_types: list[str]
    video_max_bytes: int = Field(ge=1)
    document_types: list[str]
    document_max_bytes: int = Field(ge=1)
    validity_h: float = Field(gt=0)
    refresh_margin_h: float = Field(ge=0)
    upload_timeout_s: float = Field(gt=0)

    def limits_for(self, header_format: str) -> tuple[list[str], int]:
        """The accepted MIME types and the size limit of an IMAGE, VIDEO or DOCUMENT header."""
        kind = header_format.lower()
        return list(getattr(self, f"{kind}_types")), int(getattr(self, f"{kind}_max_bytes"))


class TemplateSettings(_Section):
    """Template submission and review (`templates create`, `templates wait`)."""

    wait_poll_s: float = Field(gt=0)
    wait_timeout_s: float = Field(gt=0)


class ContactSettings(_Section):
    default_region: str


class CampaignSettings(_Section):
    """Campaign-wide defaults (`[campaigns]`)."""

    #: Numbers `campaigns test` sends to when no --to is given.
    test_numbers: list[str] = []


class RolloutSettings(_Section):
    """Staged rollouts (`campaigns.rollout`): the wait between stages, the guardrails judging a stage."""

    wait_s: float = Field(gt=0)
    min_webhook_share: float = Field(ge=0, le=1)
    max_wait_s: float = Field(gt=0)
    max_failure_rate: float = Field(ge=0, le=1)
    max_marketing_limit_share: float = Field(ge=0, le=1)
    max_optout_rate: float = Field(ge=0, le=1)
    template_downgrade: float = Field(ge=0, le=1)
    sender_downgrade: float = Field(ge=0, le=1)


class MarketingSettings(_Section):
    """The Marketing Messages API path (`POST /{phone_number_id}/marketing_messages`, issue #14)."""

    #: The path of a MARKETING campaign on a sender whose api is "cloud" when `--via` is not given.
    default_via: Via
    #: What the platform (and wacamp, on 131055) does when the marketing path cannot deliver.
    product_policy: ProductPolicy
    #: message_activity_sharing sent with every message; None leaves it out (the platform's default).
    message_activity_sharing: bool | None = None
    #: A template not synced to the marketing path yet (just created, or idle > 7 days: 131009) is
    #: retried after this, doubling up to `warmup_retry_max_s` (Meta: usable within 10 minutes).
    warmup_retry_s: float = Field(gt=0)
    warmup_retry_max_s: float = Field(gt=0)


class WorkerSettings(_Section):
    poll_s: float = Field(gt=0)
    metrics_host: str
    metrics_port: int = Field(ge=0, le=65535)


class LoggingSettings(_Section):
    format: Literal["text", "json"]
    file: str
    level: str


class SandboxSettings(_Section):
    host: str
    port: int = Field(ge=0, le=65535)
    mps: int = Field(ge=0)
    throttle_status: int = 400
    access_token: str
    app_secret: str
    phone_number_id: str
    waba_id: str

    @field_validator("throttle_status")
    @classmethod
    def _throttle_status(cls, value: int) -> int:
        if value not in (400, 429):
            raise ValueError("must be 400 or 429")
        return value


class SenderSettings(_Section):
    """One business phone number that sends campaigns."""

    name: str
    phone_number_id: str
    api: ApiKind = "cloud"
    profile: str = "cloud"
    rate_per_s: float = 0.0
    portfolio: str = "default"
    messaging_tier: str = ""

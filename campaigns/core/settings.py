"""Typed configuration: `Settings`, every setting of wacamp (its sections: `settings_sections`).

Build it with `campaigns.core.settings_loading.load_settings` (defaults < file < environment < options).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from campaigns.core.exceptions import ConfigError
from campaigns.core.resources import config_dir
from campaigns.core.settings_sections import (
    CampaignSettings,
    ContactSettings,
    DatabaseSettings,
    DispatchSettings,
    LimitsSettings,
    LoggingSettings,
    MarketingSettings,
    MediaSettings,
    PricingSettings,
    RolloutSettings,
    SandboxSettings,
    SenderSettings,
    TemplateSettings,
    ThroughputSettings,
    WebhookSettings,
    WhatsAppSettings,
    WorkerSettings,
)


class Settings(BaseSettings):
    """Every setting of wacamp. Build it with `load_settings`."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    database: DatabaseSettings
    whatsapp: WhatsAppSettings
    throughput: ThroughputSettings
    limits: LimitsSettings
    dispatch: DispatchSettings
    webhooks: WebhookSettings
    pricing: PricingSettings
    media: MediaSettings
    templates: TemplateSettings
    contacts: ContactSettings
    campaigns: CampaignSettings
    rollout: RolloutSettings
    marketing: MarketingSettings
    worker: WorkerSettings
    logging: LoggingSettings
    sandbox: SandboxSettings
    senders: list[SenderSettings] = Field(default_factory=list)
    #: The config file (if any) the settings were read from; relative paths are resolved next to it.
    config_file: str = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges the layers itself (it needs to know where each value came from)
        # and hands the result over as init arguments.
        return (init_settings,)

    def all_senders(self) -> list[SenderSettings]:
        """The configured senders, or one named "default" made from [whatsapp] and [throughput]."""
        if self.senders:
            return list(self.senders)
        return [
            SenderSettings(
                name="default",
                phone_number_id=self.whatsapp.phone_number_id,
                api=self.whatsapp.api,
                profile=self.throughput.profile,
                rate_per_s=self.throughput.rate_per_s,
                portfolio="default",
                messaging_tier="",
            )
        ]

    def sender(self, name: str | None) -> SenderSettings:
        senders = self.all_senders()
        if name is None:
            return senders[0]
        for sender in senders:
            if sender.name == name:
                return sender
        raise ConfigError(f"no sender named {name!r} (configured: {', '.join(s.name for s in senders)})")

    def sender_rate_per_s(self, sender: SenderSettings) -> float:
        """The limiter rate of one sender, safety factor applied."""
        if sender.rate_per_s > 0:
            return sender.rate_per_s * self.throughput.safety_factor
        if not self.senders and self.throughput.rate_per_s > 0:
            return self.throughput.rate_per_s * self.throughput.safety_factor
        return self.throughput.effective_rate_per_s(sender.profile)

    def rate_card_path(self) -> Path:
        """The rate card file: absolute, next to the config file, or the shipped one."""
        path = Path(self.pricing.rate_card)
        if path.is_absolute():
            return path
        if self.config_file:
            beside = Path(self.config_file).parent / path
            if beside.exists():
                return beside
        if path.exists():
            return path.resolve()
        return config_dir() / path

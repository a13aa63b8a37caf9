"""Typed configuration: shipped defaults < config file < environment < command-line options.

`load_settings` builds one `Settings` object at the CLI edge and records, for every setting, where
its value came from (`Provenance`), so `wacamp config show` can say it. Nothing else reads
``os.environ``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from campaigns.core.exceptions import ConfigError
from campaigns.core.resources import config_dir, default_config_file

ApiKind = Literal["cloud", "onprem", "marketing"]
#: The path of a campaign on a Cloud sender: Cloud API or the Marketing Messages API.
Via = Literal["cloud", "marketing"]
ProductPolicy = Literal["CLOUD_API_FALLBACK", "STRICT"]
TIER_UNLIMITED = "TIER_UNLIMITED"
#: Tier names of older material, still read (config, platform answers, webhooks); never written.
LEGACY_TIERS: dict[str, int] = {"TIER_50": 50, "TIER_1K": 1000}
SECRET_KEYS = frozenset({"access_token", "app_secret", "verify_token", "password"})

#: Short environment names; every setting also has WACAMP_<SECTION>__<KEY>.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "WACAMP_DATABASE_URL": ("database", "url"),
    "WACAMP_API": ("whatsapp", "api"),
    "WACAMP_API_BASE_URL": ("whatsapp", "base_url"),
    "WACAMP_API_VERSION": ("whatsapp", "version"),
    "WACAMP_PHONE_NUMBER_ID": ("whatsapp", "phone_number_id"),
    "WACAMP_WABA_ID": ("whatsapp", "waba_id"),
    "WACAMP_ACCESS_TOKEN": ("whatsapp", "access_token"),
    "WACAMP_APP_SECRET": ("whatsapp", "app_secret"),
    "WACAMP_VERIFY_TOKEN": ("whatsapp", "verify_token"),
    "WACAMP_ONPREM_USERNAME": ("whatsapp", "username"),
    "WACAMP_ONPREM_PASSWORD": ("whatsapp", "password"),
    "WACAMP_THROUGHPUT_PROFILE": ("throughput", "profile"),
    "WACAMP_RATE_PER_S": ("throughput", "rate_per_s"),
    "WACAMP_BURST": ("throughput", "burst"),
    "WACAMP_MESSAGING_TIER": ("limits", "messaging_tier"),
    "WACAMP_PAIR_SPACING_S": ("limits", "pair_spacing_s"),
    "WACAMP_WEBHOOK_HOST": ("webhooks", "host"),
    "WACAMP_WEBHOOK_PORT": ("webhooks", "port"),
    "WACAMP_RATE_CARD": ("pricing", "rate_card"),
    "WACAMP_REGION": ("contacts", "default_region"),
    "WACAMP_LOG_FORMAT": ("logging", "format"),
    "WACAMP_LOG_FILE": ("logging", "file"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str
    busy_timeout_s: float = Field(gt=0)
    pool_size: int = Field(ge=1)
    max_overflow: int = Field(ge=0)
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
    tiers: dict[str, int]
    text: TextLimits

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


@dataclass(frozen=True)
class Provenance:
    """Where each effective setting came from: dotted key -> "default", a file path, "env NAME" or "cli"."""

    sources: dict[str, str] = field(default_factory=dict)

    def of(self, dotted_key: str) -> str:
        return self.sources.get(dotted_key, "default")


@dataclass(frozen=True)
class _Layer:
    label_for: dict[str, str]
    data: dict[str, Any]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and key not in ("profiles", "tiers"):
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _file_layer(path: Path) -> _Layer:
    data = _read_toml(path)
    return _Layer({key: str(path) for key in _flatten(data)}, data)


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    data: dict[str, Any] = {}
    labels: dict[str, str] = {}
    generic = re.compile(r"^WACAMP_([A-Z]+)__([A-Z0-9_]+)$")
    for name, value in sorted(environ.items()):
        if name in ENV_ALIASES:
            dotted = ".".join(ENV_ALIASES[name])
        elif match := generic.match(name):
            dotted = f"{match.group(1).lower()}.{match.group(2).lower()}"
        else:
            continue
        _set_dotted(data, dotted, _env_value(value))
        labels[dotted] = f"env {name}"
    return _Layer(labels, data)


def _env_value(value: str) -> Any:
    """Lists in the environment are comma separated; everything else is left to pydantic."""
    return [part.strip() for part in value.split(",")] if "," in value and "://" not in value else value


def _user_config_file(config_file: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        return path
    if environ.get("WACAMP_CONFIG"):
        path = Path(environ["WACAMP_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"config file {path} (from WACAMP_CONFIG): not found")
        return path
    local = Path("wacamp.toml")
    return local if local.is_file() else None


def load_settings(
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, Provenance]:
    """Build the effective settings and where each came from.

    ``overrides`` are command-line options as dotted keys (``{"database.url": "sqlite:///x.db"}``).
    """
    env = os.environ if environ is None else environ
    user_file = _user_config_file(config_file, env)
    layers = [_file_layer(default_config_file())]
    layers[0].label_for.clear()  # shipped defaults are labelled "default"
    if user_file is not None:
        layers.append(_file_layer(user_file))
    layers.append(_env_layer(env))
    cli: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(cli, dotted, value)
    layers.append(_Layer({key: "cli" for key in _flatten(cli)}, cli))

    merged: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for layer in layers:
        merged = _deep_merge(merged, layer.data)
        labels.update(layer.label_for)
    if user_file is not None:
        merged["config_file"] = str(user_file.resolve())
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, labels)) from exc
    return settings, Provenance(labels)


def _describe_validation_error(exc: ValidationError, labels: Mapping[str, str]) -> str:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"] if not str(part).startswith("function-")]
    dotted = ".".join(loc)
    origin = _origin_of(dotted, labels)
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{origin}: {dotted or 'settings'}: {message}{more}"


def _origin_of(dotted: str, labels: Mapping[str, str]) -> str:
    """'FILE line N' for a key set in a file, 'env NAME' for the environment, else 'settings'."""
    candidates = [dotted, dotted.rsplit(".", 1)[0]]
    for key in candidates:
        label = labels.get(key)
        if label is None:
            continue
        if label.startswith(("env ", "cli")):
            return label
        line = _line_of_key(Path(label), key)
        return f"config file {label}" + (f", line {line}" if line else "")
    return "config"


def _line_of_key(path: Path, dotted: str) -> int | None:
    """The line a dotted key is set on in a TOML file (section header + key), best effort."""
    *section, key = dotted.split(".")
    wanted_section = ".".join(section)
    current = ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if header := re.match(r"^\[+\s*([^\]]+?)\s*\]+", line):
            current = header.group(1)
            continue
        if re.match(rf"^{re.escape(key)}\s*=", line) and current == wanted_section:
            return number
    return None


def masked(dotted_key: str, value: Any) -> Any:
    """Secrets are shown as `****` plus their last 2 characters (or empty when unset)."""
    if dotted_key.rsplit(".", 1)[-1] in SECRET_KEYS and isinstance(value, str) and value:
        return "****" + (value[-2:] if len(value) > 8 else "")
    if "url" in dotted_key and isinstance(value, str):
        return re.sub(r"//([^:/@]+):([^@]+)@", r"//\1:****@", value)
    return value


def flat_settings(settings: Settings) -> dict[str, Any]:
    """Every setting as a dotted key, secrets masked (for `config show`)."""
    data = settings.model_dump(exclude={"config_file"})
    return {key: masked(key, value) for key, value in _flatten(data).items()}

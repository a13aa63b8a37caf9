"""Loading the configuration: shipped defaults < config file < environment < command-line options.

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
from typing import Any

from pydantic import ValidationError

from campaigns.core.exceptions import ConfigError
from campaigns.core.resources import default_config_file
from campaigns.core.settings import Settings

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

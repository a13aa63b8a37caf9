"""The rate card: price per delivered template message by category and country calling code."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from campaigns.core.exceptions import ConfigError

#: Billed categories priced like another when the rate card has no line of their own: the Marketing
#: Messages API's `marketing_lite` costs what marketing costs (Meta), authentication-international
#: what authentication costs unless the card says otherwise.
PRICED_LIKE = {"marketing_lite": "marketing", "authentication-international": "authentication"}
#: `pricing.type` of status webhooks: `regular` messages are charged, these are free.
CHARGED_PRICING_TYPE = "regular"
FREE_PRICING_TYPES = ("free_customer_service", "free_entry_point")


@dataclass(frozen=True)
class RateCard:
    """Prices per delivered template, by lower-case category and country calling code."""

    currency: str
    default: dict[str, float]
    countries: dict[int, dict[str, float]] = field(default_factory=dict)
    example_values: bool = False
    source: str = ""

    def price(self, *, category: str, country_code: int | None) -> float:
        """Price of one delivered message of `category` to a number of `country_code`."""
        key = category.lower()
        prices = self.countries.get(country_code, {}) if country_code is not None else {}
        for name in (key, PRICED_LIKE.get(key)):
            if name is not None and (name in prices or name in self.default):
                return float(prices.get(name, self.default.get(name, 0.0)))
        return 0.0

    def price_for_phone(self, *, category: str, phone: str) -> float:
        return self.price(category=category, country_code=country_code_of(phone))


def country_code_of(phone: str) -> int | None:
    """The country calling code of an E.164 number (39 for +39…), or None if it cannot be read."""
    try:
        code = phonenumbers.parse(phone if phone.startswith("+") else f"+{phone}").country_code
    except phonenumbers.NumberParseException:
        return None
    return int(code) if code else None


def load_rate_card(path: Path) -> RateCard:
    """Read a rate card TOML file; errors name the file and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"rate card {path}: cannot be read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rate card {path}: {exc}") from exc
    try:
        countries = {int(code): _prices(prices) for code, prices in data.get("countries", {}).items()}
        return RateCard(
            currency=str(data.get("currency", "EUR")),
            default=_prices(data.get("default", {})),
            countries=countries,
            example_values=bool(data.get("example_values", False)),
            source=str(path),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"rate card {path}: {exc}") from exc


def _prices(table: object) -> dict[str, float]:
    if not isinstance(table, dict):
        raise TypeError(f"expected a table of category = price, got {table!r}")
    return {str(category).lower(): float(price) for category, price in table.items()}

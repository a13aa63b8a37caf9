"""The sample data shipped with the sandbox (docs/sandbox.md describes every item)."""

from __future__ import annotations

import json
from importlib import resources
from importlib.abc import Traversable
from typing import Any


def _data(name: str) -> Traversable:
    return resources.files("sandbox").joinpath("data", name)


def sample_templates() -> tuple[dict[str, Any], ...]:
    """The sample templates as `GET /{waba_id}/message_templates` lists them (its `data` items)."""
    return tuple(json.loads(_data("templates.json").read_text(encoding="utf-8"))["data"])


def sample_templates_text() -> str:
    """The sample templates file as shipped (`{"data": [...]}`), e.g. for `wacamp templates import`."""
    return _data("templates.json").read_text(encoding="utf-8")


def sample_contacts_text() -> str:
    """The sample contact list (CSV: phone, first_name, city, language, consent), 1,000 rows."""
    return _data("contacts.csv").read_text(encoding="utf-8")

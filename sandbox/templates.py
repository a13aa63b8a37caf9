"""The sandbox's message templates: the shipped samples (or the configured set) and their live status."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


def _placeholders(text: str) -> tuple[str, ...]:
    return tuple(match.group(1) for match in PLACEHOLDER.finditer(text))


@dataclass(frozen=True)
class TemplateSpec:
    """What a send must match: status, category, header kind and the placeholders of header and body."""

    id: str
    name: str
    language: str
    status: str
    category: str
    parameter_format: str
    header_format: str | None
    header_params: tuple[str, ...]
    body_params: tuple[str, ...]
    button_count: int

    @property
    def is_marketing(self) -> bool:
        """MARKETING templates are the ones per-user limits and opt-outs apply to."""
        return self.category == "MARKETING"

    @classmethod
    def from_listing(cls, item: dict[str, Any]) -> TemplateSpec:
        """Read one item of the `message_templates` listing."""
        header_format: str | None = None
        header_params: tuple[str, ...] = ()
        body_params: tuple[str, ...] = ()
        buttons = 0
        for component in item.get("components", []):
            kind = str(component.get("type", "")).upper()
            if kind == "HEADER":
                header_format = str(component.get("format", "TEXT")).upper()
                header_params = _placeholders(str(component.get("text", "")))
            elif kind == "BODY":
                body_params = _placeholders(str(component.get("text", "")))
            elif kind == "BUTTONS":
                buttons = len(component.get("buttons", []))
        return cls(
            id=str(item.get("id", "")),
            name=str(item["name"]),
            language=str(item["language"]),
            status=str(item.get("status", "APPROVED")).upper(),
            category=str(item.get("category", "MARKETING")).upper(),
            parameter_format=str(item.get("parameter_format", "POSITIONAL")).upper(),
            header_format=header_format,
            header_params=header_params,
            body_params=body_params,
            button_count=buttons,
        )


class TemplateBook:
    """The templates of the sandbox's WABA, looked up by (name, language); statuses can change live."""

    def __init__(self, items: tuple[dict[str, Any], ...]) -> None:
        self._items = [dict(item) for item in items]
        self._specs = {(spec.name, spec.language): spec for spec in map(TemplateSpec.from_listing, items)}

    def get(self, name: str, language: str) -> TemplateSpec | None:
        """The template of that name in that language, if any."""
        return self._specs.get((name, language))

    def languages_of(self, name: str) -> list[str]:
        """The languages a template of that name exists in (empty when there is none)."""
        return sorted(language for (known, language) in self._specs if known == name)

    def listing(self) -> list[dict[str, Any]]:
        """The templates as `GET /{waba_id}/message_templates` lists them (current statuses)."""
        return [dict(item) for item in self._items]

    def set_status(self, name: str, language: str, status: str, *, reason: str | None = None) -> TemplateSpec:
        """Change a template's status (e.g. PAUSED) for sends and for the listing (REJECTED: its reason)."""
        spec = replace(self._specs[(name, language)], status=status)
        self._specs[(name, language)] = spec
        for item in self._items:
            if item["name"] == name and item["language"] == language:
                item["status"] = status
                if reason is not None:
                    item["rejected_reason"] = reason
        return spec

    def add(self, item: dict[str, Any]) -> TemplateSpec:
        """A new template (a submission), listed and looked up from now on."""
        spec = TemplateSpec.from_listing(item)
        self._items.append(dict(item))
        self._specs[(spec.name, spec.language)] = spec
        return spec

    def remove(self, name: str) -> list[TemplateSpec]:
        """Delete every language of template `name`; the templates removed."""
        removed = [spec for key, spec in self._specs.items() if key[0] == name]
        for spec in removed:
            del self._specs[(spec.name, spec.language)]
        self._items = [item for item in self._items if item["name"] != name]
        return removed

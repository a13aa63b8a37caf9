"""Message templates: what their components ask for (placeholders), and how they are stored.

A template as the Graph API lists it (``GET /{waba_id}/message_templates``)::

    {"name": "promo", "language": "it", "status": "APPROVED", "category": "MARKETING",
     "parameter_format": "POSITIONAL", "id": "1234",
     "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Ciao {{1}}"},
        {"type": "BODY", "text": "Usa il codice {{1}} entro {{2}}"},
        {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Stop"},
                                        {"type": "URL", "text": "Shop", "url": "https://x.it/{{1}}"}]}]}

`parse_template` checks that shape and `TemplateShape.of` reads the placeholders a send must fill:
header text (``header``), body text (``body``) and buttons (``button`` with the button's index).
Placeholders are positional (``{{1}}``) or named (``{{first_name}}``) per ``parameter_format``.
Templates are upserted by (name, language); a template that disappears from a sync is marked
gone (``gone_at``), never deleted, because campaigns refer to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import InputFileError, NotFoundError
from campaigns.core.models import TEMPLATE_TABLE, Template

PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MEDIA_HEADER_FORMATS = frozenset({"IMAGE", "VIDEO", "DOCUMENT"})
HEADER_FORMATS = frozenset({"TEXT", "LOCATION", *MEDIA_HEADER_FORMATS})
#: Button types whose send-time parameter the campaign provides, and the parameter's sub_type.
BUTTON_SUB_TYPES = {"QUICK_REPLY": "quick_reply", "URL": "url", "COPY_CODE": "copy_code"}
PARAMETER_FORMATS = frozenset({"POSITIONAL", "NAMED"})


class TemplateFormatError(ValueError):
    """A template's JSON is not the shape the Graph API returns; the message names the field."""


@dataclass(frozen=True)
class Placeholder:
    """One value a send must supply: where it goes and its key (``"1"`` or ``"first_name"``)."""

    component: str  # "header" | "body" | "button"
    key: str
    button_index: int | None = None
    example: str | None = None

    @property
    def label(self) -> str:
        """How a person names it: ``body.1``, ``header.first_name``, ``button.1``."""
        if self.component == "button":
            return f"button.{self.button_index}"
        return f"{self.component}.{self.key}"


@dataclass(frozen=True)
class ButtonSpec:
    """A template button: its index, type, label and (for URL / COPY_CODE) its placeholder."""

    index: int
    type: str
    text: str
    url: str | None = None
    placeholder: Placeholder | None = None

    @property
    def sub_type(self) -> str | None:
        """The send-time ``sub_type`` of a button that takes a parameter, else None."""
        return BUTTON_SUB_TYPES.get(self.type)


@dataclass(frozen=True)
class TemplateShape:
    """What a template asks of a send: header format, placeholders per component, buttons."""

    parameter_format: str
    header_format: str | None
    header_text: str | None
    body_text: str
    footer_text: str | None
    header: tuple[Placeholder, ...] = ()
    body: tuple[Placeholder, ...] = ()
    buttons: tuple[ButtonSpec, ...] = ()
    header_example_media: str | None = None

    @classmethod
    def of(cls, *, components: Sequence[Mapping[str, Any]], parameter_format: str) -> TemplateShape:
        """Read the placeholders out of a template's components (already checked by `parse_template`)."""
        by_type = {str(c.get("type", "")).upper(): c for c in components}
        header = by_type.get("HEADER", {})
        body = by_type.get("BODY", {})
        header_format = str(header.get("format", "TEXT")).upper() if header else None
        header_text = header.get("text") if header_format == "TEXT" else None
        media = _first(header.get("example", {}).get("header_handle")) if header else None
        return cls(
            parameter_format=parameter_format,
            header_format=header_format,
            header_text=header_text,
            body_text=str(body.get("text", "")),
            footer_text=by_type.get("FOOTER", {}).get("text"),
            header=tuple(_text_placeholders("header", header_text or "", header.get("example", {}))),
            body=tuple(_text_placeholders("body", str(body.get("text", "")), body.get("example", {}))),
            buttons=tuple(_buttons(by_type.get("BUTTONS", {}).get("buttons", []))),
            header_example_media=media,
        )

    @property
    def needs_header_media(self) -> bool:
        return self.header_format in MEDIA_HEADER_FORMATS

    def placeholders(self) -> list[Placeholder]:
        """Every placeholder, header first, then body, then buttons."""
        buttons = [b.placeholder for b in self.buttons if b.placeholder is not None]
        return [*self.header, *self.body, *buttons]

    def quick_reply_indexes(self) -> list[int]:
        return [b.index for b in self.buttons if b.type == "QUICK_REPLY"]

    def render_example(self, values: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The template filled with `values` (by placeholder label) or its examples, or ``<label>``."""

        def value(p: Placeholder) -> str:
            if values and p.label in values:
                return values[p.label]
            return p.example if p.example is not None else f"<{p.label}>"

        rendered: dict[str, Any] = {}
        if self.header_format == "TEXT":
            rendered["header"] = fill(self.header_text or "", {p.key: value(p) for p in self.header})
        elif self.header_format:
            rendered["header"] = f"[{self.header_format}] {self.header_example_media or '<media url>'}"
        rendered["body"] = fill(self.body_text, {p.key: value(p) for p in self.body})
        if self.footer_text:
            rendered["footer"] = self.footer_text
        rendered["buttons"] = [_render_button(b, value) for b in self.buttons]
        return rendered


def _render_button(button: ButtonSpec, value: Any) -> str:
    if button.type == "URL" and button.url:
        filled = fill(button.url, {"1": value(button.placeholder)}) if button.placeholder else button.url
        return f"[{button.text}] {filled}"
    return f"[{button.text}]"


def fill(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{{key}}`` placeholders in `text` with `values` (unknown keys are left as they are)."""
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def placeholder_keys(text: str) -> list[str]:
    """The placeholder keys of a text, each once, in order of first appearance (positional: by number)."""
    keys = list(dict.fromkeys(m.group(1) for m in PLACEHOLDER_RE.finditer(text)))
    if keys and all(k.isdigit() for k in keys):
        keys.sort(key=int)
    return keys


def _first(value: Any) -> str | None:
    if isinstance(value, list) and value:
        first = value[0]
        return str(first[0] if isinstance(first, list) and first else first)
    return None


def _examples(component: str, example: Mapping[str, Any]) -> dict[str, str]:
    """Example values by key from a component's ``example`` (positional or named)."""
    named = example.get(f"{component}_text_named_params") or []
    found = {str(p.get("param_name")): str(p.get("example")) for p in named if isinstance(p, Mapping)}
    positional = example.get(f"{component}_text") or []
    if positional and isinstance(positional[0], list):  # body_text is a list of lists
        positional = positional[0]
    found.update({str(i): str(v) for i, v in enumerate(positional, start=1)})
    return found


def _text_placeholders(component: str, text: str, example: Mapping[str, Any]) -> list[Placeholder]:
    examples = _examples(component, example if isinstance(example, Mapping) else {})
    return [Placeholder(component, key, example=examples.get(key)) for key in placeholder_keys(text)]


def _buttons(buttons: Iterable[Mapping[str, Any]]) -> list[ButtonSpec]:
    specs = []
    for index, button in enumerate(buttons):
        kind = str(button.get("type", "")).upper()
        placeholder = None
        url = str(button.get("url", ""))
        if kind == "URL" and PLACEHOLDER_RE.search(url):
            example = _first(button.get("example"))
            prefix = url.split("{{", 1)[0]
            if example and example.startswith(prefix):  # the example is the whole link, we want its suffix
                example = example[len(prefix) :]
            placeholder = Placeholder("button", "1", button_index=index, example=example)
        elif kind == "COPY_CODE":
            example = button.get("example")
            placeholder = Placeholder("button", "1", button_index=index, example=_first(example) or example)
        specs.append(ButtonSpec(index, kind, str(button.get("text", "")), button.get("url"), placeholder))
    return specs


@dataclass(frozen=True)
class TemplateRecord:
    """A template as it is stored: what the platform says about it."""

    name: str
    language: str
    status: str
    category: str
    parameter_format: str
    components: list[dict[str, Any]] = field(default_factory=list)
    platform_id: str | None = None
    namespace: str | None = None
    status_reason: str | None = None

    def shape(self) -> TemplateShape:
        return TemplateShape.of(components=self.components, parameter_format=self.parameter_format)

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "parameter_format": self.parameter_format,
            "components": self.components,
            "platform_id": self.platform_id,
            "namespace": self.namespace,
            "status_reason": self.status_reason,
        }


def _required_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TemplateFormatError(f"field {key!r} is missing or not a non-empty string")
    return value.strip()


def _check_component(index: int, component: Any) -> None:
    where = f"components[{index}]"
    if not isinstance(component, Mapping):
        raise TemplateFormatError(f"{where} is not an object")
    kind = str(component.get("type", "")).upper()
    if kind not in ("HEADER", "BODY", "FOOTER", "BUTTONS"):
        raise TemplateFormatError(
            f"{where}.type {component.get('type')!r} is not HEADER, BODY, FOOTER or BUTTONS"
        )
    if kind == "HEADER" and str(component.get("format", "TEXT")).upper() not in HEADER_FORMATS:
        raise TemplateFormatError(
            f"{where}.format {component.get('format')!r} is not one of {sorted(HEADER_FORMATS)}"
        )
    if kind in ("BODY", "FOOTER") and not isinstance(component.get("text"), str):
        raise TemplateFormatError(f"{where}.text is missing")
    if kind == "BUTTONS":
        buttons = component.get("buttons")
        if not isinstance(buttons, list) or not all(
            isinstance(b, Mapping) and b.get("type") for b in buttons
        ):
            raise TemplateFormatError(f"{where}.buttons must be a list of objects with a type")


def _parameter_format(data: Mapping[str, Any], components: list[dict[str, Any]]) -> str:
    declared = data.get("parameter_format")
    if declared is not None:
        value = str(declared).upper()
        if value not in PARAMETER_FORMATS:
            raise TemplateFormatError(f"field 'parameter_format' {declared!r} is not POSITIONAL or NAMED")
        return value
    texts = [str(c.get("text", "")) for c in components]
    keys = [k for text in texts for k in placeholder_keys(text)]
    return "NAMED" if any(not k.isdigit() for k in keys) else "POSITIONAL"


def parse_template(data: Any) -> TemplateRecord:
    """Check one template object of the Graph API's listing; `TemplateFormatError` names the field."""
    if not isinstance(data, Mapping):
        raise TemplateFormatError("is not a JSON object")
    name, language = _required_str(data, "name"), _required_str(data, "language")
    status = _required_str(data, "status").upper()
    components = data.get("components", [])
    if not isinstance(components, list):
        raise TemplateFormatError("field 'components' is not a list")
    for index, component in enumerate(components):
        _check_component(index, component)
    if sum(1 for c in components if str(c.get("type", "")).upper() == "BODY") != 1:
        raise TemplateFormatError("field 'components' must hold exactly one BODY")
    reason = data.get("rejected_reason")
    return TemplateRecord(
        name=name,
        language=language,
        status=status,
        category=str(data.get("category") or "MARKETING").upper(),
        parameter_format=_parameter_format(data, components),
        components=[dict(c) for c in components],
        platform_id=str(data["id"]) if data.get("id") is not None else None,
        namespace=data.get("namespace") or None,
        status_reason=str(reason) if reason not in (None, "NONE") else None,
    )


def parse_templates(items: Sequence[Any], *, source: str) -> list[TemplateRecord]:
    """Parse a list of template objects; the error names `source`, the index and the field."""
    records = []
    for index, item in enumerate(items):
        try:
            records.append(parse_template(item))
        except TemplateFormatError as exc:
            name = item.get("name") if isinstance(item, Mapping) else None
            label = f"template {index}" + (f" ({name!r})" if name else "")
            raise InputFileError(f"{source}: {label}: {exc}") from exc
    return records


def load_templates_file(path: Path) -> list[TemplateRecord]:
    """Read a JSON file holding a listing page (``{"data": [...]}``) or a list of templates."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    except RecursionError as exc:  # json.loads gives up on thousands of nested brackets
        raise InputFileError(f"{path}: not a template file (JSON nested too deeply to read)") from exc
    items = data.get("data") if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        raise InputFileError(f'{path}: expected a list of templates or an object with a "data" list')
    return parse_templates(items, source=str(path))


@dataclass(frozen=True)
class StoreResult:
    """What `store_templates` changed."""

    added: int
    updated: int
    gone: int


def store_templates(
    engine: Engine, records: Sequence[TemplateRecord], *, mark_missing_gone: bool, now: datetime | None = None
) -> StoreResult:
    """Upsert templates by (name, language) in one transaction (all or nothing).

    With `mark_missing_gone` (a full sync), stored templates absent from `records` get ``gone_at``;
    a template that comes back is live again.
    """
    at = now or utcnow()
    table = TEMPLATE_TABLE
    unique = {(r.name, r.language): r for r in records}
    with write_transaction(engine) as conn:
        existing = {
            (row.name, row.language): row.id
            for row in conn.execute(sa.select(table.c.id, table.c.name, table.c.language))
        }
        new = [
            {**r.row(), "synced_at": at, "gone_at": None} for key, r in unique.items() if key not in existing
        ]
        if new:
            conn.execute(sa.insert(table), new)
        changed = [
            {
                f"b_{k}": v
                for k, v in {**r.row(), "synced_at": at, "gone_at": None, "id": existing[key]}.items()
            }
            for key, r in unique.items()
            if key in existing
        ]
        if changed:
            values: dict[str, Any] = {k[2:]: sa.bindparam(k) for k in changed[0] if k != "b_id"}
            conn.execute(sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(values), changed)
        gone = 0
        if mark_missing_gone:
            missing = [tid for key, tid in existing.items() if key not in unique]
            for chunk_start in range(0, len(missing), 500):
                chunk = missing[chunk_start : chunk_start + 500]
                gone += conn.execute(
                    sa.update(table)
                    .where(table.c.id.in_(chunk), table.c.gone_at.is_(None))
                    .values(gone_at=at)
                ).rowcount
    return StoreResult(added=len(new), updated=len(changed), gone=gone)


def find_templates(engine: Engine, *, name: str | None = None, status: str | None = None) -> list[Template]:
    """Stored templates (gone ones included), by name and language."""
    table = TEMPLATE_TABLE
    query = sa.select(table)
    if name is not None:
        query = query.where(table.c.name == name)
    if status is not None:
        query = query.where(sa.func.upper(table.c.status) == status.upper())
    query = query.order_by(table.c.name, table.c.language)
    with engine.connect() as conn:
        return [Template.model_validate(dict(row._mapping)) for row in conn.execute(query)]


def get_template(engine: Engine, *, name: str, language: str | None) -> Template:
    """One stored template; without a language, the only one of that name (else the error lists them)."""
    found = find_templates(engine, name=name)
    if language is not None:
        found = [t for t in found if t.language == language]
    if not found:
        where = f" in language {language!r}" if language else ""
        raise NotFoundError(
            f"no template named {name!r}{where} (run `wacamp templates sync` or `templates import`)"
        )
    if len(found) > 1:
        langs = ", ".join(t.language for t in found)
        raise NotFoundError(f"template {name!r} exists in several languages ({langs}): pass --language")
    return found[0]


def record_of(template: Template) -> TemplateRecord:
    """The stored row as a `TemplateRecord`."""
    return TemplateRecord(
        name=template.name,
        language=template.language,
        status=template.status,
        category=template.category,
        parameter_format=template.parameter_format,
        components=list(template.components),
        platform_id=template.platform_id,
        namespace=template.namespace,
        status_reason=template.status_reason,
    )

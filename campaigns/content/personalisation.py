"""Filling a template's placeholders for one recipient.

A campaign binds each placeholder to a value text in which ``{column}`` is replaced by the contact's
attribute (``{phone}`` is always there): ``--param 1={first_name}``, ``--param 2=SPRING20``,
``--param header.1="Ciao {first_name}"``. A column the contact lacks takes its ``--default``; without
one the recipient is skipped as ``missing_param:<column>``. ``{{`` and ``}}`` are literal braces.

`Personaliser` is compiled once per campaign and renders the template components for each contact;
`binding_problems` lists everything wrong with a set of bindings at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from campaigns.content import payloads
from campaigns.content.payloads import ApiKind, ParameterTooLong, PayloadError
from campaigns.core.settings_sections import TextLimits
from campaigns.templates.catalog import Placeholder, TemplateShape

COMPONENTS = ("header", "body", "button")
PHONE_COLUMN = "phone"
_VALUE_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class BindingError(ValueError):
    """A `--param` key or value cannot be read."""


def canonical_key(key: str) -> str:
    """``1`` → ``body.1``, ``first_name`` → ``body.first_name``, ``button.0.1`` → ``button.0``."""
    raw = key.strip()
    component, _, rest = raw.partition(".")
    if component not in COMPONENTS or not rest:
        component, rest = "body", raw
    if component == "button":
        index, _, sub = rest.partition(".")
        if not index.isdigit() or sub not in ("", "1"):
            raise BindingError(f"{key!r}: a button parameter is button.INDEX (e.g. button.0)")
        return f"button.{int(index)}"
    if not re.fullmatch(r"[A-Za-z0-9_]+", rest):
        raise BindingError(f"{key!r}: a parameter key is a number or a name of letters, digits and _")
    return f"{component}.{rest}"


@dataclass(frozen=True)
class ValueText:
    """A value text compiled into literal parts and column references."""

    parts: tuple[str | tuple[str], ...]

    @classmethod
    def compile(cls, text: str) -> ValueText:
        parts: list[str | tuple[str]] = []
        position = 0
        for match in _VALUE_RE.finditer(text):
            if match.start() > position:
                parts.append(text[position : match.start()])
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            elif token in ("{", "}"):
                raise BindingError(f"{text!r}: unbalanced {token!r} (write {token * 2} for a literal brace)")
            else:
                column = match.group(1).strip()
                if not column:
                    raise BindingError(f"{text!r}: empty {{}} (write {{column}} or {{{{ for a brace)")
                parts.append((column,))
            position = match.end()
        if position < len(text):
            parts.append(text[position:])
        return cls(tuple(parts))

    @cached_property
    def columns(self) -> list[str]:  # asked for every contact when planning: computed once
        return [p[0] for p in self.parts if isinstance(p, tuple)]

    def render(self, lookup: Mapping[str, str]) -> str:
        return "".join(p if isinstance(p, str) else lookup[p[0]] for p in self.parts)


class MissingColumn(Exception):
    """A contact has no value for a column the campaign uses, and there is no default."""

    def __init__(self, column: str) -> None:
        self.column = column
        super().__init__(column)


@dataclass(frozen=True)
class Bindings:
    """How a campaign fills a template: params by canonical key, defaults by column, media, payloads."""

    params: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)
    header_media_url: str | None = None
    button_payloads: Mapping[str, str] = field(default_factory=dict)
    #: --header-media-file, and once uploaded to the sender (planning) its media id and sha256.
    header_media_file: str | None = None
    header_media_id: str | None = None
    header_media_sha256: str | None = None


def _problems_of_value(label: str, text: str) -> list[str]:
    try:
        ValueText.compile(text)
    except BindingError as exc:
        return [f"{label}: {exc}"]
    return [] if text else [f"{label}: empty value"]


def binding_problems(shape: TemplateShape, bindings: Bindings) -> list[str]:
    """Every problem with `bindings` for a template of `shape` (empty when they fit)."""
    problems: list[str] = []
    expected = {p.label: p for p in shape.placeholders()}
    for placeholder in shape.placeholders():
        if placeholder.label not in bindings.params:
            problems.append(
                f"placeholder {placeholder.label} is not bound (--param {placeholder.label}=VALUE)"
            )
    for label, text in bindings.params.items():
        if label not in expected:
            known = ", ".join(expected) or "none"
            problems.append(f"--param {label}: the template has no such placeholder (it has: {known})")
        problems.extend(_problems_of_value(f"--param {label}", text))
    problems.extend(_header_problems(shape, bindings))
    quick_replies = shape.quick_reply_indexes()
    for index, payload in bindings.button_payloads.items():
        if not index.isdigit() or int(index) not in quick_replies:
            known = ", ".join(map(str, quick_replies)) or "none"
            problems.append(f"--button-payload {index}: not a quick-reply button (quick replies: {known})")
        problems.extend(_problems_of_value(f"--button-payload {index}", payload))
    for column, value in bindings.defaults.items():
        if not column or not value:
            problems.append(f"--default {column}={value}: both the column and the value must be given")
    return problems


def _header_problems(shape: TemplateShape, bindings: Bindings) -> list[str]:
    if shape.header_format == "LOCATION":
        return ["the template has a LOCATION header, which wacamp cannot fill yet"]
    if bindings.header_media_url and bindings.header_media_file:
        return ["give --header-media-url or --header-media-file, not both"]
    if shape.needs_header_media and not (bindings.header_media_url or bindings.header_media_file):
        return [
            f"the template's {shape.header_format} header needs --header-media-url or --header-media-file"
        ]
    given = "--header-media-url" if bindings.header_media_url else "--header-media-file"
    if (bindings.header_media_url or bindings.header_media_file) and not shape.needs_header_media:
        return [f"{given} given but the template's header is {shape.header_format or 'absent'}"]
    if bindings.header_media_url:
        return _problems_of_value("--header-media-url", bindings.header_media_url)
    return []


@dataclass(frozen=True)
class Rendered:
    """The components for one recipient and their content hash."""

    components: list[dict[str, Any]]
    components_json: str
    content_hash: str


class Personaliser:
    """Renders a template's components for one contact at a time (compile once per campaign)."""

    def __init__(
        self,
        *,
        template_name: str,
        language: str,
        shape: TemplateShape,
        bindings: Bindings,
        limits: TextLimits,
    ) -> None:
        self.template_name = template_name
        self.language = language
        self.shape = shape
        self.limits = limits
        self.defaults = dict(bindings.defaults)
        self.named = shape.parameter_format == "NAMED"
        self._hash_prefix = payloads.content_hash_prefix(name=template_name, language=language)
        self.params = {label: ValueText.compile(text) for label, text in bindings.params.items()}
        self.media = ValueText.compile(bindings.header_media_url) if bindings.header_media_url else None
        self.media_id = bindings.header_media_id
        #: The uploaded id as it appears in the components, and what replaces it in the content hash.
        self._media_id_swap = _media_id_swap(bindings)
        self.payloads = {int(i): ValueText.compile(p) for i, p in bindings.button_payloads.items()}
        texts = [*self.params.values(), *self.payloads.values(), *([self.media] if self.media else [])]
        self.columns = list(dict.fromkeys(c for text in texts for c in text.columns))
        #: Parameters and buttons whose value uses no column, built once (never mutated afterwards).
        self._constant: dict[str, dict[str, Any]] = {}

    def lookup(self, *, phone: str, attributes: Mapping[str, Any]) -> dict[str, str]:
        """The value of every column the campaign uses; raises `MissingColumn` for the first missing."""
        values: dict[str, str] = {}
        for column in self.columns:
            if column == PHONE_COLUMN:
                values[column] = phone
                continue
            raw = attributes.get(column)
            text = "" if raw is None else str(raw).strip()
            if not text:
                if column not in self.defaults:
                    raise MissingColumn(column)
                text = self.defaults[column]
            values[column] = text
        return values

    def render(self, *, phone: str, attributes: Mapping[str, Any]) -> Rendered:
        """Components for one contact. Raises `MissingColumn`, `ParameterTooLong` or `PayloadError`."""
        values = self.lookup(phone=phone, attributes=attributes)
        components: list[dict[str, Any]] = []
        header = self._header(values)
        if header:
            components.append(payloads.header_component(header))
        if self.shape.body:
            body = [self._text(p, values, limit=self.limits.body_parameter_max) for p in self.shape.body]
            components.append(payloads.body_component(body))
        components.extend(self._buttons(values))
        text = payloads.compact_json(components)
        hashed = text.replace(*self._media_id_swap, 1) if self._media_id_swap else text
        digest = payloads.content_hash_of(prefix=self._hash_prefix, components_json=hashed)
        return Rendered(components, text, digest)

    def _text(self, placeholder: Placeholder, values: Mapping[str, str], *, limit: int) -> dict[str, Any]:
        label = placeholder.label
        built = self._constant.get(label)
        if built is not None:  # a value without columns is the same for every contact: built once
            return built
        text = self.params[label]
        param = payloads.text_parameter(
            text.render(values),
            parameter=label,
            limit=limit,
            parameter_name=placeholder.key if self.named else None,
        )
        if not text.columns:
            self._constant[label] = param
        return param

    def _header(self, values: Mapping[str, str]) -> list[dict[str, Any]]:
        if self.media_id is not None and self.shape.header_format:
            return [payloads.media_parameter(self.shape.header_format, media_id=self.media_id)]
        if self.media is not None and self.shape.header_format:
            link = self.media.render(values)
            return [payloads.media_parameter(self.shape.header_format, link=link, limits=self.limits)]
        return [self._text(p, values, limit=self.limits.header_parameter_max) for p in self.shape.header]

    def _buttons(self, values: Mapping[str, str]) -> list[dict[str, Any]]:
        buttons: list[dict[str, Any]] = []
        for button in self.shape.buttons:
            if button.placeholder is not None:
                value = self.params[button.placeholder.label].render(values)
                build = payloads.url_button if button.type == "URL" else payloads.copy_code_button
                buttons.append(build(button.index, value, limits=self.limits))
            elif button.index in self.payloads:
                buttons.append(self._quick_reply(button.index, values))
        return buttons

    def _quick_reply(self, index: int, values: Mapping[str, str]) -> dict[str, Any]:
        text = self.payloads[index]
        key = f"quick_reply.{index}"
        if not text.columns and key in self._constant:
            return self._constant[key]
        component = payloads.quick_reply_button(index, text.render(values), limits=self.limits)
        if not text.columns:
            self._constant[key] = component
        return component

    def body_for(
        self, rendered: Rendered, *, api: ApiKind, to: str, message_id: int, namespace: str | None
    ) -> dict[str, Any]:
        """The request body of one ledger row."""
        template = payloads.template_object(
            api=api,
            name=self.template_name,
            language=self.language,
            components=rendered.components,
            namespace=namespace,
        )
        return payloads.build_template_body(
            api=api,
            to=to,
            template=template,
            callback_data=payloads.callback_data_for(message_id),
            limits=self.limits,
        )


def _media_id_swap(bindings: Bindings) -> tuple[str, str] | None:
    """An uploaded header is hashed by its file's sha256, so a re-upload (new id) is the same content."""
    if not bindings.header_media_id or not bindings.header_media_sha256:
        return None
    token = f"sha256:{bindings.header_media_sha256}"
    return (
        f'"id":{payloads.compact_json(bindings.header_media_id)}',
        f'"id":{payloads.compact_json(token)}',
    )


__all__ = [
    "BindingError",
    "Bindings",
    "MissingColumn",
    "ParameterTooLong",
    "PayloadError",
    "Personaliser",
    "Rendered",
    "ValueText",
    "binding_problems",
    "canonical_key",
]

"""What the platform checks in a send request before accepting it: the body (100) and the template
(132001 unknown/unapproved/wrong language, 132000 parameter count, 132012 parameter format, 132015 paused).
Pure functions: they return a `Problem` or the parsed message, never raise."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from sandbox.errors import Problem
from sandbox.templates import TemplateBook, TemplateSpec

BIZ_OPAQUE_MAX = 512
MEDIA_HEADERS = frozenset({"IMAGE", "VIDEO", "DOCUMENT"})
BODY_PARAM_TYPES = frozenset({"text", "currency", "date_time"})
MESSAGE_TYPES = frozenset(
    {
        "text",
        "template",
        "image",
        "video",
        "audio",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "reaction",
    }
)


class OutgoingMessage(NamedTuple):
    """A send request that passed body validation (a NamedTuple: built on every request, cheaply)."""

    to: str
    wa_id: str
    type: str
    template_name: str | None
    template_language: str | None
    components: list[Any]
    callback_data: str | None
    content_key: str


def _missing(field: str) -> Problem:
    return Problem(100, f"The parameter {field} is required.")


def _invalid(field: str, why: str) -> Problem:
    return Problem(100, f"Param {field} {why}")


def _wa_id(to: object) -> str | Problem:
    if not isinstance(to, str) or not to:
        return _missing("to") if not to else _invalid("to", "must be a string.")
    digits = to.lstrip("+").replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 7 <= len(digits) <= 15:
        return _invalid("to", "must be a phone number (7 to 15 digits, optional +).")
    return digits


def _template_fields(template: object) -> tuple[str, str, list[Any]] | Problem:
    if not isinstance(template, dict):
        return _missing("template")
    name = template.get("name")
    if not isinstance(name, str) or not name:
        return _missing("template['name']")
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(code, str) or not code:
        return _missing("template['language']['code']")
    components = template.get("components", [])
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        return _invalid("template['components']", "must be an array of objects.")
    return name, code, components


def _common_fields(body: dict[str, Any]) -> str | Problem:
    """The message type after checking messaging_product, recipient_type and biz_opaque_callback_data."""
    if body.get("recipient_type", "individual") not in ("individual", "group"):
        return _invalid("recipient_type", "must be one of {individual, group}.")
    kind = body.get("type", "text")
    if kind not in MESSAGE_TYPES:
        return _invalid("type", f"must be one of {{{', '.join(sorted(MESSAGE_TYPES))}}}.")
    callback = body.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > BIZ_OPAQUE_MAX):
        return _invalid(
            "biz_opaque_callback_data", f"must be a string of at most {BIZ_OPAQUE_MAX} characters."
        )
    return str(kind)


def parse_message(raw: bytes, *, cloud: bool = True) -> OutgoingMessage | Problem:
    """Validate a send request body (Cloud shape, or On-Premises without `messaging_product`)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return Problem(100, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return Problem(100, "The request body must be a JSON object.")
    if cloud and body.get("messaging_product") != "whatsapp":
        if "messaging_product" not in body:
            return _missing("messaging_product")
        return _invalid("messaging_product", "must be 'whatsapp'.")
    wa_id = _wa_id(body.get("to"))
    if isinstance(wa_id, Problem):
        return wa_id
    kind = _common_fields(body)
    if isinstance(kind, Problem):
        return kind
    if kind == "template":
        return _template_message(body, wa_id=wa_id)
    payload = body.get(kind)
    if not isinstance(payload, dict):
        return _missing(kind)
    if kind == "text" and not isinstance(payload.get("body"), str):
        return _missing("text['body']")
    key = f"{wa_id}|{kind}|{json.dumps(payload, sort_keys=True)}"
    return OutgoingMessage(body["to"], wa_id, kind, None, None, [], body.get("biz_opaque_callback_data"), key)


def _template_message(body: dict[str, Any], *, wa_id: str) -> OutgoingMessage | Problem:
    fields = _template_fields(body.get("template"))
    if isinstance(fields, Problem):
        return fields
    name, language, components = fields
    content = json.dumps([name, language, components], sort_keys=True, separators=(",", ":"))
    return OutgoingMessage(
        to=body["to"],
        wa_id=wa_id,
        type="template",
        template_name=name,
        template_language=language,
        components=components,
        callback_data=body.get("biz_opaque_callback_data"),
        content_key=f"{wa_id}|{content}",
    )


def lookup_template(book: TemplateBook, message: OutgoingMessage) -> TemplateSpec | Problem:
    """The approved template a message names, or 132001 / 132015 / 132016."""
    name = message.template_name or ""
    language = message.template_language or ""
    spec = book.get(name, language)
    if spec is None:
        languages = book.languages_of(name)
        elsewhere = f"; it exists in {', '.join(languages)}" if languages else ""
        return Problem(132001, f"template name ({name}) does not exist in {language}{elsewhere}")
    if spec.status == "PAUSED":
        return Problem(132015, f"template {name} ({language}) is paused")
    if spec.status == "DISABLED":
        return Problem(132016, f"template {name} ({language}) is disabled")
    if spec.status != "APPROVED":
        return Problem(132001, f"template {name} ({language}) is {spec.status}, not APPROVED")
    return spec


def _components_by_type(components: list[Any]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for component in components:
        grouped.setdefault(str(component.get("type", "")).lower(), []).append(component)
    return grouped


def _parameters(component: dict[str, Any] | None, where: str) -> list[dict[str, Any]] | Problem:
    if component is None:
        return []
    parameters = component.get("parameters", [])
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        return _invalid(f"template['components'][{where}]['parameters']", "must be an array of objects.")
    return parameters


def _check_body(spec: TemplateSpec, parameters: list[dict[str, Any]]) -> Problem | None:
    expected = len(spec.body_params)
    if len(parameters) != expected:
        return Problem(
            132000,
            f"body: number of localizable_params ({len(parameters)}) does not match the expected "
            f"number of params ({expected})",
        )
    for index, parameter in enumerate(parameters):
        if parameter.get("type") not in BODY_PARAM_TYPES:
            return Problem(132012, f"body: parameter {index + 1} has type {parameter.get('type')!r}")
    if spec.parameter_format == "NAMED":
        names = [parameter.get("parameter_name") for parameter in parameters]
        if any(not isinstance(name, str) for name in names):
            return Problem(132000, "body: every parameter of a NAMED template needs parameter_name")
        if sorted(names) != sorted(spec.body_params):  # type: ignore[type-var]
            return Problem(
                132000, f"body: parameter names {names} do not match the template's {list(spec.body_params)}"
            )
    return None


def _check_header(spec: TemplateSpec, parameters: list[dict[str, Any]]) -> Problem | None:
    if spec.header_format in MEDIA_HEADERS:
        media = spec.header_format.lower()
        if len(parameters) != 1:
            return Problem(
                132000, f"header: a {spec.header_format} header needs exactly one {media} parameter"
            )
        parameter = parameters[0]
        if parameter.get("type") != media or not isinstance(parameter.get(media), dict):
            return Problem(132012, f"header: expected a {media} parameter")
        return None
    if len(parameters) != len(spec.header_params):
        return Problem(
            132000,
            f"header: number of localizable_params ({len(parameters)}) does not match the expected "
            f"number of params ({len(spec.header_params)})",
        )
    return None


def _check_buttons(spec: TemplateSpec, buttons: list[dict[str, Any]]) -> Problem | None:
    for position, button in enumerate(buttons):
        index = str(button.get("index", ""))
        if not index.isdigit() or int(index) >= spec.button_count:
            return _invalid(
                f"template['components'][button {position}]['index']",
                f"must be a button index below {spec.button_count}.",
            )
    return None


def _first(grouped: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any] | None:
    found = grouped.get(kind)
    return found[0] if found else None


def check_parameters(spec: TemplateSpec, message: OutgoingMessage) -> Problem | None:
    """Do the send-time components fit the template? 132000 for counts, 132012 for formats."""
    grouped = _components_by_type(message.components)
    body = _parameters(_first(grouped, "body"), "body")
    if isinstance(body, Problem):
        return body
    header = _parameters(_first(grouped, "header"), "header")
    if isinstance(header, Problem):
        return header
    return (
        _check_body(spec, body)
        or _check_header(spec, header)
        or _check_buttons(spec, grouped.get("button", []))
    )

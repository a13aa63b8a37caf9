"""Simulated user activity for `POST /_sandbox/inbound`: the webhook change each one produces.

Request body: ``{"from": "393471234567", "kind": "text"|"stop"|"button"|"user_preferences", "text"?,
"payload"?, "context_id"?, "name"?, "value"? ("stop"|"resume")}``. A button tap without `context_id`
answers the last message the sandbox accepted for that number.
"""

from __future__ import annotations

import itertools
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.errors import Problem
from sandbox.state import SandboxState

KINDS = ("text", "stop", "button", "user_preferences")
_inbound_ids = itertools.count(1)


def _head(config: SandboxConfig) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": config.display_phone_number,
            "phone_number_id": config.phone_number_id,
        },
    }


def _user_message(data: dict[str, Any], *, wa_id: str, message_id: str, wall_s: float) -> dict[str, Any]:
    return {"from": wa_id, "id": message_id, "timestamp": str(int(wall_s))}


def _button(
    data: dict[str, Any], *, config: SandboxConfig, state: SandboxState, wa_id: str
) -> dict[str, Any]:
    payload = str(data.get("payload", "STOP"))
    message: dict[str, Any] = {
        "type": "button",
        "button": {"payload": payload, "text": str(data.get("text", payload))},
    }
    context_id = data.get("context_id") or state.last_wamid.get(wa_id)
    if context_id:
        message["context"] = {"from": config.display_phone_number, "id": str(context_id)}
    return message


def _preferences(
    data: dict[str, Any], *, state: SandboxState, wa_id: str, wall_s: float
) -> dict[str, Any] | Problem:
    value = str(data.get("value", "stop"))
    if value not in ("stop", "resume"):
        return Problem(100, "Param value must be one of {stop, resume}.")
    if value == "stop":
        state.opted_out.add(wa_id)
    else:
        state.opted_out.discard(wa_id)
    detail = "User requested to stop marketing messages" if value == "stop" else "User requested to resume"
    preference = {
        "wa_id": wa_id,
        "detail": detail,
        "category": "marketing_messages",
        "value": value,
        "timestamp": int(wall_s),
    }
    return {"user_preferences": [preference]}


def inbound_change(
    data: object, *, config: SandboxConfig, state: SandboxState, wall_s: float
) -> tuple[str, dict[str, Any], str] | Problem:
    """(webhook field, change value, inbound message id) for a simulated user action, or a 100 problem."""
    if not isinstance(data, dict):
        return Problem(100, "The request body must be a JSON object.")
    wa_id = str(data.get("from", "")).lstrip("+")
    if not wa_id.isdigit():
        return Problem(100, "The parameter from is required (the user's number, digits).")
    kind = data.get("kind", "text")
    if kind not in KINDS:
        return Problem(100, f"Param kind must be one of {{{', '.join(KINDS)}}}.")
    contacts = [{"profile": {"name": str(data.get("name", "Sandbox User"))}, "wa_id": wa_id}]
    if kind == "user_preferences":
        prefs = _preferences(data, state=state, wa_id=wa_id, wall_s=wall_s)
        if isinstance(prefs, Problem):
            return prefs
        return "user_preferences", {**_head(config), "contacts": contacts, **prefs}, ""
    message_id = f"wamid.SANDBOXIN{next(_inbound_ids):012d}"
    message = _user_message(data, wa_id=wa_id, message_id=message_id, wall_s=wall_s)
    if kind == "button":
        message.update(_button(data, config=config, state=state, wa_id=wa_id))
    else:
        default = "STOP" if kind == "stop" else "Ciao!"
        message.update({"type": "text", "text": {"body": str(data.get("text", default))}})
        if data.get("context_id"):  # a text answering a message
            message["context"] = {"from": config.display_phone_number, "id": str(data["context_id"])}
    return "messages", {**_head(config), "contacts": contacts, "messages": [message]}, message_id

"""The platform's error codes as the sandbox answers them, and the two error body shapes.

Cloud API: ``{"error": {"message", "type", "code", "error_data": {"messaging_product", "details"},
"error_subcode"?, "fbtrace_id"}}``. On-Premises API: ``{"meta": {...}, "errors": [{"code", "title",
"details"}]}``. Titles are Meta's own wording.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

#: code -> (title, HTTP status). Throttling statuses are overridden by `SandboxConfig.throttle_status`.
ERRORS: dict[int, tuple[str, int]] = {
    0: ("AuthException", 401),
    100: ("Invalid parameter", 400),
    190: ("Invalid OAuth access token - Cannot parse access token", 401),
    1005: ("Access denied", 401),
    130429: ("Rate limit hit", 400),
    131000: ("Something went wrong", 500),
    131016: ("Service unavailable", 503),
    131026: ("Message undeliverable", 400),
    131047: ("Re-engagement message", 400),
    131049: ("This message was not delivered to maintain healthy ecosystem engagement.", 400),
    131050: (
        "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages "
        "on WhatsApp from your business.",
        400,
    ),
    131009: ("Parameter value is not valid", 400),
    131055: ("Marketing Messages API terms of service not accepted", 400),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", 400),
    132000: ("Number of parameters does not match the expected number of params", 400),
    132001: ("Template name does not exist in the translation", 404),
    132012: ("Parameter format does not match format in the created template", 400),
    132015: ("Template is Paused", 400),
    132016: ("Template is Disabled", 400),
}
THROTTLE_CODES = frozenset({130429, 131056})
SUBCODES = {130429: 2494055}
ERROR_DOCS_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
ONPREM_META = {"api_status": "stable", "version": "2.53.0"}

_trace_ids = itertools.count(1)


@dataclass(frozen=True)
class Problem:
    """One error the sandbox answers with: the code, Meta's title, the details and the HTTP status."""

    code: int
    details: str
    http_status: int = 0

    @property
    def title(self) -> str:
        """Meta's title for the code."""
        return ERRORS.get(self.code, ("Unknown error", 400))[0]

    def status(self, *, throttle_status: int) -> int:
        """The HTTP status: explicit, the configured one for throttling, else the code's usual one."""
        if self.http_status:
            return self.http_status
        if self.code in THROTTLE_CODES:
            return throttle_status
        return ERRORS.get(self.code, ("", 400))[1]


def cloud_error_body(problem: Problem) -> bytes:
    """The Cloud API error body for a problem (JSON bytes)."""
    error: dict[str, Any] = {
        "message": f"(#{problem.code}) {problem.title}",
        "type": "OAuthException",
        "code": problem.code,
        "error_data": {"messaging_product": "whatsapp", "details": problem.details},
    }
    if problem.code in SUBCODES:
        error["error_subcode"] = SUBCODES[problem.code]
    error["fbtrace_id"] = f"Asandbox{next(_trace_ids):010d}"
    return json.dumps({"error": error}).encode()


def onprem_error_body(problem: Problem) -> bytes:
    """The On-Premises API error body for a problem (JSON bytes)."""
    errors = [{"code": problem.code, "title": problem.title, "details": problem.details}]
    return json.dumps({"meta": ONPREM_META, "errors": errors}).encode()


def status_error(code: int, details: str) -> dict[str, Any]:
    """The `errors[]` item of a failed status webhook."""
    title = ERRORS.get(code, ("Unknown error", 400))[0]
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": ERROR_DOCS_URL,
    }

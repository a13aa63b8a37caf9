"""Template submission and review in the sandbox: POST and DELETE `/{version}/{waba_id}/message_templates`.

A submission is checked (name, language, category, one BODY), listed at once as PENDING, and reviewed
`SandboxConfig.template_review_s` seconds later by rule: a name containing
`SandboxConfig.reject_names_containing` is REJECTED (reason ``INVALID_FORMAT``), any other APPROVED.
The outcome changes the listing and the sends, and goes out as a signed
``message_template_status_update`` webhook, as the platform does.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.errors import Problem
from sandbox.templates import TemplateBook, TemplateSpec
from sandbox.webhooks import WebhookEmitter

NAME_RE = re.compile(r"^[a-z0-9_]{1,512}$")
CATEGORIES = frozenset({"MARKETING", "UTILITY", "AUTHENTICATION"})
REJECTION_REASON = "INVALID_FORMAT"


def _problem_of(data: Any, book: TemplateBook) -> Problem | None:
    if not isinstance(data, dict):
        return Problem(100, "The request body must be a JSON object.")
    name, language = data.get("name"), data.get("language")
    if not isinstance(name, str) or not NAME_RE.match(name):
        return Problem(100, "Param name must be lowercase letters, digits and underscores (at most 512).")
    if not isinstance(language, str) or not language:
        return Problem(100, "The parameter language is required.")
    if str(data.get("category", "")).upper() not in CATEGORIES:
        return Problem(100, "Param category must be one of {MARKETING, UTILITY, AUTHENTICATION}.")
    components = data.get("components")
    bodies = [c for c in components or [] if isinstance(c, dict) and str(c.get("type")).upper() == "BODY"]
    if not isinstance(components, list) or len(bodies) != 1:
        return Problem(100, "Param components must hold exactly one BODY component.")
    if book.get(name, language) is not None:
        return Problem(100, f"Content in this language already exists: {name} ({language}).")
    return None


class TemplateReviewer:
    """Takes submissions into the book and reviews them after a delay."""

    def __init__(
        self,
        *,
        config: SandboxConfig,
        book: TemplateBook,
        emitter: Callable[[], WebhookEmitter | None],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.book = book
        self.emitter = emitter
        self.clock = clock
        self.submissions = 0
        self._ids = itertools.count(3000000000000001)
        self._pending: set[asyncio.TimerHandle] = set()

    def submit(self, data: Any) -> dict[str, Any] | Problem:
        """A submission: the answer ``{id, status, category}``, or the problem refusing it."""
        problem = _problem_of(data, self.book)
        if problem is not None:
            return problem
        item = {
            **data,
            "id": str(next(self._ids)),
            "status": "PENDING",
            "category": str(data["category"]).upper(),
        }
        spec = self.book.add(item)
        self.submissions += 1
        handle = asyncio.get_running_loop().call_later(self.config.template_review_s, self._review, spec)
        self._pending.add(handle)
        return {"id": spec.id, "status": "PENDING", "category": spec.category}

    def delete(self, name: str) -> dict[str, Any] | Problem:
        """Delete every language of `name`: ``{"success": true}``, or 100 when there is none."""
        if not self.book.remove(name):
            return Problem(100, f"Message template {name!r} does not exist.")
        return {"success": True}

    def close(self) -> None:
        """Forget reviews still to come (the sandbox stops)."""
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()

    def _review(self, spec: TemplateSpec) -> None:
        if self.book.get(spec.name, spec.language) is None:
            return  # deleted before its review
        rejected = self.config.reject_names_containing and self.config.reject_names_containing in spec.name
        status, reason = ("REJECTED", REJECTION_REASON) if rejected else ("APPROVED", "NONE")
        self.book.set_status(spec.name, spec.language, status, reason=reason if rejected else None)
        emitter = self.emitter()
        if emitter is None:
            return
        value = {
            "event": status,
            "message_template_id": int(spec.id),
            "message_template_name": spec.name,
            "message_template_language": spec.language,
            "reason": reason,
        }
        emitter.schedule(field="message_template_status_update", value=value, at=self.clock())

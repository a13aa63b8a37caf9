"""The sandbox's management (Graph) API: template listing, submission and deletion, phone numbers, media."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from sandbox.core import JSON, SandboxCore
from sandbox.errors import Problem
from sandbox.media import read_upload

LISTING_LIMIT_DEFAULT = 25
LISTING_LIMIT_MAX = 1000
PHONE_FIELDS_DEFAULT = ("display_phone_number", "verified_name", "quality_rating")


def _encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(str(index).encode()).decode()


def _decode_cursor(cursor: str) -> int | None:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except ValueError:
        return None


class ManagementHandlers(SandboxCore):
    """`/{waba_id}/message_templates` (GET, POST, DELETE), `/{phone_number_id}` and its `/media`."""

    async def handle_media_upload(self, request: web.Request) -> web.Response:
        """`POST /{version}/{phone_number_id}/media` (multipart: file, type, messaging_product) → id."""
        if not self._authorized(request):
            return self._cloud_error(Problem(190, "Invalid OAuth access token."))
        phone_number_id = request.match_info["phone_number_id"]
        if phone_number_id != self.config.phone_number_id:
            return self._not_found(phone_number_id)
        upload = await read_upload(request)
        if isinstance(upload, Problem):
            return self._cloud_error(upload)
        media_id = self.media.add(phone_number_id, *upload)
        return web.Response(body=json.dumps({"id": media_id}).encode(), content_type=JSON)

    async def handle_media_list(self, _request: web.Request) -> web.Response:
        """`GET /_sandbox/media`: how many uploads were made and what each id holds."""
        return web.Response(body=json.dumps(self.media.to_json()).encode(), content_type=JSON)

    async def handle_templates(self, request: web.Request) -> web.Response:
        """`GET /{version}/{waba_id}/message_templates?limit=&after=` (paginated like Graph API)."""
        if not self._authorized(request):
            return self._cloud_error(Problem(190, "Invalid OAuth access token."))
        waba_id = request.match_info["waba_id"]
        if waba_id != self.config.waba_id:
            return self._not_found(waba_id)
        query = request.query
        items = [
            item
            for item in self.book.listing()
            if all(item.get(key) == query[key] for key in ("name", "status", "language") if key in query)
        ]
        try:
            limit = min(max(int(query.get("limit", LISTING_LIMIT_DEFAULT)), 1), LISTING_LIMIT_MAX)
        except ValueError:
            return self._cloud_error(Problem(100, "Param limit must be an integer."))
        start = 0
        if "after" in query:
            after = _decode_cursor(query["after"])
            if after is None:
                return self._cloud_error(Problem(100, "Param after is not a valid cursor."))
            start = after + 1
        page = items[start : start + limit]
        body: dict[str, Any] = {"data": page}
        if page:
            end = start + len(page) - 1
            body["paging"] = {"cursors": {"before": _encode_cursor(start), "after": _encode_cursor(end)}}
            if end + 1 < len(items):
                next_url = request.url.with_query(
                    {**query, "limit": str(limit), "after": _encode_cursor(end)}
                )
                body["paging"]["next"] = str(next_url)
        return web.Response(body=json.dumps(body).encode(), content_type=JSON)

    async def handle_template_submit(self, request: web.Request) -> web.Response:
        """`POST /{version}/{waba_id}/message_templates`: a submission, PENDING until its review."""
        problem = self._management_problem(request)
        try:
            data = await request.json() if problem is None else None
        except ValueError:
            data = None
        answer = problem or self.reviewer.submit(data)
        if isinstance(answer, Problem):
            return self._cloud_error(answer)
        return web.Response(body=json.dumps(answer).encode(), content_type=JSON)

    async def handle_template_delete(self, request: web.Request) -> web.Response:
        """`DELETE /{version}/{waba_id}/message_templates?name=NAME`."""
        answer = self._management_problem(request) or self.reviewer.delete(request.query.get("name", ""))
        if isinstance(answer, Problem):
            return self._cloud_error(answer)
        return web.Response(body=json.dumps(answer).encode(), content_type=JSON)

    def _management_problem(self, request: web.Request) -> Problem | None:
        if not self._authorized(request):
            return Problem(190, "Invalid OAuth access token.")
        waba_id = request.match_info["waba_id"]
        if waba_id != self.config.waba_id:
            return Problem(100, f"Unsupported request. Object with ID '{waba_id}' does not exist.")
        return None

    def _phone_fields(self, phone_number_id: str) -> dict[str, Any]:
        return {
            "id": phone_number_id,
            "display_phone_number": self.config.display_phone_number,
            "verified_name": "wacamp sandbox",
            "quality_rating": self.config.quality_rating,
            "throughput": {"level": self.config.throughput_level},
            "whatsapp_business_manager_messaging_limit": self.config.messaging_tier,
            "messaging_limit_tier": self.config.messaging_tier,
            "code_verification_status": "VERIFIED",
            "name_status": "APPROVED",
            "platform_type": "CLOUD_API",
        }

    async def handle_phone_number(self, request: web.Request) -> web.Response:
        """`GET /{version}/{phone_number_id}?fields=...` (throughput, messaging limit, quality)."""
        if not self._authorized(request):
            return self._cloud_error(Problem(190, "Invalid OAuth access token."))
        node_id = request.match_info["node_id"]
        if node_id != self.config.phone_number_id:
            return self._not_found(node_id)
        known = self._phone_fields(node_id)
        requested = [f.strip() for f in request.query.get("fields", "").split(",") if f.strip()]
        unknown = [name for name in requested if name not in known]
        if unknown:
            return self._cloud_error(Problem(100, f"Tried accessing nonexisting field ({unknown[0]})"))
        names = requested or list(PHONE_FIELDS_DEFAULT)
        body = {"id": node_id, **{name: known[name] for name in names}}
        return web.Response(body=json.dumps(body).encode(), content_type=JSON)

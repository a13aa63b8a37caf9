"""The sandbox HTTP server: Cloud API and On-Premises API endpoints, plus `/_sandbox/*` controls.

Start it in-process with `running_sandbox(SandboxConfig(...))` (tests, benchmarks) or with
`wacamp sandbox serve` (which calls `serve`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiohttp import web

from sandbox.config import SandboxConfig
from sandbox.errors import ONPREM_META, Problem, cloud_error_body, onprem_error_body
from sandbox.faults import FaultPlan, Flake
from sandbox.inbound import inbound_change
from sandbox.marketing import MarketingDesk, marketing_success_body
from sandbox.media import MediaStore, header_media_problem, read_upload
from sandbox.outcomes import async_failure
from sandbox.pacing import HELD_STATUS, PAUSED_CODE, TemplatePacer
from sandbox.propensity import REPLY_AFTER_S, replies_to, reply_request, timing_for
from sandbox.rules import OutgoingMessage, check_parameters, lookup_template, parse_message
from sandbox.samples import sample_templates
from sandbox.state import SandboxState, SandboxStats
from sandbox.template_review import TemplateReviewer
from sandbox.templates import TemplateBook, TemplateSpec
from sandbox.webhooks import AcceptedMessage, WebhookEmitter, plan_statuses

JSON = "application/json"
LISTING_LIMIT_DEFAULT = 25
LISTING_LIMIT_MAX = 1000
PHONE_FIELDS_DEFAULT = ("display_phone_number", "verified_name", "quality_rating")
#: Status webhooks of messages sent through the Marketing Messages API are priced as this category.
MARKETING_PRICING = "MARKETING_LITE"


class Accepted(NamedTuple):
    """A send the sandbox took: its id, the parsed message, and whether to reset the connection anyway."""

    wamid: str
    message: OutgoingMessage
    reset: bool
    #: The answer's message_status: accepted, or held_for_quality_assessment (`sandbox.pacing`).
    status: str = "accepted"


def cloud_success_body(accepted: Accepted) -> bytes:
    """The Cloud API success body, written out directly (the hot path of every benchmark)."""
    to = json.dumps(accepted.message.to)
    return (
        f'{{"messaging_product":"whatsapp","contacts":[{{"input":{to},"wa_id":"{accepted.message.wa_id}"}}],'
        f'"messages":[{{"id":"{accepted.wamid}","message_status":"{accepted.status}"}}]}}'
    ).encode()


def _basic_credentials(header: str) -> bytes:
    """The `user:password` bytes of a basic Authorization header (empty when it is not one)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return b""
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return b""


def _encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(str(index).encode()).decode()


def _decode_cursor(cursor: str) -> int | None:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except ValueError:
        return None


class Sandbox:
    """The platform simulator: its state, its templates, its faults and its handlers."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall
        self.state = SandboxState(clock=clock)
        self.book = TemplateBook(config.templates if config.templates is not None else sample_templates())
        self.faults = FaultPlan(config, started_at=self.state.started_at)
        self.emitter: WebhookEmitter | None = None
        self.media = MediaStore()
        self.reviewer = TemplateReviewer(
            config=config, book=self.book, emitter=lambda: self.emitter, clock=clock
        )
        self.marketing = MarketingDesk(config)
        self.pacer = TemplatePacer(config.pacing, pause_template=self._pause_paced)
        self._bearer = f"Bearer {config.access_token}"
        self._onprem_tokens: dict[str, float] = {}

    # -- application -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """The aiohttp application (webhook emitter started and stopped with it)."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/_sandbox/stats", self.handle_stats)
        app.router.add_post("/_sandbox/inbound", self.handle_inbound)
        app.router.add_post("/v1/users/login", self.handle_onprem_login)
        app.router.add_post("/v1/messages", self.handle_onprem_send)
        app.router.add_post("/{version}/{phone_number_id}/messages", self.handle_cloud_send)
        app.router.add_post("/{version}/{phone_number_id}/marketing_messages", self.handle_marketing_send)
        app.router.add_post("/_sandbox/marketing", self.handle_marketing_control)
        app.router.add_post("/_sandbox/pacing", self.handle_pacing_control)
        app.router.add_post("/{version}/{phone_number_id}/media", self.handle_media_upload)
        app.router.add_get("/_sandbox/media", self.handle_media_list)
        app.router.add_get("/{version}/{waba_id}/message_templates", self.handle_templates)
        app.router.add_post("/{version}/{waba_id}/message_templates", self.handle_template_submit)
        app.router.add_delete("/{version}/{waba_id}/message_templates", self.handle_template_delete)
        app.router.add_get("/{version}/{node_id}", self.handle_phone_number)
        app.on_startup.append(self._start_emitter)
        app.on_cleanup.append(self._stop_emitter)
        return app

    async def _start_emitter(self, _app: web.Application) -> None:
        if self.config.webhook_url:
            self.emitter = WebhookEmitter(
                url=self.config.webhook_url, config=self.config, counts=self.state.webhooks
            )
            await self.emitter.start()

    async def _stop_emitter(self, _app: web.Application) -> None:
        self.pacer.close()
        self.reviewer.close()
        if self.emitter is not None:
            await self.emitter.close()

    def stats(self) -> SandboxStats:
        """A snapshot of the counters."""
        return self.state.snapshot()

    # -- responses ---------------------------------------------------------------------------------

    def _cloud_error(self, problem: Problem) -> web.Response:
        self.state.note_error(problem.code)
        status = problem.status(throttle_status=self.config.throttle_status)
        return web.Response(body=cloud_error_body(problem), status=status, content_type=JSON)

    def _onprem_error(self, problem: Problem) -> web.Response:
        self.state.note_error(problem.code)
        status = problem.status(throttle_status=self.config.throttle_status)
        return web.Response(body=onprem_error_body(problem), status=status, content_type=JSON)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization")
        if header is not None:
            return secrets.compare_digest(header, self._bearer)
        token = request.query.get("access_token", "")
        return bool(token) and secrets.compare_digest(token, self.config.access_token)

    # -- sending -----------------------------------------------------------------------------------

    async def handle_cloud_send(self, request: web.Request) -> web.StreamResponse:
        """`POST /{version}/{phone_number_id}/messages`."""
        if not self._authorized(request):
            self.state.note_request(self.clock())
            return self._cloud_error(Problem(190, "Invalid OAuth access token."))
        outcome = await self._send(await request.read(), request.match_info["phone_number_id"], cloud=True)
        if isinstance(outcome, Problem):
            return self._cloud_error(outcome)
        return self._answer(request, cloud_success_body(outcome), reset=outcome.reset)

    async def handle_marketing_send(self, request: web.Request) -> web.StreamResponse:
        """`POST /{version}/{phone_number_id}/marketing_messages` (`sandbox.marketing`)."""
        raw = await request.read()
        if not self._authorized(request):
            self.state.note_request(self.clock())
            return self._cloud_error(Problem(190, "Invalid OAuth access token."))
        refused = self.marketing.check_body(raw)
        if refused is not None:
            self.state.note_request(self.clock())
            return self._cloud_error(refused)
        outcome = await self._send(raw, request.match_info["phone_number_id"], cloud=True, via="marketing")
        if isinstance(outcome, Problem):
            return self._cloud_error(outcome)
        self.marketing.accepted(raw)
        message = outcome.message
        body = marketing_success_body(
            to=message.to, wa_id=message.wa_id, wamid=outcome.wamid, status=outcome.status
        )
        return self._answer(request, body, reset=outcome.reset)

    async def handle_marketing_control(self, request: web.Request) -> web.Response:
        """`POST /_sandbox/marketing`: switch terms acceptance and the template warm-up at run time."""
        try:
            data = await request.json()
        except ValueError:
            data = None
        answer = self.marketing.control(data)
        if isinstance(answer, Problem):
            return self._cloud_error(answer)
        return web.Response(body=json.dumps(answer).encode(), content_type=JSON)

    async def handle_pacing_control(self, request: web.Request) -> web.Response:
        """`POST /_sandbox/pacing`: pace a template from now on (`sandbox.pacing`), `{}` stops pacing."""
        try:
            data = await request.json()
        except ValueError:
            data = None
        answer = self.pacer.control(data)
        if isinstance(answer, str):
            return self._cloud_error(Problem(100, answer))
        return web.Response(body=json.dumps(answer).encode(), content_type=JSON)

    def _answer(self, request: web.Request, body: bytes, *, reset: bool) -> web.StreamResponse:
        if reset:
            self.state.resets_after_accept += 1
            if request.transport is not None:
                request.transport.abort()
        return web.Response(body=body, content_type=JSON)

    async def _send(
        self, raw: bytes, phone_number_id: str, *, cloud: bool, via: str = "cloud"
    ) -> Accepted | Problem:
        now = self.clock()
        self.state.note_request(now)
        message = parse_message(raw, cloud=cloud)
        if isinstance(message, Problem):
            return message
        attempt_key = ""
        if self.faults.per_request:
            attempt_key = f"{message.wa_id}:{self.state.attempts_per_recipient[message.wa_id]}"
            self.state.attempts_per_recipient[message.wa_id] += 1
        latency_s = self.faults.latency_s(attempt_key)
        if latency_s > 0:
            await asyncio.sleep(latency_s)
            now = self.clock()
        flake = self.faults.flake(attempt_key)
        checked = self._check(message, phone_number_id=phone_number_id, now=now, flake=flake)
        if not isinstance(checked, Problem) and via == "marketing":
            checked = self.marketing.check_template(checked, now) or checked
        if isinstance(checked, Problem):
            return checked
        wamid, status = self._accept(message, spec=checked, phone_number_id=phone_number_id, now=now, via=via)
        return Accepted(wamid, message, reset=flake is Flake.RESET_AFTER_ACCEPT, status=status)

    def _check(
        self, message: OutgoingMessage, *, phone_number_id: str, now: float, flake: Flake
    ) -> TemplateSpec | Problem | None:
        """The first reason to refuse this message, or its template (None for a non-template message)."""
        if self.faults.storming(now):
            return Problem(130429, "Throttle storm (sandbox fault throttle-storm): retry later.")
        if flake is Flake.ERROR_131000:
            return Problem(131000, "An unknown error occurred (sandbox fault flaky).", http_status=500)
        if flake is Flake.ERROR_131016:
            return Problem(
                131016, "The service is temporarily unavailable (sandbox fault flaky).", http_status=503
            )
        if self.state.over_rate(phone_number_id, now, mps=self.config.mps):
            return Problem(
                130429,
                f"More than {self.config.mps} messages in the last second for phone number "
                f"{phone_number_id}.",
            )
        spec: TemplateSpec | None = None
        if message.type == "template":
            found = lookup_template(self.book, message)
            if isinstance(found, Problem):
                return found
            spec = found
            problem = check_parameters(spec, message) or header_media_problem(
                self.media, message.components, phone_number_id=phone_number_id
            )
            if problem is not None:
                return problem
        if self.state.too_soon(message.wa_id, now, spacing_s=self.config.pair_spacing_s):
            return Problem(
                131056,
                f"Message to {message.wa_id} within {self.config.pair_spacing_s:g} s of the previous one.",
            )
        return spec

    def _accept(
        self,
        message: OutgoingMessage,
        *,
        spec: TemplateSpec | None,
        phone_number_id: str,
        now: float,
        via: str = "cloud",
    ) -> tuple[str, str]:
        """Take the message: its wamid and message_status (held when its template is paced)."""
        wamid = self.state.next_wamid(message.wa_id)
        self.state.accepted_by_path[via] += 1
        template_key = f"{spec.name}/{spec.language}" if spec is not None else None
        self.state.record_accept(
            phone_number_id=phone_number_id,
            wa_id=message.wa_id,
            content_key=message.content_key,
            template_key=template_key,
            now=now,
        )
        self.state.remember_wamid(message.wa_id, wamid)
        failure = async_failure(self.config, wa_id=message.wa_id, spec=spec, opted_out=self.state.opted_out)
        if failure is not None:
            self.state.async_failures_by_code[failure[0]] += 1
        pricing = MARKETING_PRICING if via == "marketing" else None
        plan = functools.partial(
            self._plan_webhooks, message, wamid=wamid, spec=spec, phone=phone_number_id, pricing=pricing
        )
        status = "accepted"
        if spec is not None and self.pacer.holds(spec):
            status = HELD_STATUS
            self._hold(message, wamid=wamid, spec=spec, plan=plan, now=now, phone=phone_number_id)
        elif self.emitter is not None:
            plan(failure=failure, now=now)
        if spec is not None and template_key is not None:
            self._maybe_pause(spec, sends=self.state.template_sends[template_key])
        return wamid, status

    def _hold(
        self,
        message: OutgoingMessage,
        *,
        wamid: str,
        spec: TemplateSpec,
        plan: Callable[..., None],
        now: float,
        phone: str,
    ) -> None:
        """Template pacing: a held status now; later the usual statuses, or 132015 (`sandbox.pacing`)."""
        self.state.held += 1
        failure = async_failure(self.config, wa_id=message.wa_id, spec=spec, opted_out=self.state.opted_out)
        paused = (PAUSED_CODE, f"Template {spec.name} was paused while this message was held.")
        if self.emitter is None:
            self.pacer.hold(spec, release=lambda: None, fail=lambda: None)
            return
        held = {
            "id": wamid,
            "status": HELD_STATUS,
            "timestamp": str(int(self.wall())),
            "recipient_id": message.wa_id,
        }
        if message.callback_data is not None:
            held["biz_opaque_callback_data"] = message.callback_data
        self.emitter.schedule(field="statuses", value=held, at=now, phone_number_id=phone)
        self.pacer.hold(
            spec,
            release=lambda: plan(failure=failure, now=self.clock()),
            fail=lambda: plan(failure=paused, now=self.clock()),
        )

    def _plan_webhooks(
        self,
        message: OutgoingMessage,
        *,
        wamid: str,
        spec: TemplateSpec | None,
        failure: tuple[int, str] | None,
        now: float,
        phone: str,
        pricing: str | None = None,
    ) -> None:
        assert self.emitter is not None
        category = spec.category if spec is not None else None
        accepted = AcceptedMessage(
            wamid=wamid,
            wa_id=message.wa_id,
            callback_data=message.callback_data,
            category=pricing or category,
            accepted_wall_s=self.wall(),
            failure=failure,
        )
        nth = self.state.accepted_per_recipient.get(message.wa_id, 0)
        rng = random.Random(f"{self.config.seed}:{message.content_key}:{nth}")
        template = f"{spec.name}/{spec.language}" if spec is not None else None
        timing = timing_for(self.config, template)
        plan = plan_statuses(accepted, timing=timing, rng=rng, counts=self.state.webhooks)
        self.emitter.schedule_statuses(plan, now=now, phone_number_id=phone)
        if failure is None:
            for text in replies_to(self.config, template=template, wa_id=message.wa_id):
                self._reply(reply_request(wa_id=message.wa_id, text=text, context_wamid=wamid), at=now)

    def _reply(self, request: dict[str, Any], *, at: float) -> None:
        """A recipient's answer (`sandbox.propensity`), emitted as an inbound message webhook."""
        change = inbound_change(request, config=self.config, state=self.state, wall_s=self.wall())
        if self.emitter is not None and not isinstance(change, Problem):
            field, value, _ = change
            self.emitter.schedule(field=field, value=value, at=at + REPLY_AFTER_S)

    def _pause_paced(self, spec: TemplateSpec) -> None:
        """Template pacing ended badly: the template is PAUSED (`sandbox.pacing`)."""
        self._pause(spec, description=f"Your template {spec.name} was paused after pacing (sandbox).")

    def _maybe_pause(self, spec: TemplateSpec, *, sends: int) -> None:
        if spec.status != "APPROVED" or not self.faults.pauses_now(sends):
            return
        self._pause(
            spec, description=f"Your template {spec.name} was paused for low quality (sandbox fault)."
        )

    def _pause(self, spec: TemplateSpec, *, description: str) -> None:
        self.book.set_status(spec.name, spec.language, "PAUSED")
        if self.emitter is None:
            return
        value = {
            "event": "PAUSED",
            "message_template_id": int(spec.id) if spec.id.isdigit() else spec.id,
            "message_template_name": spec.name,
            "message_template_language": spec.language,
            "reason": "NONE",
            "other_info": {
                "title": "FIRST_PAUSE",
                "description": description,
            },
        }
        self.emitter.schedule(field="message_template_status_update", value=value, at=self.clock())

    # -- media -------------------------------------------------------------------------------------

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

    # -- On-Premises -------------------------------------------------------------------------------

    async def handle_onprem_login(self, request: web.Request) -> web.Response:
        """`POST /v1/users/login` with basic auth: a bearer token and when it expires."""
        expected = f"{self.config.onprem_username}:{self.config.onprem_password}".encode()
        if not secrets.compare_digest(_basic_credentials(request.headers.get("Authorization", "")), expected):
            return self._onprem_error(Problem(1005, "Invalid credentials.", http_status=401))
        token = secrets.token_urlsafe(32)
        expires = self.wall() + self.config.onprem_token_ttl_s
        self._onprem_tokens[token] = expires
        expires_after = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")
        body = {"users": [{"token": token, "expires_after": expires_after}], "meta": ONPREM_META}
        return web.Response(body=json.dumps(body).encode(), content_type=JSON)

    def _onprem_authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        expires = self._onprem_tokens.get(token)
        return expires is not None and expires > self.wall()

    async def handle_onprem_send(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/messages` (On-Premises shape: no messaging_product, `{"messages":[{"id"}]}`)."""
        if not self._onprem_authorized(request):
            self.state.note_request(self.clock())
            problem = Problem(
                0, "Invalid or expired token: log in with POST /v1/users/login.", http_status=401
            )
            return self._onprem_error(problem)
        outcome = await self._send(await request.read(), self.config.phone_number_id, cloud=False)
        if isinstance(outcome, Problem):
            return self._onprem_error(outcome)
        body = {"messages": [{"id": outcome.wamid}], "meta": ONPREM_META}
        return self._answer(request, json.dumps(body).encode(), reset=outcome.reset)

    # -- management API ----------------------------------------------------------------------------

    def _not_found(self, node_id: str) -> web.Response:
        details = f"Unsupported request. Object with ID '{node_id}' does not exist or lacks permissions."
        return self._cloud_error(Problem(100, details))

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

    # -- sandbox controls --------------------------------------------------------------------------

    async def handle_stats(self, request: web.Request) -> web.Response:
        """`GET /_sandbox/stats[?per_recipient=0]`: the counters as JSON."""
        per_recipient = request.query.get("per_recipient", "1") not in ("0", "false", "no")
        body = self.stats().to_json(per_recipient=per_recipient)
        return web.Response(body=json.dumps(body).encode(), content_type=JSON)

    async def handle_inbound(self, request: web.Request) -> web.Response:
        """`POST /_sandbox/inbound`: a user writes, taps a button or stops marketing; emits its webhook."""
        try:
            data = await request.json()
        except ValueError:
            data = None
        change = inbound_change(data, config=self.config, state=self.state, wall_s=self.wall())
        if isinstance(change, Problem):
            return self._cloud_error(change)
        field, value, message_id = change
        queued = self.emitter is not None
        if self.emitter is not None:
            self.emitter.schedule(field=field, value=value, at=self.clock())
        body = {"queued": queued, "field": field, "message_id": message_id, "value": value}
        return web.Response(body=json.dumps(body).encode(), content_type=JSON)


@dataclass
class RunningSandbox:
    """A sandbox serving on a real port: its base URL, config, stats and webhook drain."""

    sandbox: Sandbox
    base_url: str

    @property
    def config(self) -> SandboxConfig:
        """The configuration it runs with."""
        return self.sandbox.config

    def stats(self) -> SandboxStats:
        """A snapshot of the counters (what `GET /_sandbox/stats` returns)."""
        return self.sandbox.stats()

    async def webhooks_drained(self, *, timeout_s: float = 30.0) -> bool:
        """Wait until every planned webhook was delivered or given up (True) or `timeout_s` passed."""
        if self.sandbox.emitter is None:
            return True
        return await self.sandbox.emitter.drained(timeout_s=timeout_s)


@contextlib.asynccontextmanager
async def running_sandbox(config: SandboxConfig | None = None) -> AsyncIterator[RunningSandbox]:
    """Serve a sandbox on `config.host:config.port` (port 0 = a free one) for the `async with` body."""
    config = config or SandboxConfig()
    sandbox = Sandbox(config)
    runner = web.AppRunner(sandbox.build_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield RunningSandbox(sandbox=sandbox, base_url=f"http://{host}:{port}")
    finally:
        await runner.cleanup()


def listening_line(base_url: str) -> str:
    """The line `wacamp sandbox serve` prints once it listens (tests parse it)."""
    return f"sandbox listening on {base_url}"


async def serve(config: SandboxConfig, *, announce: Callable[[str], None], stop: asyncio.Event) -> None:
    """Serve until `stop` is set; `announce` gets the listening line."""
    async with running_sandbox(config) as running:
        announce(listening_line(running.base_url))
        await stop.wait()

"""The sandbox's send endpoints: Cloud API messages and Marketing Messages API sends, and what follows them.

Checks a send (faults, rate, template, parameters, pair spacing), accepts it, plans its status webhooks and
replies, holds it under template pacing and pauses templates (`sandbox.pacing`, `sandbox.faults`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections.abc import Callable
from typing import Any, NamedTuple

from aiohttp import web

from sandbox.core import SandboxCore
from sandbox.errors import Problem
from sandbox.faults import Flake
from sandbox.inbound import inbound_change
from sandbox.marketing import marketing_success_body
from sandbox.media import header_media_problem
from sandbox.outcomes import async_failure
from sandbox.pacing import HELD_STATUS, PAUSED_CODE
from sandbox.propensity import REPLY_AFTER_S, replies_to, reply_request, timing_for
from sandbox.rules import OutgoingMessage, check_parameters, lookup_template, parse_message
from sandbox.templates import TemplateSpec
from sandbox.webhooks import AcceptedMessage, plan_statuses

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


class SendingHandlers(SandboxCore):
    """`POST .../messages` and `POST .../marketing_messages`: check, accept, plan webhooks, pace, pause."""

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

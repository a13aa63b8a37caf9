"""Template pacing in the sandbox: hold a template's first sends, then release them or pause it.

Meta paces a new (or recently non-GREEN) marketing or utility template: it delivers a first batch and
holds the rest (``message_status: held_for_quality_assessment`` in the send answer and a status
webhook saying the same) while it reads the recipients' feedback; then the held messages go out, or the
template is paused and every held message fails with ``132015``. Here (config `TemplatePacing`): the
first `hold` accepted sends of `template` are held; `after_s` after the first of them, all are released
(their usual sent / delivered / read statuses follow) or, with outcome "pause", the template becomes
PAUSED (a ``message_template_status_update`` webhook; later sends get 132015 at once) and each held
message gets a ``failed`` status with 132015. Held messages are accepted messages: they count once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.config import TemplatePacing
from sandbox.templates import TemplateSpec

#: What a held message's send answer and status webhook say.
HELD_STATUS = "held_for_quality_assessment"
#: The error of a held message whose template was paused.
PAUSED_CODE = 132015


@dataclass
class _Held:
    release: Callable[[], None]
    fail: Callable[[], None]


@dataclass
class TemplatePacer:
    """Holds the paced template's first sends and settles them once (release or pause)."""

    pacing: TemplatePacing | None
    #: Called once when the outcome is "pause", with the paced template's spec.
    pause_template: Callable[[TemplateSpec], None]
    held_total: int = 0
    released: int = 0
    failed: int = 0
    _held: list[_Held] = field(default_factory=list)
    _spec: TemplateSpec | None = None
    _timer: asyncio.TimerHandle | None = None
    _settled: bool = False

    def holds(self, spec: TemplateSpec | None) -> bool:
        """Whether the next accepted send of `spec` is held."""
        pacing = self.pacing
        return (
            pacing is not None
            and spec is not None
            and spec.name == pacing.template
            and self.held_total < pacing.hold
            and not self._settled
        )

    def hold(self, spec: TemplateSpec, *, release: Callable[[], None], fail: Callable[[], None]) -> None:
        """Hold one accepted message; the first one starts the settling timer."""
        assert self.pacing is not None
        self.held_total += 1
        self._spec = spec
        self._held.append(_Held(release, fail))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.pacing.after_s, self.settle)

    def settle(self) -> None:
        """Release every held message, or pause the template and fail them (132015)."""
        assert self.pacing is not None
        self._settled = True
        held, self._held = self._held, []
        if self.pacing.outcome == "pause" and self._spec is not None:
            self.pause_template(self._spec)
            for message in held:
                message.fail()
            self.failed += len(held)
            return
        for message in held:
            message.release()
        self.released += len(held)

    def control(self, data: Any) -> dict[str, Any] | str:
        """``POST /_sandbox/pacing`` ``{"template", "hold", "outcome", "after_s"}``: pace a template from
        now on (counters start again); ``{}`` stops pacing. A string says what is wrong."""
        if not isinstance(data, dict):
            return "expected a JSON object"
        try:
            pacing = TemplatePacing(**data) if data else None
        except (TypeError, ValueError) as exc:
            return str(exc)
        self.close()
        self.pacing, self.held_total, self.released, self.failed = pacing, 0, 0, 0
        self._held, self._spec, self._timer, self._settled = [], None, None, False
        return self.to_json()

    def close(self) -> None:
        """Stop the timer (the sandbox is stopping)."""
        if self._timer is not None:
            self._timer.cancel()

    def to_json(self) -> dict[str, Any]:
        """The paced template and the counters."""
        template = self.pacing.template if self.pacing is not None else None
        return {
            "template": template,
            "held": self.held_total,
            "released": self.released,
            "failed": self.failed,
        }

"""The rollout options of `campaigns create` (``--rollout --rollout-wait --guardrail``), checked before
the campaign exists and stored on it after, like the schedule options (`wacamp.cli.schedule_cmd`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.settings import Settings
from campaigns.rollout.stages import Rollout, attach, list_size, new_rollout, parse_guardrails
from campaigns.schedule import parse_duration_s

F = TypeVar("F", bound=Callable[..., Any])

_KEYS = ("rollout", "rollout_wait", "guardrails")


def rollout_options() -> Callable[[F], F]:
    """Add ``--rollout``, ``--rollout-wait`` and ``--guardrail`` to a click command."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                "--rollout",
                metavar="STAGES",
                help="Send in stages, each judged by the guardrails before the next: cumulative shares "
                "(2%,10%,100%) or counts (100,1000,all) of the list; members are drawn at random, "
                "once (planning again never moves anyone).",
            ),
            click.option(
                "--rollout-wait",
                metavar="DURATION",
                help="How long after a stage's last send its replies and webhooks are gathered before "
                "the guardrails judge it: 30m, 2h, 45s.  [default: [rollout] wait_s]",
            ),
            click.option(
                "--guardrail",
                "guardrails",
                multiple=True,
                metavar="NAME=VALUE",
                help="Override a [rollout] guardrail for this campaign, e.g. max_optout_rate=0.05 "
                "(names: `wacamp config show`, section rollout).",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def checked_rollout(
    engine: Engine, settings: Settings, params: dict[str, Any], *, list_name: str
) -> Rollout | None:
    """Take the rollout options out of `params` and check them (None when --rollout was not given)."""
    text, wait, guardrails = (params.pop(key, None) for key in _KEYS)
    if not text:
        if wait or guardrails:
            raise click.UsageError("--rollout-wait and --guardrail go with --rollout")
        return None
    wait_s = parse_duration_s(wait) if wait else settings.rollout.wait_s
    with engine.connect() as conn:
        audience = list_size(conn, list_name)
    return new_rollout(text, audience=audience, wait_s=wait_s, guardrails=parse_guardrails(guardrails or ()))


def store_rollout(engine: Engine, campaign_id: int, rollout: Rollout | None) -> None:
    """Store a checked rollout on the campaign just created."""
    if rollout is not None:
        with write_transaction(engine) as conn:
            attach(conn, campaign_id, rollout)

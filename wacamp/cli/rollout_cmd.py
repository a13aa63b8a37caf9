"""The rollout and A/B options of `campaigns create`, checked before the campaign exists and stored on it
after, like the schedule options (`wacamp.cli.schedule_cmd`).

``--rollout --rollout-wait --guardrail`` (staged rollout) and ``--variant --split --variant-param
--ab-test --ab-metric --ab-alpha --ab-default`` (A/B variants; with ``--ab-test`` the test share is the
first stage of a two-stage rollout, the rest gets the winner).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from sqlalchemy.engine import Engine

from campaigns.content.personalisation import BindingError, Bindings, canonical_key
from campaigns.core.db import write_transaction
from campaigns.core.exceptions import ValidationFailed
from campaigns.core.settings import Settings
from campaigns.rollout.stages import Rollout, RolloutError, attach, list_size, new_rollout, parse_guardrails
from campaigns.rollout.variants import (
    ABTest,
    check_metric,
    parse_split,
    parse_variants,
    variant_problems,
    with_params,
)
from campaigns.schedule import parse_duration_s

F = TypeVar("F", bound=Callable[..., Any])

_ROLLOUT_KEYS = ("rollout", "rollout_wait", "guardrails")
_AB_KEYS = ("variants", "split", "variant_params", "ab_test", "ab_metric", "ab_alpha", "ab_default")


def rollout_options() -> Callable[[F], F]:
    """Add the staged-rollout and A/B options to a click command."""

    def decorate(func: F) -> F:
        for option in reversed(_ROLLOUT_OPTIONS + _AB_OPTIONS):
            func = option(func)
        return func

    return decorate


_ROLLOUT_OPTIONS = [
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
        help="How long after a stage's (or an A/B test's) last send replies and webhooks are gathered "
        "before it is judged: 30m, 2h, 45s.  [default: [rollout] wait_s]",
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
_AB_OPTIONS = [
    click.option(
        "--variant",
        "variants",
        multiple=True,
        metavar="NAME:TEMPLATE[:LANG]",
        help="An A/B variant (twice or more, instead of --template): each contact gets one, drawn once.",
    ),
    click.option("--split", metavar="W/W", help="Shares of the variants, e.g. 70/30.  [default: equal]"),
    click.option(
        "--variant-param",
        "variant_params",
        multiple=True,
        metavar="NAME:KEY=VALUE",
        help="A placeholder filled differently for one variant, e.g. b:2=SPRING20 (overrides --param).",
    ),
    click.option(
        "--ab-test",
        metavar="SHARE",
        help="Test the variants on this share of the list first (e.g. 10%); after --rollout-wait the "
        "winner goes to the rest, if the difference is significant, else the default variant.",
    ),
    click.option(
        "--ab-metric",
        default="read",
        show_default=True,
        metavar="METRIC",
        help="What wins: read, replied, delivered or button:<payload>.",
    ),
    click.option(
        "--ab-alpha",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=0.05,
        show_default=True,
        help="Significance level of the two-proportion test.",
    ),
    click.option(
        "--ab-default",
        metavar="NAME",
        help="The variant sent when no winner is significant.  [default: the first]",
    ),
]


@dataclass(frozen=True)
class Staged:
    """The checked rollout and A/B test of a new campaign, and the template it is created with."""

    template: str
    language: str
    rollout: Rollout | None = None
    ab: ABTest | None = None


def checked_rollout(
    engine: Engine,
    settings: Settings,
    params: dict[str, Any],
    *,
    list_name: str,
    template: str | None,
    language: str | None,
    bindings: Bindings,
    seed: str,
) -> Staged:
    """Take the rollout and A/B options out of `params` and check them (with the variants' templates).

    `seed` (the campaign's name) salts the hashes that draw stages and variants: the same campaign
    draws the same people, in any database.
    """
    rollout_args = {key: params.pop(key, None) for key in _ROLLOUT_KEYS}
    ab_args = {key: params.pop(key, None) for key in _AB_KEYS}
    with engine.connect() as conn:
        audience = list_size(conn, list_name)
    wait_s = parse_duration_s(rollout_args["rollout_wait"]) if rollout_args["rollout_wait"] else None
    context = _Context(settings=settings, audience=audience, wait_s=wait_s, seed=seed)
    if not ab_args["variants"]:
        if template is None or language is None:
            raise click.UsageError("give --template and --language (or two --variant)")
        return Staged(template, language, _rollout(rollout_args, context))
    return _ab(engine, ab_args, rollout_args, context, language=language, bindings=bindings)


@dataclass(frozen=True)
class _Context:
    settings: Settings
    audience: int
    wait_s: float | None
    seed: str


def _rollout(args: dict[str, Any], ctx: _Context, *, stages: str | None = None) -> Rollout | None:
    text = stages or args["rollout"]
    if not text:
        if ctx.wait_s or args["guardrails"]:
            raise click.UsageError("--rollout-wait and --guardrail go with --rollout or --ab-test")
        return None
    return new_rollout(
        text,
        audience=ctx.audience,
        wait_s=ctx.wait_s or ctx.settings.rollout.wait_s,
        guardrails=parse_guardrails(args["guardrails"] or ()),
        seed=ctx.seed,
    )


def _ab(
    engine: Engine,
    args: dict[str, Any],
    rollout_args: dict[str, Any],
    ctx: _Context,
    *,
    language: str | None,
    bindings: Bindings,
) -> Staged:
    variants = with_params(parse_variants(args["variants"], language=language), args["variant_params"] or ())
    default = args["ab_default"] or variants[0].name
    if default not in [v.name for v in variants]:
        raise RolloutError(f"--ab-default {default!r} is not one of the variants")
    if rollout_args["rollout"] and args["ab_test"]:
        raise click.UsageError("give --rollout or --ab-test, not both (an A/B test is a two-stage rollout)")
    problems = variant_problems(engine, variants, _canonical(bindings))
    if problems:
        raise ValidationFailed(problems, what="the A/B variants")
    test = args["ab_test"]
    rollout = _rollout(rollout_args, ctx, stages=f"{test.strip()},100%" if test else None)
    ab = ABTest(
        variants=tuple(variants),
        weights=parse_split(args["split"], len(variants)),
        metric=check_metric(args["ab_metric"] or "read"),
        alpha=float(args["ab_alpha"] or 0.05),
        default=default,
        seed=ctx.seed,
        test_share=rollout.shares[0] if test and rollout is not None else None,
    )
    chosen = next(v for v in variants if v.name == default)
    return Staged(chosen.template, chosen.language, rollout, ab)


def _canonical(bindings: Bindings) -> Bindings:
    params: dict[str, str] = {}
    for key, value in bindings.params.items():
        try:
            params[canonical_key(key)] = value
        except BindingError:
            continue  # `campaigns create` reports it
    return dataclasses.replace(bindings, params=params)


def store_rollout(engine: Engine, campaign_id: int, staged: Staged) -> None:
    """Store a checked rollout and A/B test on the campaign just created."""
    if staged.rollout is not None or staged.ab is not None:
        ab = staged.ab.as_json() if staged.ab is not None else None
        with write_transaction(engine) as conn:
            attach(conn, campaign_id, staged.rollout, ab)


def ab_bindings(
    params: Mapping[str, str], defaults: Mapping[str, str], payloads: Mapping[str, str], media_url: str | None
) -> Bindings:
    """The campaign's own bindings, against which each variant is checked."""
    return Bindings(
        params=dict(params),
        defaults=dict(defaults),
        header_media_url=media_url,
        button_payloads=dict(payloads),
    )

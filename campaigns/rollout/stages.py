"""Rollout stages: the spec (`2%,10%,100%` or counts), who is in which stage, and which rows may be sent.

A contact's stage is drawn from a stable hash of the campaign's seed and the contact id, so the members
of a stage are spread over the whole audience (not the first rows of the list) and the same contact
always lands in the same stage: planning again never moves anyone. Stages are cumulative shares of the
audience: with ``2%,10%,100%`` stage 0 holds about 2 %, stage 1 the next 8 %, stage 2 the other 90 %.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.core.exceptions import UserError
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.settings_sections import RolloutSettings

#: The guardrails a campaign may override (`--guardrail NAME=VALUE`), all settings of [rollout].
GUARDRAIL_NAMES = (
    "max_failure_rate",
    "max_marketing_limit_share",
    "max_optout_rate",
    "template_downgrade",
    "sender_downgrade",
    "min_webhook_share",
    "max_wait_s",
)


class RolloutError(UserError):
    """A rollout option that cannot be used (the message names the option and the value)."""


@dataclass(frozen=True)
class Rollout:
    """A campaign's rollout: cumulative shares of the audience per stage, the wait, seed, overrides."""

    shares: tuple[float, ...]
    wait_s: float
    seed: str
    guardrails: Mapping[str, float] = field(default_factory=dict)
    baseline: Mapping[str, str | None] | None = None

    @property
    def last_stage(self) -> int:
        return len(self.shares) - 1

    def stage_of(self, contact_id: int) -> int:
        """The stage of one contact: the first whose cumulative share its hash falls under."""
        point = _unit_hash(self.seed, contact_id)
        return next((i for i, share in enumerate(self.shares) if point < share), self.last_stage)

    def as_json(self) -> dict[str, Any]:
        """What the campaign's ``rollout`` column holds."""
        return {
            "shares": list(self.shares),
            "wait_s": self.wait_s,
            "seed": self.seed,
            "guardrails": dict(self.guardrails),
            "baseline": dict(self.baseline) if self.baseline is not None else None,
        }

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Rollout:
        """The rollout stored in a campaign's ``rollout`` column."""
        baseline = data.get("baseline")
        return cls(
            shares=tuple(float(s) for s in data["shares"]),
            wait_s=float(data["wait_s"]),
            seed=str(data["seed"]),
            guardrails={str(k): float(v) for k, v in (data.get("guardrails") or {}).items()},
            baseline=dict(baseline) if baseline is not None else None,
        )

    def threshold(self, name: str, settings: RolloutSettings) -> float:
        """A guardrail's value for this campaign: its override, else the setting."""
        return float(self.guardrails.get(name, getattr(settings, name)))


def _unit_hash(seed: str, contact_id: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{contact_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def parse_stages(text: str, *, audience: int) -> tuple[float, ...]:
    """``2%,10%,100%`` (cumulative shares) or ``100,1000,all`` (cumulative counts of `audience`)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) < 2 or any(not part for part in parts):
        raise RolloutError(f"--rollout {text!r}: give two stages or more, e.g. 2%,10%,100% or 100,1000,all")
    shares = [_share(part, text=text, audience=audience) for part in parts]
    if any(b <= a for a, b in itertools.pairwise(shares)):
        raise RolloutError(f"--rollout {text!r}: each stage must reach further than the one before")
    if shares[-1] < 1.0:
        raise RolloutError(f"--rollout {text!r}: the last stage must be 100% (or all)")
    return tuple(shares)


def _share(part: str, *, text: str, audience: int) -> float:
    try:
        if part.lower() in ("all", "100%"):
            return 1.0
        share = float(part[:-1]) / 100 if part.endswith("%") else int(part) / max(audience, 1)
    except ValueError:
        raise RolloutError(f"--rollout {text!r}: {part!r} is neither a percentage nor a count") from None
    if share <= 0:
        raise RolloutError(f"--rollout {text!r}: {part!r} must be more than zero")
    return min(share, 1.0)


def parse_guardrails(items: Sequence[str]) -> dict[str, float]:
    """``--guardrail max_optout_rate=0.05`` … into overrides (names of `GUARDRAIL_NAMES`)."""
    overrides: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in GUARDRAIL_NAMES:
            known = ", ".join(GUARDRAIL_NAMES)
            raise RolloutError(f"--guardrail {item!r}: use NAME=VALUE with NAME one of {known}")
        try:
            overrides[name] = float(value)
        except ValueError:
            raise RolloutError(f"--guardrail {item!r}: {value!r} is not a number") from None
    return overrides


def new_rollout(
    text: str, *, audience: int, wait_s: float, guardrails: Mapping[str, float], seed: str | None = None
) -> Rollout:
    """A rollout for a new campaign (a fresh random seed unless one is given)."""
    shares = parse_stages(text, audience=audience)
    return Rollout(shares=shares, wait_s=wait_s, seed=seed or secrets.token_hex(8), guardrails=guardrails)


def rollout_of(campaign: Any) -> Rollout | None:
    """The rollout of a campaign row (model or mapping), or None."""
    data = campaign["rollout"] if isinstance(campaign, Mapping) else campaign.rollout
    return Rollout.of(data) if data else None


def stage_assigner(campaign: Any) -> Callable[[int], int | None]:
    """For the planner: contact id → its stage (None for every contact when there is no rollout)."""
    rollout = rollout_of(campaign)
    if rollout is None:
        return lambda _contact_id: None
    return rollout.stage_of


def released(campaign_id: int) -> sa.ColumnElement[bool]:
    """The claim condition: a ledger row without a stage, or in a stage released for sending."""
    current = sa.select(CAMPAIGN.c.rollout_stage).where(CAMPAIGN.c.id == campaign_id).scalar_subquery()
    condition: sa.ColumnElement[bool] = sa.or_(MESSAGE.c.stage.is_(None), MESSAGE.c.stage <= current)
    return condition


def stage_label(stage: int, rollout: Rollout) -> str:
    """``stage 1 of 3 (2%)``: people count stages from 1."""
    return f"stage {stage + 1} of {len(rollout.shares)} ({rollout.shares[stage] * 100:g}%)"


def list_size(conn: Connection, list_name: str) -> int:
    """Members of a contact list (0 when there is no such list: creating the campaign then says so)."""
    query = (
        sa.select(sa.func.count())
        .select_from(MEMBER.join(LIST, LIST.c.id == MEMBER.c.list_id))
        .where(LIST.c.name == list_name)
    )
    return int(conn.scalar(query) or 0)


def attach(
    conn: Connection, campaign_id: int, rollout: Rollout | None, ab: dict[str, Any] | None = None
) -> None:
    """Give a campaign not planned yet its rollout (its first stage released) and its A/B test."""
    planned = conn.scalar(sa.select(sa.func.count()).where(MESSAGE.c.campaign_id == campaign_id))
    if planned:
        raise RolloutError("a rollout is given when the campaign is created, before its ledger is planned")
    values: dict[str, Any] = {"ab": ab}
    if rollout is not None:
        values.update(rollout=rollout.as_json(), rollout_stage=0)
    conn.execute(sa.update(CAMPAIGN).where(CAMPAIGN.c.id == campaign_id).values(**values))

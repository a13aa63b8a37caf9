"""Guardrails: what a rollout stage's messages say (`stage_facts`, SQL) and whether that is good enough
to go on (`judge`, pure).

Every rate is a share of the stage's sends (its rows that were sent or tried: not planned, not skipped):

- failure rate: rows ``failed``;
- 131049 share: rows failed with 131049 (the per-user marketing limit);
- opt-out rate: recipients who answered with an opt-out keyword or button (the inbound message is
  attributed to the row, or the contact was suppressed for it after the send), or whose
  ``user_preferences`` stop came after the send;
- template: red when the template is no longer APPROVED (paused, disabled, flagged);
- sender: red when the sender's quality rating or messaging limit is lower than when the rollout began.

Too few status webhooks (under ``min_webhook_share`` of the sends) means the stage cannot be judged yet.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.contacts.effects import KEYWORD_OPT_OUT_PREFIX, PREFERENCES_STOP_REASON
from campaigns.core.dbtypes import UTCDateTime
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import SENDER_TABLE as SENDER
from campaigns.core.models import TEMPLATE_TABLE as TEMPLATE
from campaigns.core.models import Campaign, MessageState
from campaigns.core.settings_sections import LimitsSettings, RolloutSettings
from campaigns.rollout.stages import Rollout

m = MESSAGE.c
S = MessageState

#: States of rows that were not sent or tried (yet, or ever).
_NOT_SENT = (S.PLANNED.value, S.SKIPPED.value, "claimed")
#: States a status webhook moves a row to.
_HEARD = (S.SENT.value, S.DELIVERED.value, S.READ.value, S.FAILED.value)
_QUALITY_RANK: dict[str, float] = {"GREEN": 3, "YELLOW": 2, "RED": 1}


@dataclass(frozen=True)
class StageFacts:
    """What one stage's messages say, counted from the ledger, the inbox and the control tables."""

    stage: int
    members: int
    sends: int
    heard: int
    failed: int
    marketing_limited: int
    optouts: int
    read: int
    last_send_at: datetime | None
    template_status: str | None = None
    sender_quality: str | None = None
    sender_tier: str | None = None

    def share(self, count: int) -> float:
        """`count` as a share of the stage's sends (0 when nothing was sent)."""
        return count / self.sends if self.sends else 0.0


def stage_facts(conn: Connection, campaign: Campaign, stage: int) -> StageFacts:
    """Count one stage of a campaign."""
    assert campaign.id is not None
    in_stage = sa.and_(m.campaign_id == campaign.id, m.stage == stage)
    sent = m.state.not_in(_NOT_SENT)
    counts = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.count().filter(sent),
            sa.func.count().filter(m.state.in_(_HEARD)),
            sa.func.count().filter(m.state == S.FAILED.value),
            sa.func.count().filter(m.error_code == 131049),
            sa.func.count().filter(m.state == S.READ.value),
            sa.type_coerce(sa.func.max(m.sending_at), UTCDateTime()),
        ).where(in_stage)
    ).one()
    template, sender = _template_status(conn, campaign), _sender_row(conn, campaign.sender_name)
    return StageFacts(
        stage=stage,
        members=int(counts[0]),
        sends=int(counts[1]),
        heard=int(counts[2]),
        failed=int(counts[3]),
        marketing_limited=int(counts[4]),
        optouts=_optouts(conn, in_stage),
        read=int(counts[5]),
        last_send_at=counts[6],
        template_status=template,
        sender_quality=sender.get("quality_rating"),
        sender_tier=sender.get("messaging_tier"),
    )


def _optouts(conn: Connection, in_stage: sa.ColumnElement[bool]) -> int:
    answered_stop = (
        sa.select(INBOUND.c.id).where(INBOUND.c.message_id == m.id, INBOUND.c.is_optout.is_(True)).exists()
    )
    preferences_stop = (
        sa.select(CONTACT.c.id)
        .where(
            CONTACT.c.id == m.contact_id,
            sa.or_(
                CONTACT.c.suppression_reason == PREFERENCES_STOP_REASON,
                CONTACT.c.suppression_reason.startswith(KEYWORD_OPT_OUT_PREFIX),
            ),
            CONTACT.c.suppressed_at >= m.sending_at,
        )
        .exists()
    )
    query = sa.select(sa.func.count()).where(
        in_stage, m.state.not_in(_NOT_SENT), sa.or_(answered_stop, preferences_stop)
    )
    return int(conn.scalar(query) or 0)


def _template_status(conn: Connection, campaign: Campaign) -> str | None:
    query = sa.select(TEMPLATE.c.status).where(
        TEMPLATE.c.name == campaign.template_name, TEMPLATE.c.language == campaign.language
    )
    value = conn.scalar(query)
    return str(value) if value is not None else None


def _sender_row(conn: Connection, sender_name: str) -> dict[str, Any]:
    query = sa.select(SENDER.c.quality_rating, SENDER.c.messaging_tier).where(SENDER.c.name == sender_name)
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else {}


def sender_baseline(conn: Connection, sender_name: str) -> dict[str, str | None]:
    """The sender's quality rating and messaging limit now (kept when a rollout begins)."""
    row = _sender_row(conn, sender_name)
    return {"quality_rating": row.get("quality_rating"), "messaging_tier": row.get("messaging_tier")}


# ------------------------------------------------------------------------------------- judgement


class Verdict(enum.StrEnum):
    """What the guardrails say about a stage."""

    GREEN = "green"  # the next stage may go out
    RED = "red"  # pause: a guardrail is crossed
    TOO_FEW = "too few webhooks"  # cannot judge yet


@dataclass(frozen=True)
class Check:
    """One guardrail: its value against its threshold, and whether it holds."""

    name: str
    value: float
    threshold: float
    ok: bool
    detail: str


@dataclass(frozen=True)
class Judgement:
    """The verdict and every check, with the figures to show."""

    verdict: Verdict
    checks: list[Check] = field(default_factory=list)
    heard_share: float = 0.0

    @property
    def crossed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def summary(self) -> str:
        """One line: the crossed guardrails with their figures (or all of them when none is)."""
        shown = self.crossed or self.checks
        return "; ".join(check.detail for check in shown)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "heard_share": round(self.heard_share, 4),
            "checks": [asdict(check) for check in self.checks],
        }


def _rate_check(name: str, label: str, count: int, facts: StageFacts, threshold: float) -> Check:
    value = facts.share(count)
    sign = "≤" if value <= threshold else ">"
    detail = f"{label} {value:.1%} {sign} {threshold:.1%} ({count} of {facts.sends})"
    return Check(name, round(value, 4), threshold, value <= threshold, detail)


def _template_check(facts: StageFacts, on: bool) -> Check:
    status = facts.template_status or "unknown"
    ok = not on or status.upper() in ("APPROVED", "UNKNOWN")
    return Check("template_downgrade", 0.0 if ok else 1.0, 0.0, ok, f"template {status}")


def _sender_check(facts: StageFacts, rollout: Rollout, limits: LimitsSettings, on: bool) -> Check:
    base = rollout.baseline or {}
    was_quality, was_tier = base.get("quality_rating"), base.get("messaging_tier")
    quality_down = _lower(_rank_quality(facts.sender_quality), _rank_quality(was_quality))
    tier_down = _lower(_tier_size(facts.sender_tier, limits), _tier_size(was_tier, limits))
    ok = not on or not (quality_down or tier_down)
    detail = (
        f"sender quality {was_quality or '?'} → {facts.sender_quality or '?'}, "
        f"limit {was_tier or '?'} → {facts.sender_tier or '?'}"
    )
    return Check("sender_downgrade", 0.0 if ok else 1.0, 0.0, ok, detail)


def _lower(now: float | None, before: float | None) -> bool:
    """Whether a rank went down; unknown on either side (not read yet) is no downgrade."""
    return now is not None and before is not None and now < before


def _rank_quality(rating: str | None) -> float | None:
    return _QUALITY_RANK.get(rating.upper()) if rating else None


def _tier_size(tier: str | None, limits: LimitsSettings) -> float | None:
    if not tier or not limits.knows_tier(tier):
        return None
    size = limits.tier_limit(tier)
    return float("inf") if size is None else float(size)


def judge(
    facts: StageFacts, rollout: Rollout, *, settings: RolloutSettings, limits: LimitsSettings
) -> Judgement:
    """The guardrails over one stage: RED if any is crossed, TOO_FEW if the rates cannot be judged yet."""

    def t(name: str) -> float:
        return rollout.threshold(name, settings)

    checks = [
        _template_check(facts, t("template_downgrade") > 0),
        _sender_check(facts, rollout, limits, t("sender_downgrade") > 0),
        _rate_check("max_failure_rate", "failure rate", facts.failed, facts, t("max_failure_rate")),
        _rate_check(
            "max_marketing_limit_share",
            "131049 share",
            facts.marketing_limited,
            facts,
            t("max_marketing_limit_share"),
        ),
        _rate_check("max_optout_rate", "opt-out rate", facts.optouts, facts, t("max_optout_rate")),
    ]
    heard_share = facts.share(facts.heard)
    if not all(check.ok for check in checks[:2]):
        return Judgement(Verdict.RED, checks, heard_share)
    if facts.sends and heard_share < t("min_webhook_share"):
        return Judgement(Verdict.TOO_FEW, checks, heard_share)
    verdict = Verdict.GREEN if all(check.ok for check in checks) else Verdict.RED
    return Judgement(verdict, checks, heard_share)

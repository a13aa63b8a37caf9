"""The A/B decision: each variant's rate on the chosen metric over the test's messages, a two-proportion
z-test of the best variant against the default, and the winner (the best only when the difference is
significant at alpha, else the default).

Metrics, as successes / trials per variant:

- ``read``: read / delivered;
- ``delivered``: delivered (or read) / sent or tried;
- ``replied``: delivered rows with a reply attributed to them (not a button tap) / delivered;
- ``button:<payload>``: delivered rows answered with that button payload / delivered.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, MessageState
from campaigns.rollout.variants import BUTTON_METRIC, ABTest

m = MESSAGE.c
S = MessageState
_DELIVERED = (S.DELIVERED.value, S.READ.value)
_NOT_SENT = (S.PLANNED.value, S.SKIPPED.value, "claimed")


@dataclass(frozen=True)
class Proportion:
    """One variant's successes out of trials on the metric."""

    variant: str
    successes: int
    trials: int

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else 0.0


@dataclass(frozen=True)
class ZTest:
    """A two-proportion z-test of `b` against `a`: the difference b − a, its p-value and interval."""

    difference: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


def z_test(a: Proportion, b: Proportion, *, alpha: float) -> ZTest:
    """Pooled two-sided z-test; the interval (unpooled standard error) at confidence 1 − alpha."""
    difference = b.rate - a.rate
    if not a.trials or not b.trials:
        return ZTest(difference, 0.0, 1.0, -1.0, 1.0)
    pooled = (a.successes + b.successes) / (a.trials + b.trials)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.trials + 1 / b.trials))
    z = difference / se if se else 0.0
    p_value = 2 * (1 - NormalDist().cdf(abs(z))) if se else 1.0
    spread = math.sqrt(a.rate * (1 - a.rate) / a.trials + b.rate * (1 - b.rate) / b.trials)
    margin = NormalDist().inv_cdf(1 - alpha / 2) * spread
    return ZTest(difference, z, p_value, difference - margin, difference + margin)


def _success(metric: str) -> sa.ColumnElement[bool]:
    if metric == "read":
        return m.state == S.READ.value
    if metric == "delivered":
        return m.state.in_(_DELIVERED)
    answers = sa.select(INBOUND.c.id).where(INBOUND.c.message_id == m.id)
    if metric == "replied":
        answers = answers.where(INBOUND.c.type.not_in(["button", "interactive"]))
    else:
        answers = answers.where(INBOUND.c.payload == metric.removeprefix(BUTTON_METRIC))
    return answers.exists()


def proportions(conn: Connection, campaign: Campaign, ab: ABTest, *, stage: int | None) -> list[Proportion]:
    """Each variant's successes and trials on the test's metric (over `stage`, or every row)."""
    trial = m.state.not_in(_NOT_SENT) if ab.metric == "delivered" else m.state.in_(_DELIVERED)
    query = (
        sa.select(m.variant, sa.func.count(), sa.func.count().filter(_success(ab.metric)))
        .where(m.campaign_id == campaign.id, m.variant.is_not(None), trial)
        .group_by(m.variant)
    )
    if stage is not None:
        query = query.where(m.stage == stage)
    counts = {str(v): (int(n), int(k)) for v, n, k in conn.execute(query)}
    return [Proportion(name, counts.get(name, (0, 0))[1], counts.get(name, (0, 0))[0]) for name in ab.names]


@dataclass(frozen=True)
class Decision:
    """Which variant the rest gets, and the numbers it was decided on."""

    winner: str
    significant: bool
    best: str
    compared_with: str
    metric: str
    alpha: float
    test: ZTest
    rates: list[Proportion]

    def summary(self) -> str:
        """One line: the winner (or why the default), the rates, the p-value and the interval."""
        rates = ", ".join(f"{p.variant} {p.rate:.1%} ({p.successes}/{p.trials})" for p in self.rates)
        t = self.test
        numbers = (
            f"{self.best} − {self.compared_with} = {t.difference:+.1%}, p = {t.p_value:.4f}, "
            f"{1 - self.alpha:.0%} CI [{t.ci_low:+.1%}, {t.ci_high:+.1%}]"
        )
        if self.significant:
            return f"A/B {self.metric}: {rates}; {numbers}: variant {self.winner} wins"
        return f"A/B {self.metric}: {rates}; {numbers}: not significant, the default {self.winner} is sent"

    def as_json(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "significant": self.significant,
            "best": self.best,
            "compared_with": self.compared_with,
            "metric": self.metric,
            "alpha": self.alpha,
            "difference": round(self.test.difference, 6),
            "z": round(self.test.z, 4),
            "p_value": round(self.test.p_value, 6),
            "ci": [round(self.test.ci_low, 6), round(self.test.ci_high, 6)],
            "rates": [{**asdict(p), "rate": round(p.rate, 6)} for p in self.rates],
            "summary": self.summary(),
        }


def decide(rates: list[Proportion], ab: ABTest) -> Decision:
    """The best variant wins when it beats the default significantly; otherwise the default."""
    by_name = {p.variant: p for p in rates}
    ranked = sorted(rates, key=lambda p: (-p.rate, p.variant != ab.default))
    best = ranked[0]
    other = by_name[ab.default] if best.variant != ab.default else ranked[1]
    test = z_test(other, best, alpha=ab.alpha)
    significant = best.variant != ab.default and test.p_value < ab.alpha
    winner = best.variant if significant else ab.default
    return Decision(winner, significant, best.variant, other.variant, ab.metric, ab.alpha, test, rates)

"""A/B variants: the options (`--variant a:TEMPLATE[:LANG]`, `--split`, `--variant-param`, `--ab-*`), who
gets which variant, and the planner's row builder per variant.

Each contact's variant is drawn from a stable hash of the campaign's seed and the contact (another
salt than its rollout stage), so planning again never moves anyone. With ``--ab-test 10%`` the campaign
is a two-stage rollout: the test share gets the variants by the split; the rest is planned only once
the test is decided (`campaigns.rollout.ab_test`), all with the winner (or the default variant).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from campaigns.content.personalisation import BindingError, Bindings, binding_problems, canonical_key
from campaigns.core.models import Campaign
from campaigns.rollout.stages import RolloutError, rollout_of
from campaigns.templates.catalog import find_templates, record_of

METRICS = ("read", "replied", "delivered")
BUTTON_METRIC = "button:"
MAX_NAME = 16


@dataclass(frozen=True)
class Variant:
    """One variant: a template (and language), and the parameters it fills differently."""

    name: str
    template: str
    language: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ABTest:
    """A campaign's A/B test, as stored in its ``ab`` column."""

    variants: tuple[Variant, ...]
    weights: tuple[float, ...]
    metric: str
    alpha: float
    default: str
    seed: str
    test_share: float | None = None
    decision: Mapping[str, Any] | None = None

    @property
    def names(self) -> list[str]:
        return [variant.name for variant in self.variants]

    def drawn(self, contact_id: int) -> str:
        """The variant one contact gets by the split (a stable hash, cumulative weights)."""
        digest = hashlib.blake2b(f"ab:{self.seed}:{contact_id}".encode(), digest_size=8).digest()
        point, total = int.from_bytes(digest, "big") / 2**64, 0.0
        for variant, weight in zip(self.variants, self.weights, strict=True):
            total += weight
            if point < total:
                return variant.name
        return self.variants[-1].name

    def variant_for(self, contact_id: int, stage: int | None) -> str | None:
        """The variant of a contact in `stage`; None: not yet (the rest of a test not decided)."""
        if self.test_share is None or not stage:
            return self.drawn(contact_id)
        return str(self.decision["winner"]) if self.decision else None

    def as_json(self) -> dict[str, Any]:
        return {
            "variants": [
                {"name": v.name, "template": v.template, "language": v.language, "params": dict(v.params)}
                for v in self.variants
            ],
            "weights": list(self.weights),
            "metric": self.metric,
            "alpha": self.alpha,
            "default": self.default,
            "seed": self.seed,
            "test_share": self.test_share,
            "decision": dict(self.decision) if self.decision is not None else None,
        }

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ABTest:
        variants = tuple(
            Variant(v["name"], v["template"], v["language"], dict(v["params"])) for v in data["variants"]
        )
        return cls(
            variants=variants,
            weights=tuple(float(w) for w in data["weights"]),
            metric=str(data["metric"]),
            alpha=float(data["alpha"]),
            default=str(data["default"]),
            seed=str(data["seed"]),
            test_share=None if data.get("test_share") is None else float(data["test_share"]),
            decision=data.get("decision"),
        )


def ab_of(campaign: Any) -> ABTest | None:
    """The A/B test of a campaign row (model or mapping), or None."""
    data = campaign["ab"] if isinstance(campaign, Mapping) else campaign.ab
    return ABTest.of(data) if data else None


# ------------------------------------------------------------------------------------------ options


def parse_variants(items: Sequence[str], *, language: str | None) -> list[Variant]:
    """``a:TEMPLATE[:LANG]`` … (two or more, distinct names of letters and digits)."""
    variants: list[Variant] = []
    for item in items:
        parts = item.split(":")
        name = parts[0].strip()
        lang = parts[2].strip() if len(parts) > 2 else (language or "")
        if len(parts) not in (2, 3) or not name.isalnum() or len(name) > MAX_NAME or not parts[1] or not lang:
            raise RolloutError(f"--variant {item!r}: use NAME:TEMPLATE[:LANGUAGE] (NAME: letters and digits)")
        variants.append(Variant(name, parts[1].strip(), lang))
    names = [v.name for v in variants]
    if len(variants) < 2 or len(set(names)) != len(names):
        raise RolloutError("--variant: give two variants or more, each with its own name")
    return variants


def with_params(variants: list[Variant], items: Sequence[str]) -> list[Variant]:
    """``--variant-param b:2=SPRING20``: that parameter for variant b only."""
    extra: dict[str, dict[str, str]] = {v.name: {} for v in variants}
    for item in items:
        name, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not sep or not eq or name not in extra:
            raise RolloutError(
                f"--variant-param {item!r}: use VARIANT:KEY=VALUE with VARIANT one of {sorted(extra)}"
            )
        try:
            extra[name][canonical_key(key)] = value
        except BindingError as exc:
            raise RolloutError(f"--variant-param {item!r}: {exc}") from None
    return [Variant(v.name, v.template, v.language, extra[v.name]) for v in variants]


def parse_split(text: str | None, count: int) -> tuple[float, ...]:
    """``50/50`` (or ``70/30``, ``1/1/2``): one weight per variant, as shares; equal when not given."""
    if not text:
        return tuple(1 / count for _ in range(count))
    try:
        weights = [float(part) for part in text.split("/")]
    except ValueError:
        raise RolloutError(f"--split {text!r}: use numbers separated by /, e.g. 50/50") from None
    if len(weights) != count or any(w <= 0 for w in weights):
        raise RolloutError(f"--split {text!r}: give {count} positive numbers, one per variant")
    return tuple(w / sum(weights) for w in weights)


def check_metric(metric: str) -> str:
    """``read``, ``replied``, ``delivered`` or ``button:<payload>``."""
    if metric in METRICS or (metric.startswith(BUTTON_METRIC) and len(metric) > len(BUTTON_METRIC)):
        return metric
    raise RolloutError(f"--ab-metric {metric!r}: use read, replied, delivered or button:<payload>")


def variant_problems(engine: Engine, variants: list[Variant], bindings: Bindings) -> list[str]:
    """Why a variant cannot be sent: its template missing or not APPROVED, or its placeholders unbound."""
    problems: list[str] = []
    for variant in variants:
        found = find_templates(engine, name=variant.template)
        template = next((t for t in found if t.language == variant.language), None)
        what = f"variant {variant.name}: template {variant.template!r} ({variant.language})"
        if template is None or template.status.upper() != "APPROVED":
            problems.append(f"{what} {'does not exist' if template is None else 'is ' + template.status}")
            continue
        params = {**bindings.params, **variant.params}
        own = dataclasses.replace(bindings, params=params)
        problems += [f"{what}: {p}" for p in binding_problems(record_of(template).shape(), own)]
    return problems


# ------------------------------------------------------------------------------------------ planning


class RowBuilder(Protocol):
    """What the planner's row builder does: classify a contact into a chunk, freeze a planned row."""

    campaign_id: int | None

    def add(self, chunk: Any, contact: Any, *, now: Any) -> None: ...

    def freeze(self, row: dict[str, Any], message_id: int) -> dict[str, Any]: ...


class VariantRows:
    """The planner's rows of an A/B campaign: each contact through its variant's builder (or none yet)."""

    def __init__(self, campaign: Campaign, ab: ABTest, make: Callable[[Campaign, str], RowBuilder]) -> None:
        self.ab = ab
        self.campaign_id = campaign.id
        self.rollout = rollout_of(campaign)
        self.builders = {v.name: make(variant_campaign(campaign, v), v.name) for v in ab.variants}

    def add(self, chunk: Any, contact: Any, *, now: Any) -> None:
        """`contact`: a list member row as the planner reads it (`campaigns.planning.planner.Member`)."""
        stage = self.rollout.stage_of(int(contact.id)) if self.rollout is not None else None
        name = self.ab.variant_for(int(contact.id), stage)
        if name is not None:  # None: the rest of an undecided test, planned once it is decided
            self.builders[name].add(chunk, contact, now=now)

    def freeze(self, row: dict[str, Any], message_id: int) -> dict[str, Any]:
        return self.builders[row["variant"]].freeze(row, message_id)


def variant_campaign(campaign: Campaign, variant: Variant) -> Campaign:
    """The campaign as one variant sends it: its template, language and parameters."""
    params = {**campaign.params, **variant.params}
    update = {"template_name": variant.template, "language": variant.language, "params": params}
    return campaign.model_copy(update=update)


def row_builder(campaign: Campaign, make: Callable[[Campaign, str | None], RowBuilder]) -> RowBuilder:
    """For the planner: one builder, or one per variant for an A/B campaign."""
    ab = ab_of(campaign)
    if ab is None:
        return make(campaign, None)
    return VariantRows(campaign, ab, make)


def describe_ab(campaign: Campaign) -> dict[str, Any] | None:
    """For `campaigns show`: the variants, the split, the test and its decision (None: no A/B test)."""
    ab = ab_of(campaign)
    if ab is None:
        return None
    decision = ab.decision["summary"] if ab.decision else None
    return {
        "variants": [f"{v.name}: {v.template} ({v.language})" for v in ab.variants],
        "split": "/".join(f"{w * 100:g}" for w in ab.weights),
        "test_share": ab.test_share,
        "metric": ab.metric,
        "alpha": ab.alpha,
        "default": ab.default,
        "decision": decision
        or ("after the test share's review" if ab.test_share else "every contact by the split"),
    }

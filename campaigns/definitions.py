"""Campaign definitions: create (validated, every problem at once), look up by name or id, cancel, inspect.

A definition binds a template (name + language, must be APPROVED) to a contact list and says how to
fill each placeholder (`campaigns.content.personalisation`). Commands accept a campaign's name or its id;
names cannot be only digits, so the two never collide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from campaigns.content.personalisation import BindingError, Bindings, binding_problems, canonical_key
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import ConfigError, NotFoundError, UserError, ValidationFailed
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, CampaignState, MessageState, Template
from campaigns.core.settings import Settings
from campaigns.templates.catalog import find_templates, record_of

CANCELLED_REASON = "cancelled"


@dataclass(frozen=True)
class CampaignDefinition:
    """What `campaigns create` was given (param keys as typed: ``1``, ``first_name``, ``header.1``)."""

    name: str
    list_name: str
    template_name: str
    language: str
    params: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)
    header_media_url: str | None = None
    button_payloads: Mapping[str, str] = field(default_factory=dict)
    scheduled_at: datetime | None = None
    sender_name: str | None = None


def bindings_of(campaign: Campaign) -> Bindings:
    """The stored bindings of a campaign."""
    return Bindings(
        params=dict(campaign.params),
        defaults=dict(campaign.defaults),
        header_media_url=campaign.header_media_url,
        button_payloads=dict(campaign.button_payloads),
    )


def _canonical_params(params: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    canonical: dict[str, str] = {}
    for key, value in params.items():
        try:
            label = canonical_key(key)
        except BindingError as exc:
            problems.append(f"--param {exc}")
            continue
        if label in canonical:
            problems.append(f"--param {key}: {label} is bound twice")
        canonical[label] = value
    return canonical


def template_problems(
    template: Template | None, *, name: str, language: str, others: Sequence[str]
) -> list[str]:
    """Why a stored template cannot be sent (empty when it can)."""
    if template is None:
        where = f" (it exists in: {', '.join(others)})" if others else ""
        return [f"template {name!r} in language {language!r} does not exist{where}"]
    if template.gone_at is not None:
        since = f"{template.gone_at:%Y-%m-%d}"
        return [f"template {name!r} ({language}) no longer exists on the platform (gone since {since})"]
    if template.status.upper() != "APPROVED":
        return [f"template {name!r} ({language}) is {template.status}: only APPROVED templates can be sent"]
    return []


def _find_template(engine: Engine, *, name: str, language: str) -> tuple[Template | None, list[str]]:
    found = find_templates(engine, name=name)
    match = next((t for t in found if t.language == language), None)
    return match, [t.language for t in found]


def _list_id(conn: Connection, name: str) -> int | None:
    value = conn.execute(sa.select(LIST.c.id).where(LIST.c.name == name)).scalar()
    return int(value) if value is not None else None


def _name_problems(conn: Connection, name: str) -> list[str]:
    if not name.strip():
        return ["the campaign name is empty"]
    if name.isdigit():
        return [f"campaign name {name!r} is only digits (ids are; pick a name with a letter)"]
    if conn.execute(sa.select(CAMPAIGN.c.id).where(CAMPAIGN.c.name == name)).first():
        return [f"a campaign named {name!r} already exists"]
    return []


def create_campaign(
    engine: Engine, *, settings: Settings, definition: CampaignDefinition, now: datetime | None = None
) -> Campaign:
    """Validate a definition and store it as a draft; `ValidationFailed` lists every problem at once."""
    problems: list[str] = []
    params = _canonical_params(definition.params, problems)
    template, languages = _find_template(engine, name=definition.template_name, language=definition.language)
    problems += template_problems(
        template, name=definition.template_name, language=definition.language, others=languages
    )
    bindings = Bindings(
        params=params,
        defaults=dict(definition.defaults),
        header_media_url=definition.header_media_url or None,
        button_payloads=dict(definition.button_payloads),
    )
    if template is not None:
        problems += binding_problems(record_of(template).shape(), bindings)
    sender_name = definition.sender_name
    try:
        sender_name = settings.sender(definition.sender_name).name
    except ConfigError as exc:
        problems.append(str(exc))
    at = now or utcnow()
    with write_transaction(engine) as conn:
        problems = _name_problems(conn, definition.name) + problems
        list_id = _list_id(conn, definition.list_name)
        if list_id is None:
            problems.append(f"no contact list named {definition.list_name!r} (see `wacamp contacts lists`)")
        if problems:
            raise ValidationFailed(problems, what=f"campaign {definition.name!r}")
        assert template is not None and sender_name is not None
        row = {
            "name": definition.name,
            "list_id": list_id,
            "template_name": template.name,
            "language": template.language,
            "category": template.category,
            "sender_name": sender_name,
            "params": dict(bindings.params),
            "defaults": dict(bindings.defaults),
            "header_media_url": bindings.header_media_url,
            "button_payloads": dict(bindings.button_payloads),
            "state": CampaignState.DRAFT.value,
            "scheduled_at": definition.scheduled_at,
            "timezone": "UTC",
            "recipient_local_time": False,
            "created_at": at,
            "updated_at": at,
        }
        conn.execute(sa.insert(CAMPAIGN), row)
    return find_campaign(engine, definition.name)


def find_campaign(engine: Engine, ref: str | int) -> Campaign:
    """A campaign by name, or by id when `ref` is only digits."""
    text = str(ref).strip()
    condition = CAMPAIGN.c.id == int(text) if text.isdigit() else CAMPAIGN.c.name == text
    with Session(engine) as session:
        campaign = session.exec(select(Campaign).where(condition)).first()
        if campaign is None:
            raise NotFoundError(f"no campaign {text!r} (see `wacamp campaigns list`)")
        session.expunge(campaign)
        return campaign


def list_campaigns(engine: Engine) -> list[Campaign]:
    with Session(engine) as session:
        campaigns = list(session.exec(select(Campaign).order_by(CAMPAIGN.c.id)))
        for campaign in campaigns:
            session.expunge(campaign)
        return campaigns


def list_name(engine: Engine, list_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.select(LIST.c.name).where(LIST.c.id == list_id)).scalar() or f"#{list_id}")


@dataclass(frozen=True)
class LedgerCounts:
    """How many ledger rows a campaign has in each state, and skipped rows by reason."""

    by_state: dict[str, int]
    skipped_by_reason: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_state": self.by_state, "skipped_by_reason": self.skipped_by_reason}


def ledger_counts(engine: Engine | Connection, campaign_id: int) -> LedgerCounts:
    """Counts of a campaign's ledger rows by state and by skip reason."""
    query = (
        sa.select(MESSAGE.c.state, MESSAGE.c.skip_reason, sa.func.count())
        .where(MESSAGE.c.campaign_id == campaign_id)
        .group_by(MESSAGE.c.state, MESSAGE.c.skip_reason)
    )
    by_state: dict[str, int] = {}
    reasons: dict[str, int] = {}
    conn_or_engine = engine.connect() if isinstance(engine, Engine) else None
    conn = conn_or_engine if conn_or_engine is not None else engine
    try:
        for state, reason, count in conn.execute(query):  # type: ignore[union-attr]
            by_state[state] = by_state.get(state, 0) + int(count)
            if state == MessageState.SKIPPED:
                reasons[reason or "unknown"] = reasons.get(reason or "unknown", 0) + int(count)
    finally:
        if conn_or_engine is not None:
            conn_or_engine.close()
    ordered = dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))
    return LedgerCounts(by_state=dict(sorted(by_state.items())), skipped_by_reason=ordered)


def preview_bodies(engine: Engine, campaign_id: int, *, limit: int) -> list[str]:
    """The first `limit` planned request bodies (JSON text as stored), in the order they will be sent."""
    query = (
        sa.select(MESSAGE.c.body)
        .where(MESSAGE.c.campaign_id == campaign_id, MESSAGE.c.state == MessageState.PLANNED.value)
        .order_by(MESSAGE.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [body for (body,) in conn.execute(query) if body]


def cancel_campaign(engine: Engine, campaign: Campaign, *, now: datetime | None = None) -> int:
    """Cancel a campaign: its planned rows become skipped (`cancelled`); returns how many."""
    if campaign.state in (CampaignState.CANCELLED, CampaignState.COMPLETED):
        raise UserError(f"campaign {campaign.name!r} is already {campaign.state}")
    at = now or utcnow()
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(CAMPAIGN)
            .where(CAMPAIGN.c.id == campaign.id)
            .values(state=CampaignState.CANCELLED.value, finished_at=at, updated_at=at)
        )
        skipped = conn.execute(
            sa.update(MESSAGE)
            .where(MESSAGE.c.campaign_id == campaign.id, MESSAGE.c.state == MessageState.PLANNED.value)
            .values(
                state=MessageState.SKIPPED.value, skip_reason=CANCELLED_REASON, dedup_hash=None, updated_at=at
            )
        ).rowcount
    return int(skipped)

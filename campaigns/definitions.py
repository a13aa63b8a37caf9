"""Campaign definitions: create (validated, every problem at once), list, cancel, inspect.

A definition binds a template (name + language, must be APPROVED) to a contact list and says how to
fill each placeholder (`campaigns.content.personalisation`). Commands accept a campaign's name or its id
(`campaigns.control.find_campaign`); names cannot be only digits, so the two never collide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from campaigns.caps import checked_override
from campaigns.content.media import MediaFile, check_media_file
from campaigns.content.paths import MARKETING, SendPathRefused, choose_via
from campaigns.content.personalisation import BindingError, Bindings, binding_problems, canonical_key
from campaigns.control import change_state, find_campaign
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import ConfigError, InputFileError, UserError, ValidationFailed
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, CampaignState, MessageState, Template
from campaigns.core.settings import Settings
from campaigns.segments.parser import parse
from campaigns.segments.saved import find_segment
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
    where: str | None = None  # a segment expression (docs/contacts.md, "Segments")
    segment: str | None = None  # or the name of a saved one; its expression is copied
    header_media_file: Path | None = None  # uploaded per sender when planned (campaigns.content.media)
    via: Literal["cloud", "marketing"] | None = None  # --via: the send path (campaigns.content.paths)
    cap: str | None = None  # --cap: "1/30d" or "none" instead of the configured cap (campaigns.caps)
    cap_policy: str | None = None  # --cap-policy: "wait" or "skip" instead of [limits] cap_policy


def bindings_of(campaign: Campaign) -> Bindings:
    """The stored bindings of a campaign."""
    return Bindings(
        params=dict(campaign.params),
        defaults=dict(campaign.defaults),
        header_media_url=campaign.header_media_url,
        button_payloads=dict(campaign.button_payloads),
        header_media_file=campaign.header_media_file,
    )


def _media_file(
    definition: CampaignDefinition, template: Template | None, settings: Settings, problems: list[str]
) -> MediaFile | None:
    """The checked --header-media-file (type and size), or None with the reason in `problems`."""
    if definition.header_media_file is None or template is None:
        return None
    header_format = record_of(template).shape().header_format
    if header_format not in ("IMAGE", "VIDEO", "DOCUMENT"):
        return None  # binding_problems says the header takes no media
    try:
        path = definition.header_media_file
        return check_media_file(path, header_format=header_format, limits=settings.media)
    except InputFileError as exc:
        problems.append(str(exc))
        return None


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
        header_media_file=str(definition.header_media_file) if definition.header_media_file else None,
    )
    if template is not None:
        problems += binding_problems(record_of(template).shape(), bindings)
    media = _media_file(definition, template, settings, problems)
    sender_name = definition.sender_name
    try:
        sender_name = settings.sender(definition.sender_name).name
    except ConfigError as exc:
        problems.append(str(exc))
    where = _audience(engine, definition, problems)
    via, product_policy = _send_path(definition, template, settings, problems)
    frequency_cap, cap_policy = checked_override(definition.cap, definition.cap_policy, problems)
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
            "header_media_file": str(media.path) if media else None,
            "header_media_sha256": media.sha256 if media else None,
            "header_media_type": media.mime_type if media else None,
            "button_payloads": dict(bindings.button_payloads),
            "state": CampaignState.DRAFT.value,
            "scheduled_at": definition.scheduled_at,
            "timezone": "UTC",
            "recipient_local_time": False,
            "audience_where": where,
            "audience_segment": definition.segment,
            "via": via,
            "product_policy": product_policy,
            "frequency_cap": frequency_cap,
            "cap_policy": cap_policy,
            "created_at": at,
            "updated_at": at,
        }
        conn.execute(sa.insert(CAMPAIGN), row)
    return find_campaign(engine, definition.name)


def _send_path(
    definition: CampaignDefinition, template: Template | None, settings: Settings, problems: list[str]
) -> tuple[str | None, str | None]:
    """The campaign's send path and, on the marketing path, its product_policy; or the problem."""
    try:
        sender = settings.sender(definition.sender_name)
    except ConfigError:
        return None, None  # said already
    if template is None:
        return None, None
    try:
        via = choose_via(
            requested=definition.via, sender=sender, category=template.category, marketing=settings.marketing
        )
    except SendPathRefused as exc:
        problems.append(str(exc))
        return None, None
    return via, settings.marketing.product_policy if via == MARKETING else None


def _audience(engine: Engine, definition: CampaignDefinition, problems: list[str]) -> str | None:
    """The segment expression the campaign keeps (checked), from --where or a saved segment."""
    if definition.where is not None and definition.segment is not None:
        problems.append("give either a --where expression or a --segment, not both")
        return None
    try:
        if definition.segment is not None:
            return find_segment(engine, definition.segment).expression
        if definition.where is not None:
            parse(definition.where)
    except UserError as exc:
        problems.append(str(exc))
    return definition.where


def list_campaigns(engine: Engine) -> list[Campaign]:
    with Session(engine) as session:
        campaigns = list(session.exec(select(Campaign).order_by(CAMPAIGN.c.id)))
        for campaign in campaigns:
            session.expunge(campaign)
        return campaigns


def list_name(engine: Engine, list_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.select(LIST.c.name).where(LIST.c.id == list_id)).scalar() or f"#{list_id}")


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
    """Cancel a campaign: its planned rows become skipped (`cancelled`); returns how many.

    Refused (`IllegalTransition`) for a campaign already cancelled or completed.
    """
    assert campaign.id is not None, "a stored campaign has an id"
    at = now or utcnow()
    with write_transaction(engine) as conn:
        change_state(
            conn,
            campaign.id,
            CampaignState.CANCELLED,
            now=at,
            refusal="campaign {name!r} is already {state}",
            finished_at=at,
        )
        skipped = conn.execute(
            sa.update(MESSAGE)
            .where(MESSAGE.c.campaign_id == campaign.id, MESSAGE.c.state == MessageState.PLANNED.value)
            .values(
                state=MessageState.SKIPPED.value, skip_reason=CANCELLED_REASON, dedup_hash=None, updated_at=at
            )
        ).rowcount
    return int(skipped)

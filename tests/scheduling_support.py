"""Real campaigns (sample templates, planned by the planner) and settings pointed at a sandbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.settings import Settings
from campaigns.core.settings_loading import load_settings
from campaigns.definitions import CampaignDefinition, create_campaign
from campaigns.planning.planner import plan_campaign
from sandbox.samples import sample_templates
from tests.campaign_seed import Person, seed_list, seed_templates


def sandbox_env(base_url: str, **extra: str) -> dict[str, str]:
    """WACAMP_* variables that point wacamp at a sandbox, fast and without tier limit by default."""
    return {
        "WACAMP_API_BASE_URL": base_url,
        "WACAMP_ACCESS_TOKEN": "sandbox-token",
        "WACAMP_PHONE_NUMBER_ID": "100000000000001",
        "WACAMP_RATE_PER_S": "200",
        "WACAMP_MESSAGING_TIER": "TIER_UNLIMITED",
        "WACAMP_DISPATCH__WRITE_BATCH_MS": "5",
        "WACAMP_DISPATCH__CONTROL_POLL_S": "0.05",
        **extra,
    }


def sandbox_settings(base_url: str, **extra: str) -> Settings:
    settings, _ = load_settings(environ=sandbox_env(base_url, **extra))
    return settings


def phones(count: int, *, start: int = 0) -> list[str]:
    return [f"+39347{start + i:07d}" for i in range(count)]


def make_campaign(
    engine: Engine,
    settings: Settings,
    *,
    name: str,
    recipients: Sequence[str],
    scheduled_at: datetime | None = None,
    plan: bool = True,
    **columns: Any,
) -> int:
    """A spring_sale (it) campaign to `recipients`, planned unless `plan` is False; its id."""
    seed_templates(engine, *sample_templates())
    seed_list(engine, name, [Person(phone, {"first_name": "Marco"}) for phone in recipients])
    definition = CampaignDefinition(
        name=name,
        list_name=name,
        template_name="spring_sale",
        language="it",
        params={"1": "{first_name}", "2": "20%"},
        button_payloads={"0": "STOP"},
    )
    campaign = create_campaign(engine, settings=settings, definition=definition)
    assert campaign.id is not None
    with engine.begin() as conn:
        conn.execute(
            sa.update(CAMPAIGN)
            .where(CAMPAIGN.c.id == campaign.id)
            .values(scheduled_at=scheduled_at, **columns)
        )
    if plan:
        plan_campaign(engine, settings=settings, campaign=campaign.id)
    return campaign.id


def states(engine: Engine, campaign_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        query = sa.select(MESSAGE.c.state, sa.func.count()).where(MESSAGE.c.campaign_id == campaign_id)
        return {state: int(n) for state, n in conn.execute(query.group_by(MESSAGE.c.state))}


def campaign_state(engine: Engine, campaign_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.scalar(sa.select(CAMPAIGN.c.state).where(CAMPAIGN.c.id == campaign_id)))

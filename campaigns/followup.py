"""Follow-up campaigns: send again to the recipients whose failure is worth retrying.

`create_retry_campaign` makes ``<name>-retry-<n>``: a new contact list of the parent's recipients that
failed with one of the given error codes, a campaign with the parent's template, bindings, sender
and send window (``parent_id`` set), planned by the ordinary planner. The planner's rules decide who
gets a row: suppressed contacts are skipped, 131049-deferred contacts wait until their deferral
ends, and the ledger's unique (contact, dedup_hash) skips anyone who already has this content
blocking (a failed row frees its hash, so the retry can take it; a second retry of the same parent
finds the first retry's rows and skips them as duplicates).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns import outcome_causes
from campaigns.control import find_campaign
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import UserError
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, MessageState
from campaigns.core.settings import Settings
from campaigns.definitions import CampaignDefinition, create_campaign
from campaigns.planning.planner import PlanOutcome, plan_campaign

#: The codes `campaigns retry` follows up by default: the outcome policy's retryable ones.
DEFAULT_RETRY_CODES = tuple(sorted(outcome_causes.retryable_codes()))


@dataclass(frozen=True)
class RetryOutcome:
    """The follow-up campaign that was created and planned."""

    campaign: str
    campaign_id: int
    parent: str
    codes: list[int]
    recipients: int
    planned: int
    deferred: int
    skipped: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _failed_recipients(parent_id: int, codes: Iterable[int]) -> sa.Select[Any]:
    return (
        sa.select(MESSAGE.c.contact_id)
        .where(
            MESSAGE.c.campaign_id == parent_id,
            MESSAGE.c.state == MessageState.FAILED.value,
            MESSAGE.c.error_code.in_(sorted(set(codes))),
        )
        .distinct()
    )


def _free_name(conn: Connection, base: str) -> str:
    """``<base>-retry-<n>`` with the smallest n that names neither a campaign nor a list."""
    n = 1
    while True:
        name = f"{base}-retry-{n}"
        taken = (
            conn.execute(sa.select(CAMPAIGN.c.id).where(CAMPAIGN.c.name == name)).first()
            or conn.execute(sa.select(LIST.c.id).where(LIST.c.name == name)).first()
        )
        if not taken:
            return name
        n += 1


def _make_list(engine: Engine, parent: Campaign, codes: list[int], at: datetime) -> tuple[str, int, int]:
    """The follow-up's contact list: (name, list id, members)."""
    with write_transaction(engine) as conn:
        recipients = _failed_recipients(int(parent.id or 0), codes).subquery()
        count = int(conn.execute(sa.select(sa.func.count()).select_from(recipients)).scalar_one())
        if count == 0:
            wanted = ", ".join(str(code) for code in codes)
            raise UserError(
                f"campaign {parent.name!r} has no recipient that failed with {wanted}: nothing to retry"
            )
        name = _free_name(conn, parent.name)
        list_id = int(
            conn.execute(sa.insert(LIST).values(name=name, created_at=at).returning(LIST.c.id)).scalar_one()
        )
        members = sa.select(
            sa.literal(list_id), recipients.c.contact_id, sa.literal(at, type_=LIST.c.created_at.type)
        )
        conn.execute(sa.insert(MEMBER).from_select(["list_id", "contact_id", "added_at"], members))
    return name, list_id, count


def _drop_list(engine: Engine, list_id: int) -> None:
    with write_transaction(engine) as conn:
        conn.execute(sa.delete(MEMBER).where(MEMBER.c.list_id == list_id))
        conn.execute(sa.delete(LIST).where(LIST.c.id == list_id))


def create_retry_campaign(
    engine: Engine,
    *,
    settings: Settings,
    parent: str | int,
    codes: Iterable[int] = DEFAULT_RETRY_CODES,
    now: datetime | None = None,
) -> RetryOutcome:
    """Create and plan ``<parent>-retry-<n>`` over the parent's recipients that failed with `codes`."""
    at = now or utcnow()
    source = find_campaign(engine, parent)
    wanted = sorted(set(codes))
    name, list_id, recipients = _make_list(engine, source, wanted, at)
    definition = CampaignDefinition(
        name=name,
        list_name=name,
        template_name=source.template_name,
        language=source.language,
        params=dict(source.params),
        defaults=dict(source.defaults),
        header_media_url=source.header_media_url,
        button_payloads=dict(source.button_payloads),
        sender_name=source.sender_name,
        via=_via(source.via),  # the parent's path, if it had one of its own
    )
    try:
        follow_up = create_campaign(engine, settings=settings, definition=definition, now=at)
    except UserError:
        _drop_list(engine, list_id)
        raise
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(CAMPAIGN)
            .where(CAMPAIGN.c.id == follow_up.id)
            .values(
                parent_id=source.id,
                timezone=source.timezone,
                window_start=source.window_start,
                window_end=source.window_end,
                recipient_local_time=source.recipient_local_time,
                product_policy=source.product_policy,
            )
        )
    outcome: PlanOutcome = plan_campaign(engine, settings=settings, campaign=int(follow_up.id or 0), now=at)
    return RetryOutcome(
        campaign=name,
        campaign_id=int(follow_up.id or 0),
        parent=source.name,
        codes=wanted,
        recipients=recipients,
        planned=outcome.planned,
        deferred=outcome.deferred,
        skipped=dict(outcome.skipped),
    )


def _via(via: str | None) -> Literal["cloud", "marketing"] | None:
    """A parent's send path as `campaigns create --via` takes it (None: the sender's API decides)."""
    if via == "marketing":
        return "marketing"
    return "cloud" if via == "cloud" else None

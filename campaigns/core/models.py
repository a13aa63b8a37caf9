"""The database tables. Alembic (`migrations/`) is the only thing that creates them.

The ledger (`Message`) is the heart: one row per recipient of a campaign, holding the exact request
body that will be sent and its state. Its unique constraint on (contact, dedup_hash) is what makes
"never the same content to the same person twice" a database guarantee, not a check.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from campaigns.core.dbtypes import BigId, UTCDateTime, utcnow


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _created() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


def _json(*, default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(sa.JSON(), nullable=False))


class MessageState(enum.StrEnum):
    """Where one ledger row stands. `planned` rows are the queue; the rest are outcomes."""

    PLANNED = "planned"  # waiting to be sent (maybe with next_attempt_at in the future)
    SKIPPED = "skipped"  # never to be sent; skip_reason says why
    CLAIMED = "claimed"  # leased to a run (lease_owner, lease_expires_at) to send soon: nothing on the wire
    SENDING = "sending"  # durably marked just before its request is written (may have reached the platform)
    ACCEPTED = "accepted"  # the platform answered with a wamid
    HELD = "held"  # accepted but held_for_quality_assessment (template pacing): not failed, never resent
    SENT = "sent"  # status webhooks, in funnel order
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"  # error_code / error_title say why
    UNKNOWN = "unknown"  # the request may have reached the platform, no answer came back


#: States in which the content counts as given to that recipient (it blocks the same content again).
DEDUP_BLOCKING_STATES = frozenset(
    {
        MessageState.PLANNED,
        MessageState.CLAIMED,
        MessageState.SENDING,
        MessageState.ACCEPTED,
        MessageState.HELD,
        MessageState.SENT,
        MessageState.DELIVERED,
        MessageState.READ,
        MessageState.UNKNOWN,
    }
)

#: Funnel order of the states a status webhook can move a row to; a row never moves backwards.
STATUS_RANK = {
    MessageState.SENDING: 0,
    MessageState.UNKNOWN: 0,
    MessageState.ACCEPTED: 1,
    MessageState.HELD: 2,
    MessageState.SENT: 3,
    MessageState.DELIVERED: 4,
    MessageState.READ: 5,
}


class CampaignState(enum.StrEnum):
    DRAFT = "draft"  # created, not planned yet
    PLANNED = "planned"  # ledger written, not started
    RUNNING = "running"
    PAUSED = "paused"  # by a person or by the platform (pause_reason)
    WAITING = "waiting"  # stopped early, resumable: tier budget, window, deadline of a run
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ContactList(SQLModel, table=True):
    __tablename__ = "contact_list"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(sa.String(200), nullable=False, unique=True))
    created_at: datetime = _created()


class Contact(SQLModel, table=True):
    """A person, identified by an E.164 phone number. Suppression (opt-out) always wins over consent."""

    __tablename__ = "contact"
    __table_args__ = (
        # The few contacts a claim must leave out (opted out, deferred): a claim reads this small
        # partial index instead of every contact.
        sa.Index(
            "ix_contact_blocked",
            "id",
            postgresql_where=sa.text("suppressed_at IS NOT NULL OR marketing_deferred_until IS NOT NULL"),
            sqlite_where=sa.text("suppressed_at IS NOT NULL OR marketing_deferred_until IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    phone: str = Field(sa_column=Column(sa.String(20), nullable=False, unique=True))
    attributes: dict[str, Any] = _json(default=dict)
    consent: bool = Field(default=False, sa_column=Column(sa.Boolean(), nullable=False))
    consent_at: datetime | None = _ts()
    suppressed_at: datetime | None = _ts()
    suppression_reason: str | None = Field(default=None, sa_column=Column(sa.String(200)))
    service_window_until: datetime | None = _ts()
    marketing_deferred_until: datetime | None = _ts()
    created_at: datetime = _created()
    updated_at: datetime = _created()


class ListMember(SQLModel, table=True):
    __tablename__ = "list_member"

    list_id: int = Field(
        sa_column=Column(sa.Integer(), sa.ForeignKey("contact_list.id", ondelete="CASCADE"), primary_key=True)
    )
    contact_id: int = Field(
        sa_column=Column(BigId, sa.ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True, index=True)
    )
    added_at: datetime = _created()


class Template(SQLModel, table=True):
    """A message template as the platform knows it (synced or imported)."""

    __tablename__ = "template"
    __table_args__ = (sa.UniqueConstraint("name", "language", name="uq_template_name_language"),)

    id: int | None = Field(default=None, primary_key=True)
    platform_id: str | None = Field(default=None, sa_column=Column(sa.String(64)))
    name: str = Field(sa_column=Column(sa.String(512), nullable=False))
    language: str = Field(sa_column=Column(sa.String(16), nullable=False))
    status: str = Field(sa_column=Column(sa.String(32), nullable=False))
    category: str = Field(sa_column=Column(sa.String(32), nullable=False))
    parameter_format: str = Field(
        default="POSITIONAL", sa_column=Column(sa.String(16), nullable=False, server_default="POSITIONAL")
    )
    components: list[dict[str, Any]] = _json(default=list)
    namespace: str | None = Field(default=None, sa_column=Column(sa.String(128)))
    status_reason: str | None = Field(default=None, sa_column=Column(sa.String(200)))
    gone_at: datetime | None = _ts()
    synced_at: datetime = _created()
    #: Category drift (template_category_update): the category before the last change, and when.
    previous_category: str | None = Field(default=None, sa_column=Column(sa.String(32)))
    category_changed_at: datetime | None = _ts()
    #: A change announced ahead (correct_category), not made yet.
    upcoming_category: str | None = Field(default=None, sa_column=Column(sa.String(32)))
    #: When `templates create` submitted it (None for synced or imported templates).
    submitted_at: datetime | None = _ts()


class Sender(SQLModel, table=True):
    """What the platform last told us about one business phone number, and who holds it (scale-out)."""

    __tablename__ = "sender"

    name: str = Field(sa_column=Column(sa.String(100), primary_key=True))
    phone_number_id: str = Field(sa_column=Column(sa.String(64), nullable=False, index=True))
    portfolio: str = Field(default="default", sa_column=Column(sa.String(100), nullable=False))
    messaging_tier: str | None = Field(default=None, sa_column=Column(sa.String(32)))
    throughput_level: str | None = Field(default=None, sa_column=Column(sa.String(32)))
    quality_rating: str | None = Field(default=None, sa_column=Column(sa.String(16)))
    lease_owner: str | None = Field(default=None, sa_column=Column(sa.String(128)))
    lease_expires_at: datetime | None = _ts()
    updated_at: datetime = _created()


class Campaign(SQLModel, table=True):
    """A template bound to a contact list, with how to fill each placeholder and when to send."""

    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(sa.String(200), nullable=False, unique=True))
    list_id: int = Field(sa_column=Column(sa.Integer(), sa.ForeignKey("contact_list.id"), nullable=False))
    template_name: str = Field(sa_column=Column(sa.String(512), nullable=False))
    language: str = Field(sa_column=Column(sa.String(16), nullable=False))
    category: str = Field(default="MARKETING", sa_column=Column(sa.String(32), nullable=False))
    sender_name: str = Field(default="default", sa_column=Column(sa.String(100), nullable=False))
    params: dict[str, str] = _json(default=dict)
    defaults: dict[str, str] = _json(default=dict)
    header_media_url: str | None = Field(default=None, sa_column=Column(sa.String(2000)))
    #: --header-media-file: the file (absolute path), its sha256 and MIME type; uploaded per sender.
    header_media_file: str | None = Field(default=None, sa_column=Column(sa.String(2000)))
    header_media_sha256: str | None = Field(default=None, sa_column=Column(sa.String(64)))
    header_media_type: str | None = Field(default=None, sa_column=Column(sa.String(100)))
    button_payloads: dict[str, str] = _json(default=dict)
    #: The send path: "cloud" or "marketing" (Marketing Messages API); None = the sender's own API (onprem).
    via: str | None = Field(default=None, sa_column=Column(sa.String(16)))
    #: product_policy of the Marketing Messages API path: CLOUD_API_FALLBACK or STRICT (None on other paths).
    product_policy: str | None = Field(default=None, sa_column=Column(sa.String(24)))
    state: str = Field(
        default=CampaignState.DRAFT, sa_column=Column(sa.String(16), nullable=False, index=True)
    )
    pause_reason: str | None = Field(default=None, sa_column=Column(sa.String(500)))
    scheduled_at: datetime | None = _ts(index=True)
    timezone: str = Field(
        default="UTC", sa_column=Column(sa.String(64), nullable=False, server_default="UTC")
    )
    window_start: str | None = Field(default=None, sa_column=Column(sa.String(5)))
    window_end: str | None = Field(default=None, sa_column=Column(sa.String(5)))
    recipient_local_time: bool = Field(default=False, sa_column=Column(sa.Boolean(), nullable=False))
    deadline: datetime | None = _ts()
    resume_after: datetime | None = _ts()
    parent_id: int | None = Field(default=None, sa_column=Column(sa.Integer(), sa.ForeignKey("campaign.id")))
    #: A staged rollout (issue #16): stages, wait, seed, guardrail overrides (`campaigns.rollout`).
    rollout: dict[str, Any] | None = Field(default=None, sa_column=Column(sa.JSON(), nullable=True))
    #: The last rollout stage released for sending (0 = the first); rows of later stages are not claimed.
    rollout_stage: int | None = Field(default=None, sa_column=Column(sa.Integer()))
    #: An A/B test (issue #16): variants, split, test share, metric, alpha, default, the decision.
    ab: dict[str, Any] | None = Field(default=None, sa_column=Column(sa.JSON(), nullable=True))
    #: The audience: only list members matching this segment expression (issue #15); None = all.
    audience_where: str | None = Field(default=None, sa_column=Column(sa.Text()))
    #: The saved segment the expression was copied from at creation, for display.
    audience_segment: str | None = Field(default=None, sa_column=Column(sa.String(200)))
    #: This campaign's frequency cap ("1/30d", "none"; `campaigns.caps`); None = the configured one.
    frequency_cap: str | None = Field(default=None, sa_column=Column(sa.String(16)))
    #: "wait" or "skip" for recipients at the cap; None = `[limits] cap_policy`.
    cap_policy: str | None = Field(default=None, sa_column=Column(sa.String(8)))
    created_at: datetime = _created()
    updated_at: datetime = _created()
    planned_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()


class Segment(SQLModel, table=True):
    """A saved segment: a named `--where` expression (`wacamp segments create`)."""

    __tablename__ = "segment"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(sa.String(200), nullable=False, unique=True))
    expression: str = Field(sa_column=Column(sa.Text(), nullable=False))
    created_at: datetime = _created()
    updated_at: datetime = _created()


class TestSend(SQLModel, table=True):
    """A campaign's body sent now to a test number (`campaigns test`): never part of the ledger, dedup,
    caps or the tier budget."""

    __tablename__ = "test_send"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(
        sa_column=Column(sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False, index=True)
    )
    phone: str = Field(sa_column=Column(sa.String(20), nullable=False))
    #: The recipient whose personalisation the body carries.
    as_phone: str = Field(sa_column=Column(sa.String(20), nullable=False))
    body: str = Field(sa_column=Column(sa.Text(), nullable=False))
    wamid: str | None = Field(default=None, sa_column=Column(sa.String(128)))
    error: str | None = Field(default=None, sa_column=Column(sa.String(500)))
    sent_at: datetime = _created()


class Message(SQLModel, table=True):
    """The ledger: one row per recipient of a campaign, with the frozen request body and its state."""

    __tablename__ = "message"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "contact_id", name="uq_message_campaign_contact"),
        sa.UniqueConstraint("contact_id", "dedup_hash", name="uq_message_contact_dedup"),
        sa.Index("ix_message_claim", "campaign_id", "state", "next_attempt_at"),
        # Claims take a campaign's planned rows in id order: this partial index gives them in that
        # order without walking the rows already sent (tens of millions of them in a big ledger).
        sa.Index(
            "ix_message_planned",
            "campaign_id",
            "id",
            postgresql_where=sa.text("state = 'planned'"),
            sqlite_where=sa.text("state = 'planned'"),
        ),
        sa.Index("ix_message_lease", "state", "lease_expires_at"),
        sa.Index("ix_message_accepted_at", "accepted_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    campaign_id: int = Field(sa_column=Column(sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False))
    contact_id: int = Field(sa_column=Column(BigId, sa.ForeignKey("contact.id"), nullable=False))
    phone: str = Field(sa_column=Column(sa.String(20), nullable=False))
    #: sha256 of template, language and rendered components: everything but the recipient.
    content_hash: str = Field(sa_column=Column(sa.String(64), nullable=False))
    #: content_hash while the row blocks the same content to this contact; NULL once it no longer does.
    dedup_hash: str | None = Field(default=None, sa_column=Column(sa.String(64)))
    state: str = Field(sa_column=Column(sa.String(16), nullable=False))
    skip_reason: str | None = Field(default=None, sa_column=Column(sa.String(100)))
    body: str | None = Field(default=None, sa_column=Column(sa.Text()))
    attempts: int = Field(default=0, sa_column=Column(sa.Integer(), nullable=False, server_default="0"))
    next_attempt_at: datetime | None = _ts()
    lease_owner: str | None = Field(default=None, sa_column=Column(sa.String(128)))
    lease_expires_at: datetime | None = _ts()
    #: When the run holding the row claimed it (its tier count carries this time: given back if unsent).
    claimed_at: datetime | None = _ts()
    #: This recipient's rollout stage (drawn at plan time, `campaigns.rollout.stages`); None = no rollout.
    stage: int | None = Field(default=None, sa_column=Column(sa.SmallInteger()))
    #: The A/B variant this recipient got (`campaigns.rollout.variants`); None = no A/B test.
    variant: str | None = Field(default=None, sa_column=Column(sa.String(16)))
    wamid: str | None = Field(default=None, sa_column=Column(sa.String(128), index=True))
    message_status: str | None = Field(default=None, sa_column=Column(sa.String(40)))
    error_code: int | None = Field(default=None, sa_column=Column(sa.Integer()))
    error_title: str | None = Field(default=None, sa_column=Column(sa.String(500)))
    pricing_category: str | None = Field(default=None, sa_column=Column(sa.String(40)))
    #: pricing.type of the status webhook: regular, free_customer_service or free_entry_point.
    pricing_type: str | None = Field(default=None, sa_column=Column(sa.String(40)))
    billable: bool | None = Field(default=None, sa_column=Column(sa.Boolean()))
    #: The path the row is sent by (planned) and took (accepted): "cloud", "marketing" or "onprem".
    via: str | None = Field(default=None, sa_column=Column(sa.String(16)))
    planned_at: datetime = _created()
    sending_at: datetime | None = _ts()
    accepted_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    delivered_at: datetime | None = _ts()
    read_at: datetime | None = _ts()
    failed_at: datetime | None = _ts()
    updated_at: datetime = _created()


class MediaUpload(SQLModel, table=True):
    """A file uploaded to one phone number (`POST /{phone_number_id}/media`): its media id and age."""

    __tablename__ = "media_upload"
    __table_args__ = (sa.Index("ix_media_upload_lookup", "phone_number_id", "sha256", "uploaded_at"),)

    id: int | None = Field(default=None, primary_key=True)
    phone_number_id: str = Field(sa_column=Column(sa.String(64), nullable=False))
    sha256: str = Field(sa_column=Column(sa.String(64), nullable=False))
    mime_type: str = Field(sa_column=Column(sa.String(100), nullable=False))
    size_bytes: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    file_name: str = Field(sa_column=Column(sa.String(500), nullable=False))
    media_id: str = Field(sa_column=Column(sa.String(128), nullable=False))
    uploaded_at: datetime = _created()


class WebhookInbox(SQLModel, table=True):
    """Every signed webhook POST, stored before it is answered; processed in batches behind it."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (sa.Index("ix_webhook_inbox_pending", "processed_at", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    received_at: datetime = _created()
    body: str = Field(sa_column=Column(sa.Text(), nullable=False))
    processed_at: datetime | None = _ts()
    error: str | None = Field(default=None, sa_column=Column(sa.String(500)))


class InboundMessage(SQLModel, table=True):
    """A user's message or button tap, attributed to the campaign message it answers when it can be."""

    __tablename__ = "inbound_message"

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    wamid: str = Field(sa_column=Column(sa.String(128), nullable=False, unique=True))
    phone: str = Field(sa_column=Column(sa.String(20), nullable=False, index=True))
    type: str = Field(sa_column=Column(sa.String(32), nullable=False))
    text: str | None = Field(default=None, sa_column=Column(sa.Text()))
    payload: str | None = Field(default=None, sa_column=Column(sa.String(1000)))
    context_wamid: str | None = Field(default=None, sa_column=Column(sa.String(128)))
    message_id: int | None = Field(default=None, sa_column=Column(BigId, sa.ForeignKey("message.id")))
    campaign_id: int | None = Field(
        default=None, sa_column=Column(sa.Integer(), sa.ForeignKey("campaign.id"), index=True)
    )
    is_optout: bool = Field(default=False, sa_column=Column(sa.Boolean(), nullable=False))
    sent_at: datetime | None = _ts()
    received_at: datetime = _created()


class TierUsage(SQLModel, table=True):
    """Unique recipients of business-initiated templates per portfolio, for the moving 24 h budget."""

    __tablename__ = "tier_usage"
    __table_args__ = (sa.Index("ix_tier_usage_window", "portfolio", "counted_at"),)

    portfolio: str = Field(sa_column=Column(sa.String(100), primary_key=True))
    phone: str = Field(sa_column=Column(sa.String(20), primary_key=True))
    counted_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ThrottleEvent(SQLModel, table=True):
    """The platform told a sender to slow down (130429, 80007, 4, HTTP 429)."""

    __tablename__ = "throttle_event"

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    sender_name: str = Field(sa_column=Column(sa.String(100), nullable=False))
    campaign_id: int | None = Field(
        default=None, sa_column=Column(sa.Integer(), sa.ForeignKey("campaign.id"), index=True)
    )
    code: int | None = Field(default=None, sa_column=Column(sa.Integer()))
    retry_after_s: float | None = Field(default=None, sa_column=Column(sa.Float()))
    at: datetime = _created()


class CampaignRun(SQLModel, table=True):
    """One `campaigns run` / `run-due` / worker pass over a campaign, for reports and operations."""

    __tablename__ = "campaign_run"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(
        sa_column=Column(sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False, index=True)
    )
    worker: str = Field(sa_column=Column(sa.String(128), nullable=False))
    started_at: datetime = _created()
    finished_at: datetime | None = _ts()
    #: The run's heartbeat on the database's clock: an open run whose lease expired is dead (issue #13).
    lease_expires_at: datetime | None = _ts()
    outcome: str | None = Field(default=None, sa_column=Column(sa.String(200)))
    accepted: int = Field(default=0, sa_column=Column(sa.Integer(), nullable=False, server_default="0"))
    failed: int = Field(default=0, sa_column=Column(sa.Integer(), nullable=False, server_default="0"))
    unknown: int = Field(default=0, sa_column=Column(sa.Integer(), nullable=False, server_default="0"))
    throttled: int = Field(default=0, sa_column=Column(sa.Integer(), nullable=False, server_default="0"))
    busiest_second: int = Field(default=0, sa_column=Column(sa.Integer(), nullable=False, server_default="0"))


# Each table once, for SQLAlchemy Core statements (bulk writes, claims, reports).
def _table(model: type[SQLModel]) -> sa.Table:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return table


CONTACT_LIST_TABLE = _table(ContactList)
CONTACT_TABLE = _table(Contact)
LIST_MEMBER_TABLE = _table(ListMember)
TEMPLATE_TABLE = _table(Template)
SENDER_TABLE = _table(Sender)
CAMPAIGN_TABLE = _table(Campaign)
SEGMENT_TABLE = _table(Segment)
TEST_SEND_TABLE = _table(TestSend)
MESSAGE_TABLE = _table(Message)
WEBHOOK_INBOX_TABLE = _table(WebhookInbox)
MEDIA_UPLOAD_TABLE = _table(MediaUpload)
INBOUND_MESSAGE_TABLE = _table(InboundMessage)
TIER_USAGE_TABLE = _table(TierUsage)
THROTTLE_EVENT_TABLE = _table(ThrottleEvent)
CAMPAIGN_RUN_TABLE = _table(CampaignRun)

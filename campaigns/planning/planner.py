"""Planning: turning a campaign's contact list into its ledger, one row per recipient.

Each row holds the frozen request body (with ``biz_opaque_callback_data = "wacamp:<row id>"``, ids
allocated per batch before the insert), the content hash (template, language and rendered components)
and a state: ``planned`` or ``skipped`` with a reason (`SkipReason`).

"Never the same content twice" is the database's job: planned rows carry ``dedup_hash = content_hash``
and the unique constraint (contact_id, dedup_hash) refuses a second one. Rows are inserted with
``ON CONFLICT DO NOTHING`` (`campaigns.core.bulk`: ``COPY`` then ``INSERT … SELECT … RETURNING id`` on
PostgreSQL; on SQLite the same transaction reads back which of its own ids were written); the rows
that were refused are written as ``skipped: duplicate_content`` instead. There is no check-then-insert
window for a race: the constraint decides, the ids returned or read back only learn the outcome.

Planning streams the list in keyset chunks (flat memory at ten million recipients: one chunk is
written while the next is rendered, `_ChunkWriter`), never holds a transaction across chunks, and
only looks at members without a row in this campaign yet: planning twice changes nothing, and
contacts added to the list later are planned by planning again.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.content.media import ensure_media_id
from campaigns.content.paths import SendPath
from campaigns.content.payloads import BodyFormatter, ParameterTooLong, PayloadError
from campaigns.content.personalisation import MissingColumn, Personaliser, binding_problems
from campaigns.control import change_state, find_campaign
from campaigns.core.bulk import insert_ignoring_conflicts
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import UserError, ValidationFailed
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, CampaignState, MessageState
from campaigns.core.settings import Settings
from campaigns.definitions import bindings_of, template_problems
from campaigns.rollout.stages import stage_assigner
from campaigns.rollout.variants import row_builder
from campaigns.segments.audience import segment_condition
from campaigns.templates.catalog import find_templates, record_of

DEFAULT_CHUNK = 5000


class SkipReason(enum.StrEnum):
    """Why a ledger row will never be sent (``missing_param`` is followed by ``:<column>``)."""

    DUPLICATE_CONTENT = "duplicate_content"
    SUPPRESSED = "suppressed"
    NO_CONSENT = "no_consent"
    MISSING_PARAM = "missing_param"
    PARAM_TOO_LONG = "param_too_long"
    INVALID_PARAM = "invalid_param"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class PlanOutcome:
    """What one planning pass added to the ledger."""

    campaign_id: int
    planned: int
    skipped: dict[str, int] = field(default_factory=dict)
    deferred: int = 0

    @property
    def added(self) -> int:
        return self.planned + sum(self.skipped.values())


class Member(Protocol):
    """A list member as the planner reads it (a row of `_members_query`, by attribute)."""

    id: int
    phone: str
    attributes: dict[str, Any] | None
    consent: bool
    suppressed_at: datetime | None
    marketing_deferred_until: datetime | None


@dataclass
class _Chunk:
    """Rows of one batch before ids are known: planned ones carry their body up to the id."""

    planned: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


class _RowBuilder:
    """Classifies one contact into a planned or skipped row (no ids, no I/O)."""

    def __init__(
        self,
        *,
        campaign: Campaign,
        personaliser: Personaliser,
        path: SendPath,
        namespace: str | None,
        variant: str | None = None,
    ) -> None:
        self.via = path.via
        self.variant = variant  # the A/B variant whose rows this builder makes (issue #16)
        self.campaign_id = campaign.id
        self.stage_of = stage_assigner(campaign)  # the rollout stage (issue #16), None without one
        self.personaliser = personaliser
        self.formatter = BodyFormatter(
            api=path.body_api,
            marketing=path.marketing,
            name=personaliser.template_name,
            language=personaliser.language,
            namespace=namespace,
            limits=personaliser.limits,
        )

    def skip_reason_and_render(self, contact: Member) -> tuple[str | None, Any]:
        if contact.suppressed_at is not None:
            return SkipReason.SUPPRESSED.value, None
        if not contact.consent:
            return SkipReason.NO_CONSENT.value, None
        try:
            return None, self.personaliser.render(phone=contact.phone, attributes=contact.attributes or {})
        except MissingColumn as exc:
            return f"{SkipReason.MISSING_PARAM.value}:{exc.column}", None
        except ParameterTooLong:
            return SkipReason.PARAM_TOO_LONG.value, None
        except PayloadError:
            return SkipReason.INVALID_PARAM.value, None

    def add(self, chunk: _Chunk, contact: Member, *, now: datetime) -> None:
        reason, rendered = self.skip_reason_and_render(contact)
        row = {  # campaign_id, planned_at and updated_at are the same for all: `_write_chunk` adds them
            "contact_id": contact.id,
            "phone": contact.phone,
            "stage": self.stage_of(contact.id),
            "variant": self.variant,
            "content_hash": rendered.content_hash if rendered else "",
            "dedup_hash": None,
            "state": MessageState.SKIPPED.value,
            "skip_reason": reason,
            "body": None,
            "via": self.via,
            "next_attempt_at": None,
        }
        if reason is not None:
            chunk.skipped.append(row)
            return
        deferred = contact.marketing_deferred_until
        row.update(
            state=MessageState.PLANNED.value,
            skip_reason=None,
            dedup_hash=rendered.content_hash,
            next_attempt_at=deferred if deferred is not None and deferred > now else None,
            _head=self.formatter.head(to=contact.phone, components_json=rendered.components_json),
        )
        chunk.planned.append(row)

    def freeze(self, row: dict[str, Any], message_id: int) -> dict[str, Any]:
        """The planned row with its id and frozen body (only the id is added: we hold the write lock)."""
        head = row.pop("_head")
        row.update(id=message_id, body=self.formatter.finish(head, message_id=message_id))
        return row


def allocate_message_ids(conn: Connection, count: int) -> list[int]:
    """`count` ledger row ids, allocated before the insert (inside the write transaction)."""
    if count == 0:
        return []
    if conn.dialect.name == "sqlite":  # BEGIN IMMEDIATE holds the write lock: MAX(id) cannot move
        start = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(MESSAGE.c.id), 0))).scalar_one()) + 1
        return list(range(start, start + count))
    query = sa.text("SELECT nextval(pg_get_serial_sequence('message', 'id')) FROM generate_series(1, :n)")
    return [int(value) for (value,) in conn.execute(query, {"n": count})]


def _present_ids(conn: Connection, ids: list[int]) -> set[int]:
    """Which of `ids` (allocated to this transaction alone) are now in the ledger.

    SQLite's ``executemany`` cannot return them, so the same transaction reads them back: the ids are
    ours, so a row with one of them exists exactly when our insert wrote it, and the unique
    constraints (not this read) decided which rows conflicted. PostgreSQL's bulk insert returns them.
    """
    wanted = set(ids)
    query = sa.select(MESSAGE.c.id).where(MESSAGE.c.id.between(min(ids), max(ids)))
    return {int(value) for value in conn.execute(query).scalars() if value in wanted}


def _insert_planned(conn: Connection, rows: list[dict[str, Any]], constants: dict[str, Any]) -> set[int]:
    """Insert the planned rows (ON CONFLICT DO NOTHING); the ids of those the constraints let in."""
    if not rows:
        return set()
    written = insert_ignoring_conflicts(conn, MESSAGE, rows, constants=constants, returning=MESSAGE.c.id)
    return set(written) if written is not None else _present_ids(conn, [row["id"] for row in rows])


_Written = tuple[list[dict[str, Any]], list[str]]


def _write_chunk(conn: Connection, chunk: _Chunk, builder: _RowBuilder, *, at: datetime) -> _Written:
    """Insert one chunk; returns the rows planned and the skip reasons written."""
    ids = allocate_message_ids(conn, len(chunk.planned) + len(chunk.skipped))
    planned = [builder.freeze(row, ids[i]) for i, row in enumerate(chunk.planned)]
    skipped = [{**row, "id": ids[len(planned) + i]} for i, row in enumerate(chunk.skipped)]
    constants = {"campaign_id": builder.campaign_id, "planned_at": at, "updated_at": at}
    inserted = _insert_planned(conn, planned, constants)
    for row in planned:
        if row["id"] not in inserted:  # the (contact_id, dedup_hash) constraint said: already given
            row.update(
                state=MessageState.SKIPPED.value,
                skip_reason=SkipReason.DUPLICATE_CONTENT.value,
                dedup_hash=None,
                body=None,
                next_attempt_at=None,
            )
            skipped.append(row)
    insert_ignoring_conflicts(conn, MESSAGE, skipped, constants=constants)
    return [row for row in planned if row["id"] in inserted], [row["skip_reason"] for row in skipped]


class _ChunkWriter:
    """Writes chunks, each in its own transaction, one at a time, and counts what they wrote.

    On a file database the writes run in a thread while the caller reads and renders the next chunk:
    the database's insert runs without the GIL, so planning uses both cores. At most one chunk waits
    (flat memory); its error is raised by the next `submit` or on leaving the ``with`` block. A
    ``:memory:`` SQLite database is one per connection, so it is written in the caller's thread.
    """

    def __init__(
        self, engine: Engine, builder: _RowBuilder, *, at: datetime, progress: Callable[[int], None] | None
    ) -> None:
        self.engine, self.builder, self.at, self.progress = engine, builder, at, progress
        self.planned, self.deferred, self.skipped = 0, 0, Counter[str]()
        database = engine.url.database or ""
        in_memory = engine.dialect.name == "sqlite" and (database in ("", ":memory:") or "memory" in database)
        self._pool = None if in_memory else ThreadPoolExecutor(1, thread_name_prefix="wacamp-plan-writer")
        self._pending: tuple[Future[_Written], int] | None = None

    def submit(self, chunk: _Chunk, *, contacts: int) -> None:
        """Write `chunk` (of `contacts` members) after the one before it is written."""
        self.wait()
        if self._pool is None:
            self._count(self._write(chunk), contacts)
            return
        self._pending = (self._pool.submit(self._write, chunk), contacts)

    def wait(self) -> None:
        """Wait for the chunk being written; its error, if it failed."""
        if self._pending is not None:
            future, contacts = self._pending
            self._pending = None
            self._count(future.result(), contacts)

    def _write(self, chunk: _Chunk) -> _Written:
        with write_transaction(self.engine) as conn:
            return _write_chunk(conn, chunk, self.builder, at=self.at)

    def _count(self, written: _Written, contacts: int) -> None:
        rows, reasons = written
        self.planned += len(rows)
        self.deferred += sum(1 for row in rows if row["next_attempt_at"] is not None)
        self.skipped.update(reasons)
        if self.progress is not None:
            self.progress(contacts)

    def __enter__(self) -> _ChunkWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self.wait()
            elif self._pending is not None:  # the caller failed: let the chunk in flight finish
                self._pending[0].exception()
        finally:
            if self._pool is not None:
                self._pool.shutdown()


def _members_query(
    campaign: Campaign,
    *,
    after_id: int,
    limit: int,
    only_contacts: sa.Select[Any] | None,
    segment: sa.ColumnElement[bool] | None = None,
) -> Any:
    """The next `limit` list members after `after_id`, in contact id order (keyset, O(limit))."""
    query = (
        sa.select(
            CONTACT.c.id,
            CONTACT.c.phone,
            CONTACT.c.attributes,
            CONTACT.c.consent,
            CONTACT.c.suppressed_at,
            CONTACT.c.marketing_deferred_until,
        )
        .select_from(MEMBER.join(CONTACT, CONTACT.c.id == MEMBER.c.contact_id))
        .where(MEMBER.c.list_id == campaign.list_id, MEMBER.c.contact_id > after_id)
        # The same bound on the contact side: PostgreSQL does not carry it across the join, and its
        # merge join then walks the contact index from the first id for every chunk (O(n) a chunk;
        # with a segment it evaluates the expression on every contact walked).
        .where(CONTACT.c.id > after_id)
        .order_by(MEMBER.c.contact_id)
        .limit(limit)
    )
    if only_contacts is not None:
        query = query.where(MEMBER.c.contact_id.in_(only_contacts.scalar_subquery()))
    if segment is not None:  # the campaign's audience (--where / --segment), a condition on CONTACT
        query = query.where(segment)
    return query


def _next_members(
    conn: Connection,
    campaign: Campaign,
    *,
    after_id: int,
    limit: int,
    only_contacts: sa.Select[Any] | None,
    segment: sa.ColumnElement[bool] | None = None,
) -> tuple[list[Any], int | None]:
    """The next batch of members without a ledger row in this campaign, and where the batch ended.

    The ledger rows of the batch's id range are read with one range query on the (campaign_id,
    contact_id) index: an anti-join would make the database look at the whole ledger for every batch.
    """
    # Rows, not `row._mapping`: a mapping object per member cost 9 % of planning (issue #17).
    members: list[Any] = list(
        conn.execute(
            _members_query(
                campaign, after_id=after_id, limit=limit, only_contacts=only_contacts, segment=segment
            )
        )
    )
    if not members:
        return [], None
    low, high = int(members[0].id), int(members[-1].id)
    planned = set(
        conn.execute(
            sa.select(MESSAGE.c.contact_id).where(
                MESSAGE.c.campaign_id == campaign.id, MESSAGE.c.contact_id.between(low, high)
            )
        ).scalars()
    )
    return [m for m in members if m.id not in planned], high


def _personaliser(engine: Engine, campaign: Campaign, settings: Settings) -> tuple[Personaliser, str | None]:
    found = find_templates(engine, name=campaign.template_name)
    template = next((t for t in found if t.language == campaign.language), None)
    problems = template_problems(
        template, name=campaign.template_name, language=campaign.language, others=[t.language for t in found]
    )
    if template is None or problems:
        raise ValidationFailed(problems, what=f"planning campaign {campaign.name!r}")
    shape = record_of(template).shape()
    bindings = bindings_of(campaign)
    problems = binding_problems(shape, bindings)
    if not problems and campaign.header_media_file:
        media_id = ensure_media_id(engine, settings=settings, campaign=campaign)
        sha256 = campaign.header_media_sha256
        bindings = replace(bindings, header_media_id=media_id, header_media_sha256=sha256)
    if problems:
        raise ValidationFailed(problems, what=f"planning campaign {campaign.name!r}")
    personaliser = Personaliser(
        template_name=template.name,
        language=template.language,
        shape=shape,
        bindings=bindings,
        limits=settings.limits.text,
    )
    return personaliser, settings.whatsapp.namespace or template.namespace


def plan_campaign(
    engine: Engine,
    *,
    settings: Settings,
    campaign: str | int | Campaign,
    now: datetime | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    only_contacts: sa.Select[Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PlanOutcome:
    """Write the ledger rows of every list member not yet in this campaign's ledger.

    Safe to call again (it adds only new members) and from several processes (the unique
    constraints decide). `only_contacts` (a select of contact ids) narrows the recipients, e.g. for a
    retry campaign; the campaign's segment (`audience_where`) narrows them to the members it keeps.
    `progress` is called with the number of rows written after each batch. A draft campaign becomes
    `planned`; a cancelled or completed one is refused.
    """
    target = campaign if isinstance(campaign, Campaign) else find_campaign(engine, campaign)
    if target.state in (CampaignState.CANCELLED, CampaignState.COMPLETED):
        raise UserError(f"campaign {target.name!r} is {target.state}: it cannot be planned")

    def make(variant_campaign: Campaign, variant: str | None) -> _RowBuilder:
        personaliser, namespace = _personaliser(engine, variant_campaign, settings)
        path = SendPath.of(
            via=target.via,
            product_policy=target.product_policy,
            sender=settings.sender(target.sender_name),
            settings=settings.marketing,
        )
        return _RowBuilder(
            campaign=target, personaliser=personaliser, path=path, namespace=namespace, variant=variant
        )

    # One builder, or one per A/B variant behind the same add/freeze/campaign_id (issue #16).
    builder = cast(_RowBuilder, row_builder(target, make))
    at = now or utcnow()
    segment = segment_condition(engine, target.audience_where, now=at)
    with _ChunkWriter(engine, builder, at=at, progress=progress) as writer:
        _plan_chunks(
            engine,
            target,
            builder,
            writer,
            chunk_size=chunk_size,
            only_contacts=only_contacts,
            segment=segment,
            at=at,
        )
    _mark_planned(engine, target, at)
    return PlanOutcome(
        campaign_id=int(target.id or 0),
        planned=writer.planned,
        skipped=dict(writer.skipped),
        deferred=writer.deferred,
    )


def _plan_chunks(
    engine: Engine,
    target: Campaign,
    builder: _RowBuilder,
    writer: _ChunkWriter,
    *,
    chunk_size: int,
    only_contacts: sa.Select[Any] | None,
    segment: sa.ColumnElement[bool] | None,
    at: datetime,
) -> None:
    """Read the members chunk by chunk, build their rows and hand each chunk to the writer."""
    after_id = 0
    while True:
        with engine.connect() as conn:
            contacts, last_id = _next_members(
                conn,
                target,
                after_id=after_id,
                limit=chunk_size,
                only_contacts=only_contacts,
                segment=segment,
            )
        if last_id is None:
            break
        after_id = last_id
        if not contacts:
            continue
        chunk = _Chunk()
        for contact in contacts:
            builder.add(chunk, contact, now=at)
        writer.submit(chunk, contacts=len(contacts))


def _mark_planned(engine: Engine, campaign: Campaign, at: datetime) -> None:
    """Stamp planned_at; a draft becomes planned (any other state stays as it is)."""
    assert campaign.id is not None, "a stored campaign has an id"
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(CAMPAIGN).where(CAMPAIGN.c.id == campaign.id).values(planned_at=at, updated_at=at)
        )
        change_state(conn, campaign.id, CampaignState.PLANNED, now=at, only_from={CampaignState.DRAFT})


def is_planned(campaign: Campaign) -> bool:
    """Whether the campaign's ledger was written at least once."""
    return campaign.planned_at is not None

"""Contacts: importing people's CSV files into lists, and opt-outs (suppression), which always win.

An import is one database transaction: it all lands, or (on an unreadable file, a crash, Ctrl-C,
or ``--dry-run``) nothing does. Inside it the file is streamed in batches of `batch_rows` records,
each written with a few SQLAlchemy Core statements, so memory stays flat however long the file is.
On a big file the phone numbers are parsed by a process per core (`campaigns.contacts.parsing`);
everything else, and every write, stays in this process and this transaction.

How each data row of a file is counted (every row lands in exactly one of the first three):

- ``imported``: its number was not a contact before this import; a contact is created.
- ``updated``: its number was already a contact; its attributes are updated (columns of this file
  overwrite the same-named attributes, others are kept) and it joins the list if it was not in it.
- ``rejected``: not stored; the rejects file says why (no number, invalid number, unclear consent,
  a malformed row, or a *duplicate*: the same number, in any spelling, as an earlier row of the
  same file; the first row wins).
- ``not consented``: of the imported + updated rows, those whose consent value says no (or is
  empty). They are stored and listed, and never sent marketing.
- ``suppressed``: of the updated rows, contacts who had opted out. They stay opted out.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine

from campaigns.contacts import effects
from campaigns.contacts.csvfiles import CsvSource
from campaigns.contacts.parsing import parse_workers, read_records
from campaigns.contacts.rows import ColumnPlan, ContactRecord, Reject, RejectKind, plan_columns
from campaigns.core.bulk import executemany_plain, sql_literal
from campaigns.core.db import safe_url, write_transaction
from campaigns.core.dbtypes import UTCDateTime, utcnow
from campaigns.core.exceptions import LockedError, NotFoundError
from campaigns.core.models import CONTACT_LIST_TABLE as _list
from campaigns.core.models import CONTACT_TABLE as _contact
from campaigns.core.models import LIST_MEMBER_TABLE as _member


@dataclass
class ImportSummary:
    """What an import did; see the module docstring for exactly what each count means."""

    file: str
    list_name: str
    dry_run: bool
    rows: int = 0
    imported: int = 0
    updated: int = 0
    rejected: int = 0
    not_consented: int = 0
    suppressed: int = 0
    rejected_by_kind: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "list": self.list_name,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "rejected": self.rejected,
            "not_consented": self.not_consented,
            "suppressed": self.suppressed,
            "rejected_by_reason": {str(kind): n for kind, n in sorted(self.rejected_by_kind.items())},
        }


@dataclass(frozen=True)
class ImportOptions:
    """How to read one file and where to put it."""

    list_name: str
    region: str | None = None
    phone_column: str | None = None
    consent_column: str | None = None
    opted_in: bool = False
    dry_run: bool = False
    batch_rows: int = 2000
    #: Processes that parse the phone numbers (`parsing.parse_workers`): None = every core on a big file.
    parse_workers: int | None = None


class _DryRun(Exception):
    """Raised inside the import transaction to roll it back."""


def import_contacts(
    engine: Engine,
    source: CsvSource,
    *,
    options: ImportOptions,
    on_reject: Callable[[Reject], None],
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import `source` into the list `options.list_name` (created if needed), all or nothing."""
    plan = plan_columns(
        source.header,
        phone_column=options.phone_column,
        consent_column=options.consent_column,
        opted_in=options.opted_in,
    )
    summary = ImportSummary(file=str(source.path), list_name=options.list_name, dry_run=options.dry_run)

    def reject(item: Reject) -> None:
        summary.rejected += 1
        summary.rejected_by_kind[item.kind] += 1
        on_reject(item)

    try:
        with write_transaction(engine) as conn:
            writer = _BatchWriter(conn, list_name=options.list_name, now=utcnow())
            _stream(
                source,
                plan,
                options=options,
                writer=writer,
                summary=summary,
                reject=reject,
                on_progress=on_progress,
            )
            writer.close()
            if options.dry_run:
                raise _DryRun
    except _DryRun:
        pass
    except sa.exc.OperationalError as exc:
        if "database is locked" not in str(exc.orig):
            raise
        raise LockedError(
            f"the database {safe_url(engine)} is busy: another wacamp process is writing to it; "
            "nothing was imported, try again when it is done"
        ) from exc
    return summary


def _stream(
    source: CsvSource,
    plan: ColumnPlan,
    *,
    options: ImportOptions,
    writer: _BatchWriter,
    summary: ImportSummary,
    reject: Callable[[Reject], None],
    on_progress: Callable[[int], None] | None,
) -> None:
    pending: dict[str, ContactRecord] = {}

    def flush() -> None:
        for duplicate in writer.write(list(pending.values()), summary):
            reject(duplicate)
        pending.clear()
        if on_progress is not None:
            on_progress(source.bytes_read)

    workers = parse_workers(source.size_bytes, options.parse_workers)
    for record in read_records(source, plan, options.region, workers=workers):
        summary.rows += 1
        if isinstance(record, Reject):
            reject(record)
        elif (first := pending.get(record.phone)) is not None:
            reject(_duplicate(record, first_line=first.line))
        else:
            pending[record.phone] = record
            if len(pending) >= options.batch_rows:
                flush()
    flush()


def _duplicate(record: ContactRecord, *, first_line: int) -> Reject:
    reason = f"duplicate: same number ({record.phone}) as line {first_line}"
    return Reject(record.line, record.raw_phone, RejectKind.DUPLICATE, reason)


def _insert(conn: Connection) -> Callable[[sa.Table], Any]:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return cast(
        Callable[[sa.Table], Any], sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    )


def _merged_attributes(conn: Connection, excluded: Any) -> Any:
    """Stored attributes updated with the file's: same names overwritten, others kept."""
    if conn.dialect.name == "sqlite":
        return sa.func.json_patch(_contact.c.attributes, excluded.attributes)
    merged = sa.cast(_contact.c.attributes, JSONB).op("||")(sa.cast(excluded.attributes, JSONB))
    return sa.cast(merged, sa.JSON)


class _BatchWriter:
    """Writes batches of records inside the import's transaction, and remembers the numbers seen.

    The numbers seen so far live in a temporary table (not in memory), so a duplicate in a later
    batch is found without memory growing with the file.
    """

    def __init__(self, conn: Connection, *, list_name: str, now: datetime) -> None:
        self.conn = conn
        self.now = now
        self.list_id = ensure_list(conn, list_name, now=now)
        self.seen = sa.Table(
            "wacamp_import_seen",
            sa.MetaData(),
            sa.Column("phone", sa.String(20), primary_key=True),
            sa.Column("line", sa.Integer(), nullable=False),
            prefixes=["TEMPORARY"],
        )
        self.seen.create(conn)
        self.upsert = self._upsert_statement()

    def _upsert_statement(self) -> Any:
        # The import's timestamp is rendered into the statement once instead of bound per row: this
        # statement runs for every row, and datetime bind processing was a fifth of its cost. So is
        # consent_at: the statement picks it from the row's consent.
        now = sql_literal(self.conn, self.now, UTCDateTime())
        typed = now if self.conn.dialect.name == "sqlite" else sa.cast(now, UTCDateTime())  # typed CASE
        given = sa.case((sa.bindparam("consent_given", type_=sa.Boolean()), typed), else_=sa.null())
        stmt = _insert(self.conn)(_contact).values(created_at=now, updated_at=now, consent_at=given)
        excluded = stmt.excluded
        keep_since = sa.and_(excluded.consent, _contact.c.consent, _contact.c.consent_at.is_not(None))
        return stmt.on_conflict_do_update(
            index_elements=[_contact.c.phone],
            set_={
                "attributes": _merged_attributes(self.conn, excluded),
                "consent": excluded.consent,
                "consent_at": sa.case((keep_since, _contact.c.consent_at), else_=excluded.consent_at),
                "updated_at": excluded.updated_at,
            },
        )

    def write(self, records: list[ContactRecord], summary: ImportSummary) -> list[Reject]:
        """Upsert the records (distinct numbers) and their list membership; return the duplicates."""
        if not records:
            return []
        query = sa.select(self.seen.c.phone, self.seen.c.line).where(
            _one_of(self.conn, self.seen.c.phone, [r.phone for r in records])
        )
        earlier: dict[str, int] = {phone: line for phone, line in self.conn.execute(query)}
        duplicates = [_duplicate(r, first_line=earlier[r.phone]) for r in records if r.phone in earlier]
        fresh = [r for r in records if r.phone not in earlier]
        if not fresh:
            return duplicates
        phones = [r.phone for r in fresh]
        executemany_plain(
            self.conn, sa.insert(self.seen), [{"phone": r.phone, "line": r.line} for r in fresh]
        )
        existing = _opted_out_flags(self.conn, phones)
        executemany_plain(self.conn, self.upsert, [self._row(r) for r in fresh])
        self._join_list(phones)
        summary.updated += len(existing)
        summary.imported += len(fresh) - len(existing)
        summary.suppressed += sum(1 for opted_out in existing.values() if opted_out)
        summary.not_consented += sum(1 for r in fresh if not r.consent)
        return duplicates

    def _row(self, record: ContactRecord) -> dict[str, Any]:
        return {
            "phone": record.phone,
            "attributes": record.attributes,
            "consent": record.consent,
            "consent_given": record.consent,
        }

    def _join_list(self, phones: list[str]) -> None:
        members = sa.select(
            sa.literal(self.list_id, sa.Integer()),
            _contact.c.id,
            sa.literal(self.now, UTCDateTime()),
        ).where(_one_of(self.conn, _contact.c.phone, phones))
        stmt = _insert(self.conn)(_member).from_select(["list_id", "contact_id", "added_at"], members)
        self.conn.execute(stmt.on_conflict_do_nothing())

    def close(self) -> None:
        self.seen.drop(self.conn)


def _one_of(conn: Connection, column: Any, phones: list[str]) -> Any:
    """``column IN (...)``: ``= ANY(array)`` on PostgreSQL, ``json_each`` on SQLite: one parameter.

    PostgreSQL plans an IN list of 2,000 parameters slowly (a third of a batch's time, measured).
    """
    if conn.dialect.name == "sqlite":  # IN (SELECT value FROM json_each(?)): also one parameter, 40 % faster
        return column.in_(sa.select(sa.func.json_each(json.dumps(phones)).table_valued("value").c.value))
    return column == sa.any_(sa.bindparam(None, phones, type_=postgresql.ARRAY(sa.String())))


def _opted_out_flags(conn: Connection, phones: list[str]) -> dict[str, bool]:
    """For the numbers among `phones` that are contacts: whether each has opted out."""
    query = sa.select(_contact.c.phone, _contact.c.suppressed_at).where(
        _one_of(conn, _contact.c.phone, phones)
    )
    return {phone: suppressed_at is not None for phone, suppressed_at in conn.execute(query)}


def ensure_list(conn: Connection, name: str, *, now: datetime) -> int:
    """The id of the contact list `name`, created if it does not exist."""
    stmt = (
        _insert(conn)(_list).values(name=name, created_at=now).on_conflict_do_nothing(index_elements=["name"])
    )
    conn.execute(stmt)
    return int(conn.execute(sa.select(_list.c.id).where(_list.c.name == name)).scalar_one())


@dataclass(frozen=True)
class ListSummary:
    """A contact list and how many of its members may be sent marketing.

    ``consented`` counts members with consent, ``suppressed`` those who opted out, and ``sendable``
    those with consent who did not opt out (what a marketing campaign on the list can reach).
    """

    name: str
    members: int
    consented: int
    suppressed: int
    sendable: int
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {name: _jsonable(getattr(self, name)) for name in self.__dataclass_fields__}


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def list_summaries(engine: Engine) -> list[ListSummary]:
    """Every contact list with its counts, by name."""
    consented = sa.case((_contact.c.consent, 1), else_=0)
    suppressed = sa.case((_contact.c.suppressed_at.is_not(None), 1), else_=0)
    sendable = sa.case((sa.and_(_contact.c.consent, _contact.c.suppressed_at.is_(None)), 1), else_=0)
    query = (
        sa.select(
            _list.c.name,
            sa.func.count(_contact.c.id),
            sa.func.coalesce(sa.func.sum(consented), 0),
            sa.func.coalesce(sa.func.sum(suppressed), 0),
            sa.func.coalesce(sa.func.sum(sendable), 0),
            _list.c.created_at,
        )
        .select_from(
            _list.outerjoin(_member, _member.c.list_id == _list.c.id).outerjoin(
                _contact, _contact.c.id == _member.c.contact_id
            )
        )
        .group_by(_list.c.id, _list.c.name, _list.c.created_at)
        .order_by(_list.c.name)
    )
    with engine.connect() as conn:
        return [
            ListSummary(name, int(members), int(yes), int(opted_out), int(ok), created)
            for name, members, yes, opted_out, ok, created in conn.execute(query)
        ]


@dataclass(frozen=True)
class ContactView:
    """One contact as `contacts show` prints it."""

    id: int
    phone: str
    consent: bool
    consent_at: datetime | None
    suppressed_at: datetime | None
    suppression_reason: str | None
    attributes: dict[str, Any]
    lists: list[str]
    service_window_until: datetime | None
    marketing_deferred_until: datetime | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {name: _jsonable(getattr(self, name)) for name in self.__dataclass_fields__}


def find_contact(engine: Engine, phone: str) -> ContactView:
    """The contact with this E.164 number, or NotFoundError."""
    columns = [_contact.c[name] for name in ContactView.__dataclass_fields__ if name != "lists"]
    with engine.connect() as conn:
        row = conn.execute(sa.select(*columns).where(_contact.c.phone == phone)).mappings().first()
        if row is None:
            raise NotFoundError(f"no contact {phone}")
        lists = conn.execute(
            sa.select(_list.c.name)
            .join(_member, _member.c.list_id == _list.c.id)
            .where(_member.c.contact_id == row["id"])
            .order_by(_list.c.name)
        ).scalars()
        return ContactView(**row, lists=list(lists))


@dataclass
class SuppressionResult:
    """What an opt-out did: newly opted out, already opted out, and unknown numbers recorded."""

    opted_out: int = 0
    already: int = 0
    created: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"opted_out": self.opted_out, "already_opted_out": self.already, "new_contacts": self.created}


def suppress(
    conn: Connection, phones: Iterable[str], *, reason: str | None, now: datetime
) -> SuppressionResult:
    """Opt these E.164 numbers out, inside the caller's transaction (`effects.record_opt_outs`).

    A number that is not a contact yet becomes one (suppressed, no consent, in no list), so a later
    import cannot make it sendable. An earlier opt-out keeps its time and reason.
    """
    counts = effects.record_opt_outs(conn, phones, reason=reason, now=now)
    return SuppressionResult(opted_out=counts.opted_out, already=counts.already, created=counts.created)


def opt_out(engine: Engine, phones: Iterable[str], *, reason: str | None = None) -> SuppressionResult:
    """Opt these E.164 numbers out, in one transaction (see `suppress`)."""
    with write_transaction(engine) as conn:
        return suppress(conn, phones, reason=reason, now=utcnow())


def opt_in(engine: Engine, phones: Iterable[str]) -> int:
    """Clear the opt-out of these E.164 numbers and record their consent now; how many were opted out.

    Every number must be a contact already (NotFoundError names the first that is not; nothing
    changes then).
    """
    wanted = sorted(set(phones))
    with write_transaction(engine) as conn:
        known = _opted_out_flags(conn, wanted)
        missing = [phone for phone in wanted if phone not in known]
        if missing:
            raise NotFoundError(f"no contact {missing[0]}: import it first (nothing was changed)")
        effects.clear_suppression(conn, wanted, now=utcnow())
    return sum(1 for opted_out in known.values() if opted_out)

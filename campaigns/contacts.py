"""Contacts: importing people's CSV files into lists, and opt-outs (suppression), which always win.

An import is one database transaction: it all lands, or (on an unreadable file, a crash, Ctrl-C,
or ``--dry-run``) nothing does. Inside it the file is streamed in batches of `batch_rows` records,
each written with a few SQLAlchemy Core statements, so memory stays flat however long the file is.

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

import enum
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine

from campaigns.csvfiles import CsvRow, CsvSource
from campaigns.db import write_transaction
from campaigns.dbtypes import UTCDateTime, utcnow
from campaigns.exceptions import NotFoundError, UserError
from campaigns.models import Contact, ContactList, ListMember
from campaigns.phones import InvalidPhoneNumber, normalize

#: Header names (case-insensitive) taken as the phone column: the first column with one of them.
PHONE_HEADERS = ("phone", "phone_number", "mobile", "cell", "telefono", "cellulare", "numero", "wa_id")
#: Header names (case-insensitive) of the consent column when --consent-column is not given.
CONSENT_HEADERS = ("consent", "consenso", "opt_in", "opted_in", "optin", "marketing_consent")
#: Consent values (case-insensitive, blanks around ignored).
CONSENT_YES = frozenset({"yes", "y", "true", "1", "x", "si", "sì", "sí", "oui", "ja"})
CONSENT_NO = frozenset({"no", "n", "false", "0", ""})

_contact: sa.Table = Contact.__table__  # type: ignore[attr-defined]
_member: sa.Table = ListMember.__table__  # type: ignore[attr-defined]
_list: sa.Table = ContactList.__table__  # type: ignore[attr-defined]


class RejectKind(enum.StrEnum):
    """Why a row was not imported, in the words of the summary."""

    NO_PHONE = "no phone number"
    INVALID_PHONE = "invalid phone number"
    DUPLICATE = "duplicate"
    UNCLEAR_CONSENT = "unclear consent"
    MALFORMED = "malformed row"


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that was not imported: its physical line, the value at fault, and why."""

    line: int
    raw: str
    kind: RejectKind
    reason: str


@dataclass(frozen=True, slots=True)
class ContactRecord:
    """A row that reads well: the E.164 number, consent and the other columns as attributes."""

    line: int
    raw_phone: str
    phone: str
    consent: bool
    attributes: dict[str, str]


def parse_consent(raw: str) -> bool | None:
    """True for yes, False for no (empty included), None when the value is unclear."""
    value = raw.strip().lower()
    if value in CONSENT_YES:
        return True
    if value in CONSENT_NO:
        return False
    return None


@dataclass(frozen=True)
class ColumnPlan:
    """Which column is the phone, which the consent (None: the whole file is opted in), and the rest."""

    phone: int
    consent: int | None
    attributes: tuple[tuple[int, str], ...]
    width: int
    #: Digits without + are international (a WhatsApp wa_id column).
    international: bool = False

    def read(self, row: CsvRow, region: str | None) -> ContactRecord | Reject:
        """The contact a row describes, or why it is rejected."""
        fields = row.fields
        if len(fields) > self.width and any(cell.strip() for cell in fields[self.width :]):
            return Reject(row.line, _joined(fields), RejectKind.MALFORMED, _too_many(len(fields), self.width))
        raw_phone = fields[self.phone] if self.phone < len(fields) else ""
        try:
            phone = normalize(raw_phone, region, international=self.international)
        except InvalidPhoneNumber as exc:
            kind = RejectKind.NO_PHONE if not raw_phone.strip() else RejectKind.INVALID_PHONE
            return Reject(row.line, raw_phone, kind, exc.reason)
        consent = True
        if self.consent is not None:
            raw_consent = fields[self.consent] if self.consent < len(fields) else ""
            parsed = parse_consent(raw_consent)
            if parsed is None:
                return Reject(row.line, raw_consent, RejectKind.UNCLEAR_CONSENT, _UNCLEAR)
            consent = parsed
        count = len(fields)
        attributes = {name: (fields[i].strip() if i < count else "") for i, name in self.attributes}
        return ContactRecord(row.line, raw_phone, phone, consent, attributes)


_UNCLEAR = "unclear consent: use yes/y/true/1/x/si/oui/ja or no/n/false/0/empty"


def _joined(fields: list[str]) -> str:
    text = ",".join(fields)
    return text if len(text) <= 200 else text[:199] + "…"


def _too_many(count: int, width: int) -> str:
    return f"{count} fields, the header has {width} (an unquoted delimiter inside a value?)"


def plan_columns(
    header: Sequence[str],
    *,
    phone_column: str | None = None,
    consent_column: str | None = None,
    opted_in: bool = False,
) -> ColumnPlan:
    """Find the phone and consent columns in a header, or raise UserError listing the headers."""
    lowered = [name.strip().lower() for name in header]
    named = [name for name in lowered if name]
    duplicates = sorted({name for name in named if named.count(name) > 1})
    if duplicates:
        raise UserError(f"the header names {', '.join(duplicates)} more than once: rename the columns")
    listing = ", ".join(name for name in header if name.strip()) or "(none)"
    phone = _find_column(lowered, phone_column, PHONE_HEADERS)
    if phone is None:
        wanted = f"no column named {phone_column!r}" if phone_column else "no phone column"
        hint = "" if phone_column else f" (looked for {', '.join(PHONE_HEADERS)}; use --phone-column)"
        raise UserError(f"{wanted} in the header{hint}; the headers are: {listing}")
    consent = _consent_column(lowered, consent_column=consent_column, opted_in=opted_in, listing=listing)
    taken = {phone, consent}
    attributes = tuple((i, header[i].strip()) for i in range(len(header)) if i not in taken and lowered[i])
    return ColumnPlan(phone, consent, attributes, len(header), international=lowered[phone] == "wa_id")


def _find_column(lowered: list[str], explicit: str | None, candidates: Iterable[str]) -> int | None:
    if explicit:
        name = explicit.strip().lower()
        return lowered.index(name) if name in lowered else None
    known = set(candidates)
    return next((index for index, name in enumerate(lowered) if name in known), None)


def _consent_column(
    lowered: list[str], *, consent_column: str | None, opted_in: bool, listing: str
) -> int | None:
    if consent_column and opted_in:
        raise UserError("give either --consent-column or --opted-in, not both")
    found = _find_column(lowered, consent_column, CONSENT_HEADERS)
    if consent_column and found is None:
        raise UserError(f"no column named {consent_column!r} in the header; the headers are: {listing}")
    if found is not None and opted_in:
        raise UserError(
            f"the file has a consent column ({lowered[found]!r}) but --opted-in says the whole file is "
            "opted in: drop --opted-in, or name the right column with --consent-column"
        )
    if found is None and not opted_in:
        raise UserError(
            f"no consent column (looked for {', '.join(CONSENT_HEADERS)}; use --consent-column), and "
            f"--opted-in was not given: consent must be explicit; the headers are: {listing}"
        )
    return found


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

    for row in source.rows():
        summary.rows += 1
        record = plan.read(row, options.region)
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
        # statement runs for every row, and datetime bind processing was a fifth of its cost.
        now = _sql_literal(self.conn, self.now)
        stmt = _insert(self.conn)(_contact).values(created_at=now, updated_at=now)
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
        self.conn.execute(sa.insert(self.seen), [{"phone": r.phone, "line": r.line} for r in fresh])
        existing = _opted_out_flags(self.conn, phones)
        self.conn.execute(self.upsert, [self._row(r) for r in fresh])
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
            "consent_at": self.now if record.consent else None,
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
    """``column IN (...)``; on PostgreSQL ``column = ANY(array)``, one parameter instead of thousands.

    PostgreSQL plans an IN list of 2,000 parameters slowly (a third of a batch's time, measured).
    """
    if conn.dialect.name == "sqlite":
        return column.in_(phones)
    return column == sa.any_(sa.bindparam(None, phones, type_=postgresql.ARRAY(sa.String())))


def _sql_literal(conn: Connection, value: datetime) -> Any:
    """A timestamp as a SQL literal of the connection's dialect, rendered by its column type."""
    rendered = sa.literal(value, UTCDateTime()).compile(
        dialect=conn.dialect, compile_kwargs={"literal_binds": True}
    )
    return sa.literal_column(str(rendered), type_=UTCDateTime())


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
    """Opt these E.164 numbers out, inside the caller's transaction.

    A number that is not a contact yet becomes one (suppressed, no consent, in no list), so a later
    import cannot make it sendable. An earlier opt-out keeps its time and reason.
    """
    wanted = sorted(set(phones))
    result = SuppressionResult()
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        known = _opted_out_flags(conn, chunk)
        result.created += len(chunk) - len(known)
        result.already += sum(1 for opted_out in known.values() if opted_out)
        result.opted_out += sum(1 for opted_out in known.values() if not opted_out)
        stmt = _insert(conn)(_contact)
        rows: list[dict[str, Any]] = [
            {
                "phone": phone,
                "attributes": {},
                "consent": False,
                "suppressed_at": now,
                "suppression_reason": reason,
                "created_at": now,
                "updated_at": now,
            }
            for phone in chunk
        ]
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[_contact.c.phone],
                set_={
                    "suppressed_at": sa.func.coalesce(_contact.c.suppressed_at, stmt.excluded.suppressed_at),
                    "suppression_reason": sa.case(
                        (_contact.c.suppressed_at.is_(None), stmt.excluded.suppression_reason),
                        else_=_contact.c.suppression_reason,
                    ),
                    "updated_at": sa.case(
                        (_contact.c.suppressed_at.is_(None), stmt.excluded.updated_at),
                        else_=_contact.c.updated_at,
                    ),
                },
            ),
            rows,
        )
    result.opted_out += result.created
    return result


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
    now = utcnow()
    with write_transaction(engine) as conn:
        known = _opted_out_flags(conn, wanted)
        missing = [phone for phone in wanted if phone not in known]
        if missing:
            raise NotFoundError(f"no contact {missing[0]}: import it first (nothing was changed)")
        keep_since = sa.and_(_contact.c.consent, _contact.c.consent_at.is_not(None))
        conn.execute(
            sa.update(_contact)
            .where(_contact.c.phone.in_(wanted))
            .values(
                suppressed_at=None,
                suppression_reason=None,
                consent=True,
                consent_at=sa.case((keep_since, _contact.c.consent_at), else_=sa.literal(now, UTCDateTime())),
                updated_at=now,
            )
        )
    return sum(1 for opted_out in known.values() if opted_out)

"""How one row of a people's CSV file becomes a contact, or a reject with the reason why.

Pure logic (no database): which columns hold the phone and the consent, what consent values mean,
and what is wrong with a row that cannot be imported. `campaigns.contacts.importer` writes the results.

Parsing the phone number is most of the work, so it can be done apart, in other processes: a
`ColumnPlan` gives each row's `raw_phone`, `normalize_phones` turns a batch of them into numbers (or
reasons), and `read_parsed` finishes each row with its number. `read` does all three for one row.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from campaigns.contacts.csvfiles import CsvRow
from campaigns.contacts.phones import InvalidPhoneNumber, normalize
from campaigns.core.exceptions import UserError

#: Header names (case-insensitive) taken as the phone column: the first column with one of them.
PHONE_HEADERS = ("phone", "phone_number", "mobile", "cell", "telefono", "cellulare", "numero", "wa_id")
#: Header names (case-insensitive) of the consent column when --consent-column is not given.
CONSENT_HEADERS = ("consent", "consenso", "opt_in", "opted_in", "optin", "marketing_consent")
#: Consent values (case-insensitive, blanks around ignored).
CONSENT_YES = frozenset({"yes", "y", "true", "1", "x", "si", "sì", "sí", "oui", "ja"})
CONSENT_NO = frozenset({"no", "n", "false", "0", ""})


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
        parsed = normalize_phones([self.raw_phone(row)], region, international=self.international)
        return self.read_parsed(row, parsed.phones[0], parsed.reasons.get(0, ""))

    def raw_phone(self, row: CsvRow) -> str:
        """The phone cell of a row as written (empty when the row is too short to have one)."""
        return row.fields[self.phone] if self.phone < len(row.fields) else ""

    def read_parsed(self, row: CsvRow, phone: str, reason: str) -> ContactRecord | Reject:
        """`read`, given the row's number in E.164 (`normalize_phones`), or "" and why not."""
        fields = row.fields
        if len(fields) > self.width and any(cell.strip() for cell in fields[self.width :]):
            return Reject(row.line, _joined(fields), RejectKind.MALFORMED, _too_many(len(fields), self.width))
        if not phone:
            raw_phone = self.raw_phone(row)
            kind = RejectKind.NO_PHONE if not raw_phone.strip() else RejectKind.INVALID_PHONE
            return Reject(row.line, raw_phone, kind, reason)
        consent = True
        if self.consent is not None:
            raw_consent = fields[self.consent] if self.consent < len(fields) else ""
            parsed = parse_consent(raw_consent)
            if parsed is None:
                return Reject(row.line, raw_consent, RejectKind.UNCLEAR_CONSENT, _UNCLEAR)
            consent = parsed
        count = len(fields)
        attributes = {name: (fields[i].strip() if i < count else "") for i, name in self.attributes}
        return ContactRecord(row.line, self.raw_phone(row), phone, consent, attributes)


@dataclass
class ParsedPhones:
    """A batch of phone cells read: the E.164 number of each, or "" with the reason at its index."""

    phones: list[str]
    reasons: dict[int, str] = field(default_factory=dict)


def normalize_phones(raws: Sequence[str], region: str | None, *, international: bool) -> ParsedPhones:
    """`phones.normalize` over a batch (a plain function of plain data: it runs in a worker process)."""
    parsed = ParsedPhones([])
    for index, raw in enumerate(raws):
        try:
            parsed.phones.append(normalize(raw, region, international=international))
        except InvalidPhoneNumber as exc:
            parsed.phones.append("")
            parsed.reasons[index] = exc.reason
    return parsed


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

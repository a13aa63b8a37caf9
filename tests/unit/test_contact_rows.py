"""How one CSV row becomes a contact: the columns found, consent read, and why a row is rejected."""

from __future__ import annotations

import pytest

from campaigns.contacts.csvfiles import CsvRow
from campaigns.contacts.rows import (
    ColumnPlan,
    ContactRecord,
    Reject,
    RejectKind,
    parse_consent,
    plan_columns,
)
from campaigns.core.exceptions import UserError


@pytest.mark.parametrize("value", ["yes", "Y", " TRUE ", "1", "x", "X", "si", "Sì", "sí", "oui", "JA"])
def test_consent_words_that_mean_yes(value: str) -> None:
    assert parse_consent(value) is True


@pytest.mark.parametrize("value", ["no", "N", " false ", "0", "", "   "])
def test_consent_words_that_mean_no_including_empty(value: str) -> None:
    assert parse_consent(value) is False


@pytest.mark.parametrize("value", ["maybe", "ok", "2", "yes please", "-", "nein"])
def test_any_other_consent_value_is_unclear(value: str) -> None:
    assert parse_consent(value) is None


def test_the_first_known_phone_header_is_the_phone_column_whatever_its_case() -> None:
    plan = plan_columns(["Name", "Cellulare", "Telefono", "Consenso"])
    assert (plan.phone, plan.consent) == (1, 3)
    assert plan.attributes == ((0, "Name"), (2, "Telefono"))


def test_the_phone_column_can_be_named() -> None:
    plan = plan_columns(["Name", "Mobile", "Numero WhatsApp"], phone_column="numero whatsapp", opted_in=True)
    assert plan.phone == 2
    assert plan.consent is None


def test_a_file_without_a_phone_column_is_refused_listing_its_headers() -> None:
    with pytest.raises(UserError, match=r"no phone column .* the headers are: Name, Email, consent"):
        plan_columns(["Name", "Email", "consent"])


def test_a_named_phone_column_that_is_not_there_is_refused() -> None:
    with pytest.raises(UserError, match="no column named 'tel'"):
        plan_columns(["phone", "consent"], phone_column="tel")


def test_without_a_consent_column_the_import_is_refused_unless_opted_in() -> None:
    with pytest.raises(UserError, match="consent must be explicit"):
        plan_columns(["phone", "name"])
    assert plan_columns(["phone", "name"], opted_in=True).consent is None


def test_opted_in_is_refused_when_the_file_has_a_consent_column() -> None:
    with pytest.raises(UserError, match="has a consent column"):
        plan_columns(["phone", "consent"], opted_in=True)


def test_duplicate_header_names_are_refused() -> None:
    with pytest.raises(UserError, match="names city more than once"):
        plan_columns(["phone", "City", "city"], opted_in=True)


def test_columns_without_a_header_are_ignored() -> None:
    plan = plan_columns(["phone", "", "name", ""], opted_in=True)
    assert plan.attributes == ((2, "name"),)


def test_a_wa_id_column_is_read_as_international_digits() -> None:
    plan = plan_columns(["wa_id", "consent"])
    record = plan.read(CsvRow(2, ["4915123456789", "yes"]), None)
    assert isinstance(record, ContactRecord)
    assert record.phone == "+4915123456789"


PLAN = ColumnPlan(phone=0, consent=1, attributes=((2, "first_name"), (3, "city")), width=4)


def test_a_good_row_becomes_a_contact_with_trimmed_attributes() -> None:
    record = PLAN.read(CsvRow(7, ["333 1234567", "Sì", " Mario ", "Roma"]), "IT")
    assert record == ContactRecord(
        7, "333 1234567", "+393331234567", True, {"first_name": "Mario", "city": "Roma"}
    )


def test_a_short_row_gets_empty_attributes_and_empty_consent_means_no() -> None:
    record = PLAN.read(CsvRow(3, ["+393331234567"]), None)
    assert record == ContactRecord(3, "+393331234567", "+393331234567", False, {"first_name": "", "city": ""})


@pytest.mark.parametrize(
    ("fields", "kind", "raw"),
    [
        (["", "yes", "a", "b"], RejectKind.NO_PHONE, ""),
        (["+39 333 12345", "yes", "a", "b"], RejectKind.INVALID_PHONE, "+39 333 12345"),
        (["+393331234567", "forse", "a", "b"], RejectKind.UNCLEAR_CONSENT, "forse"),
        (["+393331234567", "yes", "a", "b", "extra"], RejectKind.MALFORMED, "+393331234567,yes,a,b,extra"),
    ],
)
def test_rows_that_cannot_be_used_are_rejected_with_the_value_at_fault(
    fields: list[str], kind: RejectKind, raw: str
) -> None:
    reject = PLAN.read(CsvRow(9, fields), "IT")
    assert isinstance(reject, Reject)
    assert (reject.line, reject.kind, reject.raw) == (9, kind, raw)


def test_trailing_empty_fields_are_not_a_malformed_row() -> None:
    assert isinstance(PLAN.read(CsvRow(2, ["+393331234567", "yes", "a", "b", "", ""]), None), ContactRecord)

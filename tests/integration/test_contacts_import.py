"""Contact imports, lists and opt-outs against real SQLite and PostgreSQL databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.contacts.csvfiles import CsvSource
from campaigns.contacts.importer import (
    ImportOptions,
    ImportSummary,
    find_contact,
    import_contacts,
    list_summaries,
    opt_in,
    opt_out,
)
from campaigns.contacts.rows import Reject, RejectKind
from campaigns.core.db import make_engine, upgrade, write_transaction
from campaigns.core.exceptions import InputFileError, LockedError, NotFoundError
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER


def run_import(engine: Engine, path: Path, **options: object) -> tuple[ImportSummary, list[Reject]]:
    rejects: list[Reject] = []
    settings = {"list_name": "spring", "region": "IT", **options}
    with CsvSource(path) as source:
        summary = import_contacts(engine, source, options=ImportOptions(**settings), on_reject=rejects.append)  # type: ignore[arg-type]
    return summary, rejects


def csv_file(tmp_path: Path, text: str, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


MIXED = """phone,first_name,consent,city
+39 333 1234567,Mario,yes,Roma
333 123 4567,Mario bis,si,Milano
0039 347 7654321,Anna,no,
+39 333 12345,Bad,yes,Torino
347 1112223,Luca,forse,Bari
,Nobody,yes,Pisa
+39 347 9998887,Sara,,Napoli
"""


def test_an_import_counts_each_row_once_and_stores_one_contact_per_number(
    engine: Engine, tmp_path: Path
) -> None:
    summary, rejects = run_import(engine, csv_file(tmp_path, MIXED))

    assert (summary.rows, summary.imported, summary.updated, summary.rejected, summary.not_consented) == (
        7,
        3,
        0,
        4,
        2,
    )
    assert summary.rows == summary.imported + summary.updated + summary.rejected
    assert [(r.line, r.kind) for r in rejects] == [
        (3, RejectKind.DUPLICATE),
        (5, RejectKind.INVALID_PHONE),
        (6, RejectKind.UNCLEAR_CONSENT),
        (7, RejectKind.NO_PHONE),
    ]
    assert "line 2" in rejects[0].reason
    mario = find_contact(engine, "+393331234567")
    assert (mario.consent, mario.attributes, mario.lists) == (
        True,
        {"first_name": "Mario", "city": "Roma"},
        ["spring"],
    )
    assert find_contact(engine, "+393477654321").consent is False
    assert count(engine, CONTACT) == 3
    assert count(engine, MEMBER) == 3


def test_importing_the_same_file_again_updates_and_adds_nothing(engine: Engine, tmp_path: Path) -> None:
    path = csv_file(tmp_path, MIXED)
    run_import(engine, path)
    before = find_contact(engine, "+393331234567")

    summary, _ = run_import(engine, path)

    assert (summary.imported, summary.updated, summary.rejected, summary.not_consented) == (0, 3, 4, 2)
    assert count(engine, CONTACT) == 3
    assert count(engine, MEMBER) == 3
    after = find_contact(engine, "+393331234567")
    assert after.consent_at == before.consent_at  # consent kept since it was first given
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at


def test_a_reimport_overwrites_its_columns_keeps_other_attributes_and_adds_list_membership(
    engine: Engine, tmp_path: Path
) -> None:
    run_import(engine, csv_file(tmp_path, "phone,first_name,city,consent\n+393331234567,Mario,Roma,yes\n"))
    second = csv_file(tmp_path, "phone,city,tier,consent\n333 1234567,Milano,gold,no\n", name="second.csv")

    summary, _ = run_import(engine, second, list_name="vip")

    assert (summary.imported, summary.updated, summary.not_consented) == (0, 1, 1)
    mario = find_contact(engine, "+393331234567")
    assert mario.attributes == {"first_name": "Mario", "city": "Milano", "tier": "gold"}
    assert mario.lists == ["spring", "vip"]
    assert (mario.consent, mario.consent_at) == (False, None)


def test_duplicates_in_later_batches_are_found_without_keeping_numbers_in_memory(
    engine: Engine, tmp_path: Path
) -> None:
    rows = "".join(f"+39 333 100000{i},yes\n" for i in range(6)) + "3331000002,yes\n+393331000005,no\n"
    summary, rejects = run_import(engine, csv_file(tmp_path, "phone,consent\n" + rows), batch_rows=2)

    assert (summary.imported, summary.rejected) == (6, 2)
    assert [(r.line, r.kind, r.reason) for r in rejects] == [
        (8, RejectKind.DUPLICATE, "duplicate: same number (+393331000002) as line 4"),
        (9, RejectKind.DUPLICATE, "duplicate: same number (+393331000005) as line 7"),
    ]
    assert find_contact(engine, "+393331000005").consent is True


def test_an_opted_out_contact_stays_opted_out_after_an_import_that_says_yes(
    engine: Engine, tmp_path: Path
) -> None:
    opt_out(engine, ["+393331234567"], reason="asked by phone")

    summary, _ = run_import(engine, csv_file(tmp_path, "phone,consent\n333 1234567,yes\n"))

    assert (summary.imported, summary.updated, summary.suppressed) == (0, 1, 1)
    mario = find_contact(engine, "+393331234567")
    assert mario.suppressed_at is not None
    assert mario.suppression_reason == "asked by phone"
    (spring,) = list_summaries(engine)
    assert (spring.members, spring.consented, spring.suppressed, spring.sendable) == (1, 1, 1, 0)


def test_a_dry_run_counts_exactly_and_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    summary, rejects = run_import(engine, csv_file(tmp_path, MIXED), dry_run=True)

    assert (summary.imported, summary.rejected, summary.dry_run) == (3, 4, True)
    assert len(rejects) == 4
    assert count(engine, CONTACT) == count(engine, LIST) == count(engine, MEMBER) == 0


def test_a_file_that_breaks_halfway_leaves_nothing_behind(engine: Engine, tmp_path: Path) -> None:
    good = "".join(f"+39333{i:07d},yes\n" for i in range(50))
    path = tmp_path / "broken.csv"
    path.write_bytes(b"phone,consent\n" + good.encode() + b"+39333\xe9,yes\n")

    with pytest.raises(InputFileError, match="line 52: not UTF-8"):
        run_import(engine, path, batch_rows=10)

    assert count(engine, CONTACT) == count(engine, LIST) == count(engine, MEMBER) == 0


def test_the_same_import_can_run_twice_in_one_process(engine: Engine, tmp_path: Path) -> None:
    # the temporary table of seen numbers must be gone from the pooled connection afterwards
    path = csv_file(tmp_path, "phone,consent\n+393331234567,yes\n")
    run_import(engine, path)
    run_import(engine, path, dry_run=True)
    summary, _ = run_import(engine, path)
    assert summary.updated == 1


def test_lists_count_members_consent_opt_outs_and_who_can_be_sent_marketing(
    engine: Engine, tmp_path: Path
) -> None:
    run_import(engine, csv_file(tmp_path, MIXED))
    run_import(
        engine, csv_file(tmp_path, "phone\n+393331234567\n", name="vip.csv"), list_name="vip", opted_in=True
    )
    opt_out(engine, ["+393479998887"])

    by_name = {s.name: s for s in list_summaries(engine)}

    assert (by_name["spring"].members, by_name["spring"].consented, by_name["spring"].suppressed) == (3, 1, 1)
    assert by_name["spring"].sendable == 1
    assert (by_name["vip"].members, by_name["vip"].sendable) == (1, 1)


def test_opting_out_an_unknown_number_records_it_so_a_later_import_cannot_make_it_sendable(
    engine: Engine, tmp_path: Path
) -> None:
    first = opt_out(engine, ["+393331234567", "+393331234567"], reason="complaint")
    again = opt_out(engine, ["+393331234567"], reason="second time")
    run_import(engine, csv_file(tmp_path, "phone,consent\n+393331234567,yes\n"))

    assert (first.opted_out, first.created, first.already) == (1, 1, 0)
    assert (again.opted_out, again.already) == (0, 1)
    mario = find_contact(engine, "+393331234567")
    assert (mario.suppression_reason, mario.lists) == ("complaint", ["spring"])
    assert mario.suppressed_at is not None


def test_opting_in_clears_the_opt_out_and_records_consent(engine: Engine, tmp_path: Path) -> None:
    run_import(engine, csv_file(tmp_path, "phone,consent\n+393331234567,no\n"))
    opt_out(engine, ["+393331234567"])

    assert opt_in(engine, ["+393331234567"]) == 1

    mario = find_contact(engine, "+393331234567")
    assert (mario.suppressed_at, mario.suppression_reason, mario.consent) == (None, None, True)
    assert mario.consent_at is not None


def test_opting_in_an_unknown_number_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    run_import(engine, csv_file(tmp_path, "phone,consent\n+393331234567,no\n"))
    opt_out(engine, ["+393331234567"])

    with pytest.raises(NotFoundError, match=r"no contact \+393330000000"):
        opt_in(engine, ["+393331234567", "+393330000000"])

    assert find_contact(engine, "+393331234567").suppressed_at is not None


def test_an_import_that_cannot_get_the_sqlite_write_lock_says_so_and_imports_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url, busy_timeout_s=0.2)
    upgrade(engine)
    other = make_engine(sqlite_url)
    path = csv_file(tmp_path, "phone,consent\n+393331234567,yes\n")
    try:
        with write_transaction(other), pytest.raises(LockedError, match="busy: another wacamp process"):
            run_import(engine, path)
        assert count(engine, CONTACT) == 0
    finally:
        other.dispose()
        engine.dispose()

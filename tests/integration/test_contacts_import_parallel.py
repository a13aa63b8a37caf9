"""Contact imports that parse the phone numbers in worker processes give exactly what one process gives.

Issue #17: the phone parse runs on every core for big files. Same counts, same rejects with the same
physical line numbers, same contacts, all or nothing, and no worker left behind, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.contacts import parsing
from campaigns.contacts.csvfiles import CsvSource
from campaigns.contacts.importer import ImportOptions, import_contacts
from campaigns.contacts.rows import Reject
from campaigns.core.db import make_engine, upgrade
from campaigns.core.exceptions import InputFileError
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER

# Every kind of row, a quoted value over two physical lines (so record and line numbers differ),
# blank lines, and duplicates of earlier rows that lie in other parse batches.
ROWS = [
    "+39 333 1234567,Mario,yes",
    '333 123 4568,"Anna\nsecond line",si',
    "",
    "0039 347 7654321,Luca,no",
    "+39 333 12345,Too short,yes",
    "347 1112223,Unclear,forse",
    ",Nobody,yes",
    "+39 347 9998887,Sara,",
    "12345678901234567890,Long,yes",
    "+39 333 1234567,Mario again,yes",
    "+39 347 000 1111,Extra,yes,oops",
    "+1 202 555 0143,Not Italian,x",
    "333 1234568,Anna again,no",
]
TEXT = (
    "phone,first_name,consent\n"
    + "\n".join(ROWS * 3 + [f"+39 349 {n:07d},P{n},yes" for n in range(40)])
    + "\n"
)


def _import(engine: Engine, path: Path, workers: int) -> tuple[dict[str, Any], list[Reject]]:
    rejects: list[Reject] = []
    options = ImportOptions(list_name="spring", region="IT", parse_workers=workers, batch_rows=7)
    with CsvSource(path) as source:
        summary = import_contacts(engine, source, options=options, on_reject=rejects.append)
    return summary.to_dict(), rejects


def _contacts(engine: Engine) -> list[tuple[Any, ...]]:
    query = sa.select(CONTACT.c.phone, CONTACT.c.attributes, CONTACT.c.consent, CONTACT.c.consent_at)
    with engine.connect() as conn:
        members = conn.execute(sa.select(sa.func.count()).select_from(MEMBER)).scalar_one()
        rows = [tuple(r) for r in conn.execute(query.order_by(CONTACT.c.phone))]
    return [*rows, ("members", members)]


def test_parsing_in_worker_processes_imports_exactly_what_one_process_imports(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "BATCH_ROWS", 3)  # many batches, several in flight
    path = tmp_path / "people.csv"
    path.write_text(TEXT, encoding="utf-8")
    alone = make_engine(f"sqlite:///{tmp_path / 'alone.db'}")
    upgrade(alone)
    one_summary, one_rejects = _import(alone, path, workers=0)
    pool_summary, pool_rejects = _import(engine, path, workers=2)
    assert pool_summary == one_summary
    assert one_summary["imported"] == 45 and one_summary["rejected"] > 20  # the file is what it should be
    assert pool_rejects == one_rejects
    assert [r.line for r in pool_rejects][:4] == [7, 8, 9, 11]  # physical: row 2 spans lines 3-4, 5 is blank
    assert [(p, a, c, at is not None) for p, a, c, at in _contacts(engine)[:-1]] == [
        (p, a, c, at is not None) for p, a, c, at in _contacts(alone)[:-1]
    ]
    assert _contacts(engine)[-1] == _contacts(alone)[-1]
    assert multiprocessing.active_children() == []
    alone.dispose()


def test_a_broken_file_read_by_workers_imports_nothing_and_leaves_no_worker(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "BATCH_ROWS", 3)
    path = tmp_path / "broken.csv"
    path.write_text(TEXT + '+39 347 1234567,"never closed,yes\n', encoding="utf-8")
    lines = TEXT.count("\n") + 1
    with pytest.raises(InputFileError, match=f"line {lines}: a quote opened here is never closed"):
        _import(engine, path, workers=2)
    assert _contacts(engine) == [("members", 0)]
    assert multiprocessing.active_children() == []


def test_big_files_use_every_core_and_small_ones_one_process() -> None:
    assert parsing.parse_workers(parsing.PARALLEL_MIN_BYTES - 1, None) == 0
    assert parsing.parse_workers(10**9, 3) == 3
    assert parsing.parse_workers(10**9, 0) == 0

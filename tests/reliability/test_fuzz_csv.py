"""Fuzzed CSV files for `contacts import`: encodings, delimiters, broken quotes, huge fields, formulas, NULs.

In process (hundreds of files): the import either succeeds with counts that add up to what is in the
database, or raises a `UserError` whose message is one line naming the file, and then nothing at all
was stored (all or nothing). Through the installed CLI (a few files): exit 0 or 1, never a
traceback, and a rejects file whose cells cannot run as spreadsheet formulas.
"""

from __future__ import annotations

import csv
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from campaigns.contacts.csvfiles import CsvSource
from campaigns.contacts.importer import ImportOptions, import_contacts
from campaigns.core.db import make_engine, upgrade
from campaigns.core.exceptions import UserError
from campaigns.core.models import CONTACT_LIST_TABLE as LIST
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from tests.conftest import wacamp_executable
from tests.reliability import fuzzing
from tests.reliability.record import record
from tests.reliability.support import clean_env

FORMULAS = ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=x", '=HYPERLINK("http://x")']
PHONES = ["+393471234567", "3471234568", "+39 347 123 4569", "0039 347 1234570", "12", "", "+1 202-555-0101"]
HEADERS = ["phone", "first_name", "consent", "Cellulare", "city", "", "phone"]


def cells() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(PHONES),
        st.sampled_from(FORMULAS),
        st.sampled_from(["yes", "no", "maybe", "sì", "1", ""]),
        st.text(max_size=30),
        st.text(alphabet='",;\t\n\r\x00 ab', max_size=12),
    )


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """The bytes of a CSV file as people (and broken tools) write them."""
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    header = draw(st.lists(st.sampled_from(HEADERS), min_size=1, max_size=4))
    rows = draw(st.lists(st.lists(cells(), min_size=0, max_size=5), max_size=8))
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # now and then a field over csv's 128 KiB limit
        rows.append([PHONES[0], "x" * draw(st.integers(min_value=100_000, max_value=200_000))])
    quote = draw(st.booleans())
    lines = []
    for row in [header, *rows]:
        fields = [f'"{c}"' if quote and draw(st.booleans()) else c for c in row]
        lines.append(delimiter.join(fields))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()) and data:  # corrupt a few bytes
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            at = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data = data[:at] + bytes([draw(st.integers(min_value=0, max_value=255))]) + data[at + 1 :]
    return data


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in (CONTACT, LIST, MEMBER)
        )


def import_file(engine: Engine, data: bytes, *, opted_in: bool, n: int) -> None:
    record("fuzzed_inputs")
    record("fuzzed_csv_files")
    before = counts(engine)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "people.csv"
        path.write_bytes(data)
        options = ImportOptions(list_name=f"fuzz-{n}", region="IT", opted_in=opted_in)
        try:
            with CsvSource(path) as source:
                summary = import_contacts(engine, source, options=options, on_reject=lambda _r: None)
        except UserError as exc:
            message = str(exc)
            assert message and "\n" not in message.strip(), message
            assert counts(engine) == before, "a refused file stored something"
            record("csv_refused")
            return
    contacts, lists, members = counts(engine)
    assert contacts == before[0] + summary.imported
    assert lists == before[1] + 1
    stored = summary.imported + summary.updated
    assert members - before[2] <= stored
    assert summary.rows >= summary.imported + summary.updated + summary.rejected - summary.suppressed
    record("csv_imported")


@pytest.fixture(scope="module")
def fuzz_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('fuzz-csv') / 'wacamp.db'}")
    upgrade(engine)
    return engine


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=fuzzing.examples(examples),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


class Counter:
    n = 0


def test_any_csv_file_is_imported_whole_or_refused_in_one_line_with_nothing_stored(
    fuzz_engine: Engine,
) -> None:
    @fuzz(200)
    @given(data=csv_files(), opted_in=st.booleans())
    def property_(data: bytes, opted_in: bool) -> None:
        Counter.n += 1
        import_file(fuzz_engine, data, opted_in=opted_in, n=Counter.n)

    property_()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_thousands_of_csv_files_are_imported_whole_or_refused_with_nothing_stored(
    fuzz_engine: Engine,
) -> None:
    @fuzz(1000)
    @given(data=csv_files(), opted_in=st.booleans())
    def property_(data: bytes, opted_in: bool) -> None:
        Counter.n += 1
        import_file(fuzz_engine, data, opted_in=opted_in, n=Counter.n)

    property_()


NASTY = {
    "broken-quote": b'phone,first_name,consent\n+393471234567,"Marco,yes\n+393471234568,Anna,yes\n',
    "nul-byte": b"phone,first_name,consent\n+393471234567,Ma\x00rco,yes\n",
    "utf16": "phone,first_name,consent\n+393471234567,Marco,yes\n".encode("utf-16"),
    "latin1": "phone,first_name,consent\n+393471234567,Niccolò,yes\n".encode("latin-1"),
    "huge-field": b"phone,first_name,consent\n+393471234567," + b"x" * 200_000 + b",yes\n",
    "formulas": (
        b"phone,first_name,consent\n=1+1,=HYPERLINK(\"http://x\"),yes\n+cmd|' /C calc'!A0,@SUM(A1),yes\n"
        b"+393471234567,=2+2,yes\n"
    ),
    "semicolons": b"phone;first_name;consent\n+393471234567;Marco;yes\n3471234568;Anna;no\n",
    "tabs-crlf": b"phone\tfirst_name\tconsent\r\n+393471234567\tMarco\tyes\r\n",
    "no-phone-column": b"name,city\nMarco,Roma\n",
    "empty": b"",
    "bom-only": b"\xef\xbb\xbf\r\n",
    "xlsx": b"PK\x03\x04" + b"\x00" * 100,
}


@pytest.mark.parametrize("name", sorted(NASTY))
def test_the_cli_imports_or_refuses_a_nasty_file_without_a_traceback(
    name: str, fuzz_engine: Engine, tmp_path: Path
) -> None:
    env = clean_env({"WACAMP_DATABASE_URL": fuzz_engine.url.render_as_string(hide_password=False)})
    path = tmp_path / f"{name}.csv"
    path.write_bytes(NASTY[name])
    before = counts(fuzz_engine)
    result = subprocess.run(
        [wacamp_executable(), "contacts", "import", str(path), "--list", f"cli-{name}", "--region", "IT"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    record("fuzzed_inputs")
    record("fuzzed_csv_files")
    assert result.returncode in (0, 1), result
    assert "Traceback" not in result.stderr
    assert "--debug" not in result.stderr, "an unexpected exception, not a clear error"
    if result.returncode == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, result.stderr
        assert counts(fuzz_engine) == before, "a refused file stored something"
    rejects = tmp_path / f"{name}.rejects.csv"
    if rejects.exists():
        with rejects.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                for cell in row:
                    assert not cell.startswith(("=", "@", "\t", "\r")) or cell.startswith("'"), cell

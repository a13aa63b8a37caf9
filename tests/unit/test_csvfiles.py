"""People's CSV files are read with their real line numbers, and refused in one line when unreadable."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.contacts.csvfiles import CsvOutput, CsvSource, detect_delimiter, neutralize_formula
from campaigns.core.exceptions import InputFileError


def write(tmp_path: Path, data: bytes, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(path: Path) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    with CsvSource(path) as source:
        return source.delimiter, source.header, [(row.line, row.fields) for row in source.rows()]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("phone,name", ","),
        ("phone;name;city", ";"),
        ("phone\tname", "\t"),
        ("phone", ","),
        ('"a,b";c;d', ";"),
    ],
)
def test_the_delimiter_is_the_one_the_header_line_uses_most(line: str, expected: str) -> None:
    assert detect_delimiter(line) == expected


def test_a_byte_order_mark_does_not_become_part_of_the_first_header(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffphone;nome\r\n+393331234567;Mario\r\n".encode())
    assert read_all(path) == (";", ["phone", "nome"], [(2, ["+393331234567", "Mario"])])


def test_rows_carry_the_physical_line_they_start_on(tmp_path: Path) -> None:
    data = b'phone,note\n+391,"two\nlines"\n\n+392,"a, b"\n,\n+393,last\n'
    _, _, rows = read_all(write(tmp_path, data))
    assert rows == [(2, ["+391", "two\nlines"]), (5, ["+392", "a, b"]), (7, ["+393", "last"])]


def test_tab_separated_files_with_crlf_and_no_final_newline_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, b"phone\tname\r\n+391\tAnna\r\n+392\tLuca")
    assert read_all(path) == ("\t", ["phone", "name"], [(2, ["+391", "Anna"]), (3, ["+392", "Luca"])])


def test_headers_are_trimmed(tmp_path: Path) -> None:
    _, header, _ = read_all(write(tmp_path, b" Phone , First Name \n+391,Anna\n"))
    assert header == ["Phone", "First Name"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        (b"\n+391,x\n", "no header line"),
        (b"PK\x03\x04\x14\x00rest", "workbook (.xlsx)"),
        ("phone\n+391\n".encode("utf-16"), "UTF-16"),
        (b"phone\n+391\n\x00\x01\x02", "line 3: binary data"),
        (b"phone,name\n+391,Anna\n+392,Ren\xe9\n", "line 3: not UTF-8"),
        (b'phone,name\n+391,"Anna\n+392,Luca\n', "line 2: a quote opened here is never closed"),
        (b'phone,name\n+391,"An"na\n', "line 2:"),
    ],
)
def test_unreadable_files_are_refused_in_one_line_naming_the_file(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(InputFileError) as caught:
        read_all(path)
    text = str(caught.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text


def test_a_file_that_is_not_utf8_far_down_names_the_right_line(tmp_path: Path) -> None:
    lines = [b"phone,name"] + [b"+39333%07d,Anna" % i for i in range(20000)] + [b"+39,Ren\xe9"]
    path = write(tmp_path, b"\n".join(lines) + b"\n")
    with pytest.raises(InputFileError, match="line 20002: not UTF-8"):
        read_all(path)


def test_a_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        CsvSource(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3+cmd", "'-2+3+cmd"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("+39 333 123 4567", "+39 333 123 4567"),
        ("-12.5", "-12.5"),
        ("Mario", "Mario"),
        ("", ""),
    ],
)
def test_formula_cells_are_neutralized_and_numbers_are_left_alone(cell: str, safe: str) -> None:
    assert neutralize_formula(cell) == safe


def test_an_output_file_appears_only_when_committed(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with CsvOutput(target, ["line", "raw value"]) as out:
        out.write([2, "=1+1"])
        assert not target.exists()
        out.commit()
    assert target.read_bytes() == b"line,raw value\r\n2,'=1+1\r\n"
    assert list(tmp_path.iterdir()) == [target]


def test_an_output_file_left_by_an_error_disappears(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), CsvOutput(target, ["line"]) as out:
        out.write([1])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

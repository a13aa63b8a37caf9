"""CSV files as people export them (Excel, Google Sheets, CRMs), and CSV files we write for people.

Reading: UTF-8 with or without a byte-order mark; the delimiter (comma, semicolon or tab) is the one
the header line uses most; quoted fields may hold delimiters and line breaks. Each record carries the
*physical* line it starts on (the header is line 1), so a message can point at the line an editor
shows. Files that are not CSV text at all (a workbook, UTF-16, binary, another encoding) are refused
with one line that names the file and, where it helps, the line.

Writing: `CsvOutput` writes to a temporary file and renames it into place only when the work that
produced it succeeded, and `neutralize_formula` keeps spreadsheet programs from running a cell
that came from outside as a formula.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from campaigns.core.exceptions import InputFileError

#: Delimiters we recognise, in the order that wins a tie on the header line.
DELIMITERS = (",", ";", "\t")
_SAMPLE_BYTES = 64 * 1024
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
#: Cells made only of digits, blanks and phone/number punctuation cannot call anything: left alone.
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9][0-9 ().,/-]*")


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One record of a CSV file and the physical line it starts on (the header is line 1)."""

    line: int
    fields: list[str]


class CsvSource:
    """An open CSV file: its delimiter, its header, and its records as `CsvRow`, streamed.

    Use it as a context manager; `rows()` may be iterated once. `bytes_read` tells how far the
    reading has got, for progress bars.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        sample = _read_sample(self.path)
        _refuse_non_text(self.path, sample)
        self.delimiter = detect_delimiter(_first_line(self.path, sample))
        self.size_bytes = self.path.stat().st_size
        self._raw = open(self.path, "rb")  # noqa: SIM115
        self._file = io.TextIOWrapper(self._raw, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(self._file, delimiter=self.delimiter, strict=True)
        self._last_line = 0
        try:
            first = next(self._records(), None)
            if first is None or not any(cell.strip() for cell in first.fields):
                raise InputFileError(f"{self.path}: no header line (the first line is empty)")
        except BaseException:
            self.close()
            raise
        #: The first record as read (a plain list of numbers has no header: it is data then).
        self.header_row = first
        self.header = [cell.strip() for cell in first.fields]

    @property
    def bytes_read(self) -> int:
        """How many bytes of the file have been read so far (read-ahead included)."""
        return self._raw.tell()

    def rows(self) -> Iterator[CsvRow]:
        """The records after the header, blank lines left out."""
        for row in self._records():
            if any(row.fields):
                yield row

    def _records(self) -> Iterator[CsvRow]:
        try:
            for fields in self._reader:
                start = self._last_line + 1
                self._last_line = self._reader.line_num
                yield CsvRow(start, fields)
        except UnicodeDecodeError as exc:
            line = _first_undecodable_line(self.path)
            raise InputFileError(
                f"{self.path} line {line}: not UTF-8 text ({exc.reason}); save the file as 'CSV UTF-8'"
            ) from exc
        except csv.Error as exc:
            line = self._last_line + 1
            detail = (
                "a quote opened here is never closed"
                if "unexpected end of data" in str(exc)
                else f"{exc} (a value with a quote must be quoted as a whole, its quotes doubled)"
            )
            raise InputFileError(f"{self.path} line {line}: {detail}") from exc

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


def detect_delimiter(header_line: str) -> str:
    """The delimiter the header line uses most (comma when it uses none: a one-column file)."""
    counts = {delimiter: header_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(DELIMITERS, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


def _read_sample(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(_SAMPLE_BYTES)
    except FileNotFoundError as exc:
        raise InputFileError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputFileError(f"{path}: is a directory, not a CSV file") from exc
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror})") from exc


def _refuse_non_text(path: Path, sample: bytes) -> None:
    if not sample.removeprefix(b"\xef\xbb\xbf").strip():  # nothing but a byte-order mark is empty too
        raise InputFileError(f"{path}: the file is empty; a CSV with a header line is expected")
    if sample.startswith(b"PK\x03\x04"):
        raise InputFileError(f"{path}: is a spreadsheet workbook (.xlsx), not CSV: export it as 'CSV UTF-8'")
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputFileError(f"{path}: is UTF-16 text: save it as 'CSV UTF-8'")
    if b"\x00" in sample:
        line = sample[: sample.index(b"\x00")].count(b"\n") + 1
        raise InputFileError(f"{path} line {line}: binary data (a NUL byte), not a CSV text file")


def _first_line(path: Path, sample: bytes) -> str:
    raw = sample.removeprefix(b"\xef\xbb\xbf").splitlines()[0] if sample.strip() else b""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{path} line 1: not UTF-8 text ({exc.reason}); save the file as 'CSV UTF-8'"
        ) from exc


def _first_undecodable_line(path: Path) -> int:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return number


def neutralize_formula(cell: str) -> str:
    """`cell`, made safe to open in a spreadsheet: a leading = + - @ tab or CR gets a ``'`` in front.

    Spreadsheet programs run such cells as formulas (CSV injection). Plain numbers and phone numbers
    (``+39 333 1234567``, ``-12.5``) are left as they are: digits and punctuation cannot call anything.
    """
    if cell.startswith(_FORMULA_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


class CsvOutput:
    """A CSV file written for people (comma, UTF-8), put in place only when `commit()` is called.

    Until then it is a temporary file next to the target; `discard()` (or leaving a ``with`` block
    with an exception) removes it, so a failed run never leaves a half-written file behind.
    Every cell goes through `neutralize_formula`.
    """

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = Path(path)
        self.rows_written = 0
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as exc:
            raise InputFileError(f"{self.path}: cannot be written ({exc.strerror})") from exc
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(header)

    def write(self, row: list[Any]) -> None:
        self._writer.writerow(
            [neutralize_formula(value) if isinstance(value, str) else value for value in row]
        )
        self.rows_written += 1

    def commit(self) -> None:
        """Close the file and move it to its path (replacing what was there)."""
        self._file.close()
        self._temp.chmod(0o644)
        os.replace(self._temp, self.path)

    def discard(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> CsvOutput:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if exc is not None or not self._file.closed:
            self.discard()

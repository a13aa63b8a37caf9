"""A CSV file's rows as contacts or rejects, in file order, the phone numbers parsed on every core.

Parsing and validating a phone number (`phonenumbers`) is most of an import's work and fills one core
at ~56,000 numbers/s. On a big file this module sends batches of phone cells to a pool of worker
processes and keeps a few batches in flight while the importer writes, so the parse runs beside the
CSV reading and the database writes. Only the phone cells go out and only numbers (or reasons) come
back; everything else about a row (its physical line, malformed rows, consent, attributes) is decided
here, in file order, exactly as `ColumnPlan.read` decides it. At most `IN_FLIGHT` batches are out at
once (memory stays flat), and an error in the file or the database stops the pool with nothing
left behind; the import's transaction decides what lands, as before.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice

from campaigns.contacts.csvfiles import CsvRow, CsvSource
from campaigns.contacts.rows import ColumnPlan, ContactRecord, ParsedPhones, Reject, normalize_phones

#: Files smaller than this are parsed in the importing process (starting workers costs ~0.2 s).
PARALLEL_MIN_BYTES = 4_000_000
#: Phone cells per batch sent to a worker, and how many batches may be out at once.
BATCH_ROWS = 4000
IN_FLIGHT = 4


def parse_workers(size_bytes: int, requested: int | None) -> int:
    """How many worker processes parse the phones: `requested`, else every core on a big file."""
    if requested is not None:
        return max(0, requested)
    cores = os.cpu_count() or 1
    return cores if cores > 1 and size_bytes >= PARALLEL_MIN_BYTES else 0


def read_records(
    source: CsvSource, plan: ColumnPlan, region: str | None, *, workers: int
) -> Iterator[ContactRecord | Reject]:
    """Every data row of `source` as a contact or a reject, in file order; `workers` 0 parses here."""
    if workers <= 0:
        for row in source.rows():
            yield plan.read(row, region)
        return
    pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_ignore_interrupts)
    try:
        yield from _read_in_pool(pool, source, plan, region)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _read_in_pool(
    pool: ProcessPoolExecutor, source: CsvSource, plan: ColumnPlan, region: str | None
) -> Iterator[ContactRecord | Reject]:
    window: deque[tuple[list[CsvRow], Future[ParsedPhones]]] = deque()
    rows = source.rows()
    while batch := list(islice(rows, BATCH_ROWS)):
        raws = [plan.raw_phone(row) for row in batch]
        window.append((batch, pool.submit(normalize_phones, raws, region, international=plan.international)))
        if len(window) >= IN_FLIGHT:
            yield from _finish(plan, *window.popleft())
    while window:
        yield from _finish(plan, *window.popleft())


def _finish(
    plan: ColumnPlan, batch: list[CsvRow], parsed: Future[ParsedPhones]
) -> Iterator[ContactRecord | Reject]:
    result = parsed.result()
    for index, row in enumerate(batch):
        yield plan.read_parsed(row, result.phones[index], result.reasons.get(index, ""))


def _context() -> multiprocessing.context.BaseContext:
    """fork where there is one (no re-import: workers start in milliseconds), else the default."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _ignore_interrupts() -> None:
    """Ctrl-C is the importer's to handle (it rolls back); workers just end with the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

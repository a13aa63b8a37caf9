"""The outcome journal: results a run could not write to the database, kept on local disk until it can.

While the database does not answer (`scheduler.sending.outage`), the writer appends every result it
holds to a small file (JSON lines through the json module, one `write` + `fsync` per batch), so a
`kill -9` in the middle of an outage loses nothing the platform told us. When the database answers and
the journaled results are committed, the file is deleted. A run that gives up on the database leaves
its file behind, and the next command (any command that opens the database) replays it into the
ledger before it does anything else (`replay`).

- One file per writer: ``<key>.outcomes-<random>.jsonl`` in the journal directory (`[database]
  journal_dir`, by default next to the SQLite file or in the state directory), where the key names
  the database. The writer holds an exclusive `flock` on its file for its life, so a replay skips the
  files of runs still alive (a lock dies with its process, whatever its pid becomes).
- Replaying is idempotent: every ledger statement checks the row's state, contact effects only
  extend, tier refunds remove one exact count, a throttle event already recorded is not added again.
  A torn last line (the process died mid-write) is ignored with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Engine

from campaigns.core.exceptions import DatabaseUnavailableError, is_passing_database_trouble
from campaigns.core.models import THROTTLE_EVENT_TABLE as THROTTLE_EVENT
from campaigns.core.settings import Settings
from scheduler.sending.ledger_outcomes import Outcome, OutcomeKind
from scheduler.sending.writer import ContactAction, Item, ThrottleNote, TierRefund, WriteBatch, apply_batch

log = logging.getLogger(__name__)

#: Version of the line format.
FORMAT = 1
_TYPES: dict[str, type[Any]] = {
    "outcome": Outcome,
    "contact": ContactAction,
    "throttle": ThrottleNote,
    "refund": TierRefund,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}
_DATETIME_FIELDS = {"at", "next_attempt_at", "defer_until", "counted_at"}


def journal_key(url: str) -> str:
    """A file-name-safe name for a database: the SQLite file's name, or host, port, name and a hash."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        name = Path(parsed.database or "memory").name
    else:
        name = f"{parsed.host or 'local'}-{parsed.port or ''}-{parsed.database or ''}"
    digest = hashlib.sha256(parsed.render_as_string(hide_password=True).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{digest}"


def encode(item: Item) -> str:
    """One journal line (without its newline) for an item the writer applies."""
    data = {"v": FORMAT, "type": _NAMES[type(item)], **dataclasses.asdict(item)}
    return json.dumps(data, default=_json_default, separators=(",", ":"))


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot journal {type(value).__name__}")


def decode(line: str) -> Item:
    """The item of one journal line; ValueError when it is not one."""
    data = json.loads(line)
    if not isinstance(data, dict) or data.pop("v", None) != FORMAT or data.get("type") not in _TYPES:
        raise ValueError("not a journal line of this format")
    cls = _TYPES[data.pop("type")]
    for key in _DATETIME_FIELDS & data.keys():
        if data[key] is not None:
            data[key] = datetime.fromisoformat(data[key])
    if cls is Outcome:
        data["kind"] = OutcomeKind(data["kind"])
    item: Item = cls(**data)
    return item


class Journal:
    """One writer's journal file: created at the first append, deleted once everything in it is committed."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.key = key
        self.path = directory / f"{key}.outcomes-{uuid.uuid4().hex[:12]}.jsonl"
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        #: Lines appended over the journal's life.
        self.appended = 0

    @property
    def active(self) -> bool:
        """Whether the file exists (something is journaled and not known to be committed)."""
        return self._file is not None

    def append(self, items: Sequence[Item]) -> None:
        """Append `items` and fsync (blocking: call it from a thread)."""
        if not items:
            return
        lines = "".join(encode(item) + "\n" for item in items).encode()
        with self._lock:
            if self._file is None:
                self._file = self._create()
            self._file.write(lines)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.appended += len(items)

    def _create(self) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        _fsync_directory(self.directory)
        log.warning("journaling results the database cannot take now to %s", self.path)
        return os.fdopen(descriptor, "ab")

    def discard(self) -> None:
        """Everything journaled is committed: delete the file (blocking)."""
        with self._lock:
            if self._file is None:
                return
            self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Leave the file for the next command to replay (the database never took its results)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
                log.warning(
                    "results the database did not take are kept in %s for the next command", self.path
                )


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass
class Replay:
    """What `replay` found: files replayed, items applied, torn or bad lines ignored, files left (live)."""

    files: int = 0
    items: int = 0
    ignored_lines: int = 0
    busy_files: int = 0


def replay(engine: Engine, directory: Path, key: str) -> Replay:
    """Apply every journal file of the database `key` left in `directory` by runs that ended, then delete it.

    A file whose writer still runs (its `flock` is held) is left alone. Each file is applied in one
    write transaction; a database error leaves the file for the next try and is raised.
    """
    found = Replay()
    for path in sorted(directory.glob(f"{key}.outcomes-*.jsonl")):
        with _locked(path) as locked:
            if not locked:
                found.busy_files += 1
                continue
            items, ignored = read(path)
            _apply(engine, items)
            path.unlink(missing_ok=True)
        found.files += 1
        found.items += len(items)
        found.ignored_lines += ignored
        log.warning("replayed %d results from the journal %s into the ledger", len(items), path)
    return found


def replay_journal(engine: Engine, settings: Settings) -> Replay:
    """`replay` for the configured database, waiting out database trouble up to `outage_wait_s`.

    Every command that opens the database calls it first (`wacamp.cli.common.AppContext.engine`);
    without journal files it costs one directory listing.
    """
    directory = settings.database.journal_directory()
    key = journal_key(settings.database.url)
    if not directory.is_dir() or not any(directory.glob(f"{key}.outcomes-*.jsonl")):
        return Replay()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_passing_database_trouble),
        stop=tenacity.stop_after_delay(settings.database.outage_wait_s),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=2.0),
        reraise=True,
    )
    try:
        found: Replay = retrying(replay, engine, directory, key)
    except Exception as exc:
        if not is_passing_database_trouble(exc):
            raise
        raise DatabaseUnavailableError(
            f"the database did not answer for {settings.database.outage_wait_s:.0f} s while replaying the "
            f"outcome journal in {directory}: run again when it is back"
        ) from exc
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """Hold `path`'s exclusive flock for the block (True), or False at once when a live writer holds it."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)


def read(path: Path) -> tuple[list[Item], int]:
    """The items of a journal file and how many lines were ignored (a torn last line, a foreign line)."""
    items: list[Item] = []
    ignored = 0
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            items.append(decode(raw.decode()))
        except (ValueError, TypeError, KeyError) as exc:
            ignored += 1
            where = "its last line (torn by a crash)" if number == len(lines) else f"line {number}"
            log.warning("journal %s: %s is not a result, ignored (%s)", path, where, exc)
    return items, ignored


def _apply(engine: Engine, items: Sequence[Item]) -> None:
    batch = WriteBatch()
    for item in items:
        batch.add(item)
    if batch.throttles:
        batch.throttles = _not_recorded(engine, batch.throttles)
    apply_batch(engine, batch)


def _not_recorded(engine: Engine, notes: list[ThrottleNote]) -> list[ThrottleNote]:
    """The throttle notes not in the table yet (a journal replayed twice adds none twice)."""
    t = THROTTLE_EVENT.c
    with engine.connect() as conn:
        recorded = {
            (row.sender_name, row.at, row.code)
            for row in conn.execute(
                sa.select(t.sender_name, t.at, t.code).where(t.at.in_({note.at for note in notes}))
            )
        }
    return [note for note in notes if (note.sender_name, note.at, note.code) not in recorded]

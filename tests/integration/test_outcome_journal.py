"""Database trouble: which errors are waited out, the outage clock, and the outcome journal.

Real SQLite files, a real lock held by another connection, real journal files on disk.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade, write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import DatabaseUnavailableError, is_passing_database_trouble
from campaigns.core.models import THROTTLE_EVENT_TABLE
from campaigns.core.settings_loading import load_settings
from scheduler.sending import ledger
from scheduler.sending.journal import Journal, decode, encode, journal_key, read, replay
from scheduler.sending.ledger_outcomes import Outcome, OutcomeKind
from scheduler.sending.outage import DatabaseWait
from scheduler.sending.writer import (
    ContactAction,
    ResultWriter,
    ThrottleNote,
    TierRefund,
    WriteBatch,
    apply_batch,
)
from tests.dispatch_support import seed_campaign, states


def _claimed(engine: Engine, campaign_id: int, n: int) -> list[int]:
    """Rows claimed and marked `sending`, as their requests leave (with or without item 1's marks)."""
    with write_transaction(engine) as conn:
        rows = ledger.claim(conn, campaign_id=campaign_id, owner="w", limit=n, now=utcnow(), lease_s=60)
        mark_sending = getattr(ledger, "mark_sending", None)  # claimed -> sending: the protocol of item 1
        if mark_sending is not None:
            mark_sending(conn, owner="w", message_ids=[r.id for r in rows], now=utcnow())
    return [r.id for r in rows]


def _accepted(message_id: int) -> Outcome:
    return Outcome(OutcomeKind.ACCEPTED, message_id, utcnow(), wamid=f"wamid.{message_id}")


def _locked_error(tmp_path: Path) -> sa.exc.OperationalError:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    upgrade(make_engine(url))
    holder, waiter = make_engine(url), make_engine(url, busy_timeout_s=0.05)
    with (
        write_transaction(holder),
        pytest.raises(sa.exc.OperationalError) as raised,
        write_transaction(waiter) as conn,
    ):
        conn.exec_driver_sql("SELECT 1")
    return raised.value


def test_a_lock_past_the_busy_timeout_is_passing_trouble_and_a_missing_table_is_not(tmp_path: Path) -> None:
    assert is_passing_database_trouble(_locked_error(tmp_path))
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated
    with pytest.raises(sa.exc.OperationalError) as raised, empty.connect() as conn:
        conn.execute(sa.select(THROTTLE_EVENT_TABLE.c.id))
    assert not is_passing_database_trouble(raised.value)
    assert not is_passing_database_trouble(ValueError("not a database error"))


def test_a_refused_postgresql_connection_is_passing_trouble() -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(sa.exc.OperationalError) as raised:
        engine.connect()
    assert is_passing_database_trouble(raised.value)


async def test_the_wait_retries_until_the_database_answers_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error = _locked_error(tmp_path)
    failures = iter([error, error, error])

    async def attempt() -> str:
        if (failure := next(failures, None)) is not None:
            raise failure
        return "written"

    wait = DatabaseWait(outage_wait_s=30)
    assert await wait.run(attempt, what="test") == "written"
    assert not wait.in_trouble and wait.outages == 1
    assert "the database answers again" in caplog.text


async def test_the_wait_gives_up_after_outage_wait_s_and_a_permanent_error_at_once(tmp_path: Path) -> None:
    error = _locked_error(tmp_path)
    gave_up: list[str] = []

    async def always_locked() -> None:
        raise error

    wait = DatabaseWait(outage_wait_s=0.3, on_give_up=lambda exc: gave_up.append(str(exc)))
    with pytest.raises(DatabaseUnavailableError, match="did not answer"):
        await wait.run(always_locked, what="test")
    assert gave_up and wait.outage_s >= 0.3

    async def broken() -> None:
        raise sa.exc.ProgrammingError("SELECT", {}, Exception("no such table: message"))

    with pytest.raises(sa.exc.ProgrammingError):
        await DatabaseWait(outage_wait_s=30).run(broken, what="test")


def test_every_kind_of_item_survives_a_journal_line() -> None:
    now = utcnow()
    items = [
        Outcome(OutcomeKind.REQUEUE, 7, now, next_attempt_at=now, error_code=131000, refund_attempt=True),
        _accepted(8),
        ContactAction.opted_out(3, code=131050, title="stop"),
        ContactAction.marketing_limited(4, until=now),
        ThrottleNote(sender_name="default", campaign_id=1, code=130429, retry_after_s=None, at=now),
        TierRefund(portfolio="p", phone="+39347", counted_at=now),
    ]
    assert [decode(encode(item)) for item in items] == items
    assert json.loads(encode(items[0]))["type"] == "outcome"


def test_a_replay_applies_the_journal_once_ignores_a_torn_last_line_and_deletes_the_file(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    cid = seed_campaign(sqlite_engine, recipients=5)
    ids = _claimed(sqlite_engine, cid, 5)
    key = journal_key(str(sqlite_engine.url))
    journal = Journal(tmp_path, key)
    note = ThrottleNote(sender_name="default", campaign_id=cid, code=130429, retry_after_s=1.0, at=utcnow())
    journal.append([*map(_accepted, ids[:4]), note])
    journal.close()
    with journal.path.open("a") as torn:
        torn.write(encode(_accepted(ids[4]))[:25])  # the process died in the middle of this line
    copy = tmp_path / f"{key}.outcomes-again.jsonl"
    copy.write_bytes(journal.path.read_bytes())  # the same results twice: harmless
    assert read(journal.path)[1] == 1

    found = replay(sqlite_engine, tmp_path, key)

    assert (found.files, found.items, found.ignored_lines) == (2, 10, 2)
    assert states(sqlite_engine, cid) == {"accepted": 4, "sending": 1}
    with sqlite_engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(THROTTLE_EVENT_TABLE)) == 1
    assert not list(tmp_path.glob("*.jsonl"))


def test_a_replay_leaves_the_journal_of_a_live_writer_alone(sqlite_engine: Engine, tmp_path: Path) -> None:
    cid = seed_campaign(sqlite_engine, recipients=1)
    key = journal_key(str(sqlite_engine.url))
    live = Journal(tmp_path, key)
    live.append([_accepted(_claimed(sqlite_engine, cid, 1)[0])])  # its flock is held while it lives
    found = replay(sqlite_engine, tmp_path, key)
    assert (found.files, found.busy_files) == (0, 1)
    assert live.path.exists() and states(sqlite_engine, cid) == {"sending": 1}
    live.discard()
    assert not live.path.exists()


async def test_the_writer_waits_out_a_lock_journals_what_it_holds_then_writes_it_and_drops_the_journal(
    sqlite_url: str, sqlite_engine: Engine, tmp_path: Path
) -> None:
    cid = seed_campaign(sqlite_engine, recipients=40)
    ids = _claimed(sqlite_engine, cid, 40)
    writer_engine = make_engine(sqlite_url, busy_timeout_s=0.1)
    journal = Journal(tmp_path / "journal", journal_key(sqlite_url))
    writer = ResultWriter(
        writer_engine, batch_rows=10, batch_ms=5, wait=DatabaseWait(outage_wait_s=60), journal=journal
    )
    writer.start()
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with write_transaction(make_engine(sqlite_url)):
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(5)
    for message_id in ids:
        writer.put(_accepted(message_id))
    for _ in range(200):
        if journal.appended >= 40:
            break
        await asyncio.sleep(0.02)
    assert journal.appended == 40 and journal.path.exists()
    assert writer.held == 40 and states(sqlite_engine, cid) == {"sending": 40}
    release.set()
    holder.join()
    await writer.close()
    assert states(sqlite_engine, cid) == {"accepted": 40}
    assert not journal.path.exists()


async def test_a_writer_that_gives_up_keeps_everything_in_the_journal_for_the_next_command(
    sqlite_url: str, sqlite_engine: Engine, tmp_path: Path
) -> None:
    cid = seed_campaign(sqlite_engine, recipients=12)
    ids = _claimed(sqlite_engine, cid, 12)
    writer_engine = make_engine(sqlite_url, busy_timeout_s=0.05)
    key = journal_key(sqlite_url)
    journal = Journal(tmp_path, key)
    writer = ResultWriter(
        writer_engine, batch_rows=5, batch_ms=5, wait=DatabaseWait(outage_wait_s=0.5), journal=journal
    )
    with write_transaction(make_engine(sqlite_url)):
        writer.start()
        for message_id in ids:
            writer.put(_accepted(message_id))
        with pytest.raises(DatabaseUnavailableError):
            await writer.close()
    assert len(read(journal.path)[0]) == 12
    assert replay(sqlite_engine, tmp_path, key).items == 12
    assert states(sqlite_engine, cid) == {"accepted": 12}


def test_a_batch_applied_twice_changes_nothing_more(sqlite_engine: Engine) -> None:
    cid = seed_campaign(sqlite_engine, recipients=3)
    batch = WriteBatch()
    for message_id in _claimed(sqlite_engine, cid, 3):
        batch.add(_accepted(message_id))
    apply_batch(sqlite_engine, batch)
    apply_batch(sqlite_engine, batch)
    assert states(sqlite_engine, cid) == {"accepted": 3}


def test_the_journal_lives_next_to_the_sqlite_file_or_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite_settings, _ = load_settings(environ={"WACAMP_DATABASE_URL": f"sqlite:///{tmp_path}/x/w.db"})
    assert sqlite_settings.database.journal_directory() == tmp_path / "x"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    pg, _ = load_settings(environ={"WACAMP_DATABASE_URL": "postgresql+psycopg://u:secret@db:5432/wacamp"})
    assert pg.database.journal_directory() == tmp_path / "state"
    assert journal_key(pg.database.url).startswith("db-5432-wacamp-") and "secret" not in journal_key(
        pg.database.url
    )
    chosen, _ = load_settings(environ={"WACAMP_DATABASE__JOURNAL_DIR": str(tmp_path / "j")})
    assert chosen.database.journal_directory() == tmp_path / "j"

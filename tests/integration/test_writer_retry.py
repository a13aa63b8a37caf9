"""The ledger writer waits through passing database trouble instead of dropping the results it holds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from campaigns.db import make_engine, upgrade, write_transaction
from campaigns.dbtypes import utcnow
from scheduler.writer import ThrottleNote, WriteBatch, apply_batch_retrying, is_passing_db_trouble


def _batch() -> WriteBatch:
    batch = WriteBatch()
    batch.add(
        ThrottleNote(sender_name="default", campaign_id=None, code=130429, retry_after_s=None, at=utcnow())
    )
    return batch


def test_a_batch_waits_for_a_sqlite_lock_held_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade(make_engine(url))
    writer_engine = make_engine(url, busy_timeout_s=0.1)
    holder_engine = make_engine(url)
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with write_transaction(holder_engine):
            locked.set()
            release.wait(5)

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    assert locked.wait(5)
    threading.Timer(0.8, release.set).start()  # 8 busy timeouts later
    started = time.monotonic()
    apply_batch_retrying(writer_engine, _batch(), retry_for_s=30)
    holder.join()
    assert time.monotonic() - started >= 0.5  # it did wait for the holder
    with writer_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM throttle_event").scalar() == 1


def test_a_batch_gives_up_after_its_retry_time_and_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade(make_engine(url))
    writer_engine = make_engine(url, busy_timeout_s=0.05)
    holder_engine = make_engine(url)
    with write_transaction(holder_engine), pytest.raises(sa.exc.OperationalError, match="locked"):
        apply_batch_retrying(writer_engine, _batch(), retry_for_s=0.5)


def test_a_missing_table_is_not_passing_trouble(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated
    with pytest.raises(sa.exc.OperationalError) as raised:
        apply_batch_retrying(engine, _batch(), retry_for_s=30)
    assert not is_passing_db_trouble(raised.value)
    assert not is_passing_db_trouble(ValueError("not a database error"))

"""The send lock: one holder per database, on SQLite (flock) and PostgreSQL (advisory lock)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine
from campaigns.core.exceptions import LockedError
from scheduler.sending.locks import exclusive_lock, lock_file_path


def test_a_second_holder_is_refused_at_once_while_the_first_holds_the_lock(engine: Engine) -> None:
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        with (
            exclusive_lock(engine),
            pytest.raises(LockedError, match="already sending"),
            exclusive_lock(other),
        ):
            pytest.fail("two holders of one lock")
    finally:
        other.dispose()


def test_the_lock_is_free_again_once_its_holder_leaves_the_block(engine: Engine) -> None:
    other = make_engine(engine.url.render_as_string(hide_password=False))
    taken = []
    try:
        with exclusive_lock(engine):
            taken.append("first")
        with exclusive_lock(other):  # raises LockedError if the first holder had kept it
            taken.append("second")
    finally:
        other.dispose()
    assert taken == ["first", "second"]


def test_locks_with_different_names_do_not_exclude_each_other(engine: Engine) -> None:
    taken = []
    with exclusive_lock(engine, "run-due"), exclusive_lock(engine, "something-else"):
        taken.append("both")  # a LockedError above would fail the test
    assert taken == ["both"]


def test_the_sqlite_lock_file_sits_next_to_the_database(sqlite_engine: Engine) -> None:
    database = Path(str(sqlite_engine.url.database)).resolve()
    assert lock_file_path(sqlite_engine) == database.parent / "wacamp.db.run-due.lock"


def test_a_holder_killed_with_sigkill_does_not_block_the_next_run(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from campaigns.core.db import make_engine\n"
            "from scheduler.sending.locks import exclusive_lock\n"
            "with exclusive_lock(make_engine(sys.argv[1])):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
            url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError), exclusive_lock(engine):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10  # PostgreSQL notices the dead session a moment later
        while True:
            try:
                with exclusive_lock(engine):
                    break
            except LockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()

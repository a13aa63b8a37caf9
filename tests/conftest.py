"""Shared fixtures: real databases built by running the migrations, and the installed CLI.

PostgreSQL tests read WACAMP_TEST_POSTGRES_URL (a database the tests may create databases from) and
each gets a fresh database of its own; without the variable they are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from campaigns.core.db import make_engine, upgrade

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("WACAMP_TEST_POSTGRES_URL", "")
NO_POSTGRES = "WACAMP_TEST_POSTGRES_URL is not set: PostgreSQL tests skipped (.ci/run sets it)"


def _fresh_postgres_database() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    name = f"wacamp_t_{uuid.uuid4().hex[:12]}"
    # pre-ping: a test may restart PostgreSQL (tests/reliability), leaving a dead pooled connection
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wacamp.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _fresh_postgres_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wacamp.db'}"
    else:
        yield from _fresh_postgres_database()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database (SQLite and PostgreSQL)."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    """A migrated SQLite database, for tests that need only one backend."""
    eng = make_engine(sqlite_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def wacamp_executable() -> str:
    """The installed `wacamp` console script of the environment running the tests."""
    candidate = Path(sys.executable).parent / "wacamp"
    found = str(candidate) if candidate.exists() else shutil.which("wacamp")
    if not found:
        pytest.fail("the wacamp console script is not installed (run `make test`, which installs it)")
    return found


@pytest.fixture
def run_wacamp(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run the installed CLI in a subprocess, in tmp_path, with a clean WACAMP_* environment."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120):  # type: ignore[no-untyped-def]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
        clean.update(env or {})
        return subprocess.run(
            [wacamp_executable(), *args],
            cwd=tmp_path,
            env=clean,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run

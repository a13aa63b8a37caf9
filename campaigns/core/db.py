"""Database engines, the schema check every command makes, and write transactions.

SQLite runs in WAL mode with synchronous=NORMAL (see docs/architecture.md for the measured figures);
write transactions on SQLite start with BEGIN IMMEDIATE so two processes queue on the busy timeout
instead of failing halfway through a transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from campaigns.core.exceptions import SchemaError
from campaigns.core.resources import migrations_dir

_BEGIN_KEY = "wacamp_begin"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


#: libpq TCP keepalives: a connection whose server vanished (no FIN, no RST) is noticed in about a
#: minute instead of when the kernel gives up (hours), and its error is then waited out like any outage.
POSTGRES_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def make_engine(
    url: str,
    *,
    busy_timeout_s: float = 30.0,
    pool_size: int = 5,
    max_overflow: int = 5,
    connect_timeout_s: int = 10,
) -> Engine:
    """An engine for a wacamp database URL (SQLite or PostgreSQL)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
            json_deserializer=json_loads,
        )
        _tune_sqlite(engine, busy_timeout_ms=int(busy_timeout_s * 1000))
        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        json_deserializer=json_loads,
        connect_args={"connect_timeout": connect_timeout_s, **POSTGRES_KEEPALIVES},
    )


def json_loads(text: str | bytes | memoryview) -> Any:
    """JSON columns as Python values: orjson (planning reads a million contacts' attributes), or
    the standard library for what orjson refuses and ``json`` reads (NaN, Infinity, lone surrogates).

    One difference stays: an integer past 64 bits comes back as a float (our JSON columns hold text).
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text if isinstance(text, str) else bytes(text))


def engine_from_settings(settings: Any) -> Engine:
    db = settings.database
    return make_engine(
        db.url,
        busy_timeout_s=db.busy_timeout_s,
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        connect_timeout_s=db.connect_timeout_s,
    )


def _tune_sqlite(engine: Engine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself, so we can choose IMMEDIATE for writers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.info.pop(_BEGIN_KEY, "BEGIN"))


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes the write lock up front on SQLite (no busy error halfway through)."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            conn.info[_BEGIN_KEY] = "BEGIN IMMEDIATE"
        with conn.begin():
            yield conn


def alembic_config(url: str) -> Config:
    """Alembic's config for our shipped migrations, pointed at a database URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "migrations/ has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to `revision` (the only way wacamp ever creates or changes tables)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def require_schema(engine: Engine) -> None:
    """Raise SchemaError naming the command to run when the schema is missing or behind."""
    try:
        current = current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise SchemaError(f"cannot open the database {safe_url(engine)}: {exc.orig}") from exc
    head = head_revision()
    if current is None:
        raise SchemaError(
            f"the database {safe_url(engine)} has no wacamp schema yet: run `wacamp db upgrade`"
        )
    if current != head:
        raise SchemaError(
            f"the database {safe_url(engine)} is at schema {current}, this wacamp needs {head}: "
            "run `wacamp db upgrade`"
        )


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)

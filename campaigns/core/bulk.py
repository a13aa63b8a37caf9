"""Bulk inserts that keep ``ON CONFLICT DO NOTHING``, at the speed the database can load rows.

`insert_ignoring_conflicts` writes many rows (dicts with the same keys) into a table inside the caller's
transaction; a row that breaks a unique constraint is left out, exactly as a plain
``INSERT … ON CONFLICT DO NOTHING`` would (the constraint decides, nothing is checked beforehand).
Columns with one value for every row (`constants`) go into the statement once instead of into every row.

- SQLite: one Core ``executemany``. A constant timestamp bound per row cost two type conversions per
  row, a third of the insert; rendered once as a literal it costs nothing.
- PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT … SELECT … ON CONFLICT DO NOTHING``
  (``RETURNING`` the column asked for), and the temporary table is dropped. Per row this is the
  driver's ``COPY`` encoder instead of a parameter set of an ``executemany``, and the server inserts
  the batch in one statement instead of one execution per row.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

_temp_names = itertools.count(1)


def sql_literal(conn: Connection, value: Any, type_: Any) -> Any:
    """`value` rendered once as a SQL literal of the connection's dialect (by its column type)."""
    rendered = sa.literal(value, type_).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    return sa.literal_column(str(rendered), type_=type_)


def insert_ignoring_conflicts(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    constants: Mapping[str, Any] | None = None,
    returning: sa.Column[Any] | None = None,
) -> list[Any] | None:
    """Insert `rows` plus the `constants` columns; rows that conflict are left out.

    With `returning`, PostgreSQL gives that column of the rows written; SQLite's ``executemany``
    cannot, so it gives None and the caller reads back what it needs (same transaction).
    """
    if not rows:
        return []
    fixed = dict(constants or {})
    if conn.dialect.name == "postgresql":
        return _copy_then_insert(conn, table, rows, constants=fixed, returning=returning)
    values = {name: sql_literal(conn, value, table.c[name].type) for name, value in fixed.items()}
    executemany_plain(conn, sqlite.insert(table).values(values).on_conflict_do_nothing(), rows)
    return None


def executemany_plain(conn: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """``conn.execute(stmt, rows)`` for an INSERT, without SQLAlchemy's per-row work on SQLite.

    On SQLite the statement is compiled once by SQLAlchemy and the rows go to the driver's
    ``executemany`` as tuples: SQLAlchemy's per-row parameter processing cost as much as SQLite's own
    insert. Only the columns whose type converts values (timestamps) are converted, by that type's own
    bind processor; everything else must already be what the column stores (JSON as its text,
    constants as `sql_literal`). Other databases, and statements that bind values of their own, take
    the ordinary path.
    """
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(stmt, list(rows))
        return
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(rows[0]))
    names = list(compiled.positiontup or [])
    if not set(names) <= set(rows[0]):  # a value bound in the statement itself: SQLAlchemy's way
        conn.execute(stmt, list(rows))
        return
    pick = operator.itemgetter(*names)
    values = [pick(row) for row in rows] if len(names) > 1 else [(pick(row),) for row in rows]
    converters = _converters(stmt.table, names, conn.dialect)
    if converters:
        values = [_converted(row, converters) for row in values]
    conn.exec_driver_sql(str(compiled), values)


def _converters(table: Any, names: list[str], dialect: Any) -> list[tuple[int, Any]]:
    """(position, bind processor) of the parameters whose column type converts values."""
    found = []
    for position, name in enumerate(names):
        column = table.c.get(name)
        processor = column.type.bind_processor(dialect) if column is not None else None
        if processor is not None:
            found.append((position, processor))
    return found


def _converted(row: tuple[Any, ...], converters: list[tuple[int, Any]]) -> tuple[Any, ...]:
    values = list(row)
    for position, processor in converters:
        values[position] = processor(values[position])
    return tuple(values)


def _copy_then_insert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    constants: Mapping[str, Any],
    returning: sa.Column[Any] | None,
) -> list[Any] | None:
    keys = list(rows[0])
    temp = sa.Table(
        f"wacamp_bulk_{table.name}_{next(_temp_names)}",
        sa.MetaData(),
        *(sa.Column(key, table.c[key].type) for key in keys),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",  # a rollback or a commit removes it in any case
    )
    temp.create(conn)
    _copy_rows(conn, temp.name, keys, rows)
    chosen = sa.select(
        *(temp.c[key] for key in keys),
        *(sa.literal(value, table.c[name].type) for name, value in constants.items()),
    )
    stmt = postgresql.insert(table).from_select([*keys, *constants], chosen).on_conflict_do_nothing()
    if returning is not None:
        written = list(conn.execute(stmt.returning(returning)).scalars())
    else:
        conn.execute(stmt)
        written = None
    temp.drop(conn)
    return written


def _copy_rows(conn: Connection, name: str, keys: list[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """``COPY`` the rows into the temporary table `name` on the transaction's own connection."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(key) for key in keys)
    )
    driver = conn.connection.driver_connection
    assert driver is not None, "a live connection"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[key] for key in keys])

"""Read a PostgreSQL table of the user's own through a column mapping (docs/algorithms.md §3,
"Tiles from a table of your own").

The table holds one window per row under the user's column names; the ``*_column`` keys of
the input block name them (:data:`~smt_tools.config._source.TABLE_COLUMN_KEYS`). Every name is
quoted as an identifier (:class:`psycopg.sql.Identifier`), never pasted into SQL; the one piece
of SQL text a user writes, ``where_clause``, is checked by
:func:`~smt_tools.catalog.where.check_where_clause` first. The read runs in one READ ONLY
transaction with a statement timeout, like :func:`~smt_tools.catalog.queries.load_tiles`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from smt_tools.catalog.engine import connect, db_failure, db_sqlstate, engine_label
from smt_tools.catalog.queries import _load_error
from smt_tools.catalog.where import check_where_clause
from smt_tools.config._source import OPTIONAL_TABLE_COLUMNS, TABLE_COLUMN_KEYS
from smt_tools.errors import ConfigError, EmptySelectionError, UnsafeQueryError

#: rows fetched per round trip of the server-side cursor
_FETCH_ROWS = 50_000
#: at most this many of the table's columns are listed in an error
_LISTED = 20


@contextmanager
def opened(url: str) -> Iterator[Engine]:
    """A one-connection engine on the database of a user's table, disposed afterwards."""
    engine = connect(url, single=True)
    try:
        yield engine
    finally:
        engine.dispose()


def database_label(engine: Engine) -> str:
    """The database as the messages name it (no password)."""
    return engine_label(engine)


def table_identifier(table: str) -> sql.Identifier:
    """``table`` (``name`` or ``schema.name``) as a quoted identifier."""
    parts = table.split(".")
    if len(parts) > 2 or any(not p for p in parts):
        raise UnsafeQueryError(f"table name {table!r} is not a valid [schema.]name")
    return sql.Identifier(*parts)


def resolve_columns(
    present: list[str], mapping: Mapping[str, str | None], table: str, key: str, label: str
) -> dict[str, str]:
    """{standard name: the table's column} of every column to read.

    present: the table's columns; mapping: {column key: name given or None}; key: the config
    block (``input.catalog``) for messages. A required column, or an optional one named by its
    key, that the table lacks is one :class:`ConfigError` line naming the table, the key, the
    value and the fix.
    """
    out: dict[str, str] = {}
    for ck, default in TABLE_COLUMN_KEYS.items():
        given = mapping.get(ck)
        name = given if given is not None else default
        if name in present:
            out[default] = name
            continue
        if given is None and ck in OPTIONAL_TABLE_COLUMNS:
            continue  # optional and not asked for
        shown = ", ".join(present[:_LISTED]) + (", …" if len(present) > _LISTED else "")
        how = f"{key}.{ck}: {name!r}" if given is not None else f"{key}.{ck} (default {name!r})"
        raise ConfigError(
            f"catalog {label}: table {table} has no column {name!r} for {how}; set "
            f"{key}.{ck} to one of its columns ({shown})"
        )
    return out


def read_user_table(
    engine: Engine,
    table: str,
    mapping: Mapping[str, str | None],
    *,
    key: str,
    where_clause: str | None = None,
    statement_timeout_s: float = 60.0,
) -> pd.DataFrame:
    """The rows of ``table`` as a frame with the standard column names (image_path, mask_path,
    row_off, col_off, patch_size, and class_dist / uniqueness_score / tile_id when read),
    values as the driver gives them (json as Python objects, arrays as lists), table order
    undefined (the caller sorts by tile id)."""
    rows: list[Any] = []

    def read(raw: Any, ident: sql.Identifier, where: sql.Composable, cols: dict[str, str]) -> None:
        query = sql.SQL("select {} from {}{}").format(
            sql.SQL(", ").join(
                sql.SQL("{} as {}").format(sql.Identifier(c), sql.Identifier(std))
                for std, c in cols.items()
            ),
            ident,
            where,
        )
        with raw.cursor(name="smt_user_table") as cur:  # server-side: batches of rows
            cur.execute(query)
            while batch := cur.fetchmany(_FETCH_ROWS):
                rows.extend(batch)

    cols = _in_session(
        engine, table, mapping, key, where_clause, statement_timeout_s, read, "reading"
    )
    if not rows:
        label = engine_label(engine)
        what = f"where {where_clause!r}" if where_clause is not None else "(the table is empty)"
        raise EmptySelectionError(f"catalog {label}: no row in {table} {what}; check the filter")
    return pd.DataFrame.from_records(rows, columns=list(cols))


def count_user_table(
    engine: Engine,
    table: str,
    mapping: Mapping[str, str | None],
    *,
    key: str,
    where_clause: str | None = None,
    statement_timeout_s: float = 60.0,
) -> tuple[int, dict[str, str]]:
    """(rows selected, {standard name: the table's column}) of ``table``: the dry run's check
    of the mapping and the filter (no row is read, only counted)."""
    counted: list[int] = []

    def count(raw: Any, ident: sql.Identifier, where: sql.Composable, _: dict[str, str]) -> None:
        with raw.cursor() as cur:
            cur.execute(sql.SQL("select count(*) from {}{}").format(ident, where))
            row = cur.fetchone()
            counted.append(int(row[0]) if row else 0)

    cols = _in_session(
        engine, table, mapping, key, where_clause, statement_timeout_s, count, "counting"
    )
    return counted[0], cols


def _in_session(
    engine: Engine,
    table: str,
    mapping: Mapping[str, str | None],
    key: str,
    where_clause: str | None,
    statement_timeout_s: float,
    work: Callable[[Any, sql.Identifier, sql.Composable, dict[str, str]], None],
    doing: str,
) -> dict[str, str]:
    """Run ``work(raw connection, table, WHERE, columns)`` in one READ ONLY transaction with a
    statement timeout, after the columns are resolved and the filter checked by the server;
    database errors are one line (:func:`~smt_tools.catalog.queries.load_tiles`' rules)."""
    label = engine_label(engine)
    if where_clause is not None:
        check_where_clause(where_clause)  # before any round trip
    ident = table_identifier(table)
    where = sql.SQL("") if where_clause is None else sql.SQL(" where (" + where_clause + ")")
    timeout_ms = max(1, int(statement_timeout_s * 1000))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("set transaction read only")
            conn.exec_driver_sql(f"set local statement_timeout = {timeout_ms}")
            conn.exec_driver_sql("set local standard_conforming_strings = on")
            raw = conn.connection.driver_connection
            assert raw is not None
            present = _columns(raw, ident, table, key, label)
            cols = resolve_columns(present, mapping, table, key, label)
            with raw.cursor() as cur:  # the server checks the filter, reads nothing
                cur.execute(sql.SQL("select 1 from {}{} limit 0").format(ident, where))
            work(raw, ident, where, cols)
            conn.rollback()
    except (DBAPIError, psycopg.Error) as exc:
        raise _load_error(exc, label, where_clause, statement_timeout_s) from None
    except SQLAlchemyError as exc:
        raise db_failure(exc, label, f"{doing} table {table}") from None
    return cols


def _columns(raw: Any, ident: sql.Identifier, table: str, key: str, label: str) -> list[str]:
    """The column names of ``table`` (a probe that reads no row); a missing table is one line."""
    try:
        with raw.cursor() as cur:
            cur.execute(sql.SQL("select * from {} limit 0").format(ident))
            return [d.name for d in cur.description or ()]
    except psycopg.Error as exc:
        if db_sqlstate(exc) in ("42P01", "3F000"):  # undefined table / schema
            raise ConfigError(
                f"catalog {label}: table {table} not found ({key}.table: {table!r}); give an "
                "existing table or view ([schema.]name) the connecting user can read"
            ) from None
        raise

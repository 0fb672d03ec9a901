"""Reads and run records: load tiles into a TileTable, record a run's per-tile results, stats."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from smt_tools.catalog.copy_read import copy_sql, read_tile_columns, tile_table
from smt_tools.catalog.engine import db_failure, db_sqlstate, engine_label, is_db_error
from smt_tools.catalog.migrate import require_schema
from smt_tools.catalog.runs import first_duplicate, result_copy_text
from smt_tools.catalog.store_types import RESULT_COLUMNS
from smt_tools.catalog.where import check_where_clause, safe_db_message
from smt_tools.errors import CatalogError, EmptySelectionError, SmtError, UnsafeQueryError
from smt_tools.tiletable import TileTable


def quote_identifier(name: str) -> str:
    """``name`` (optionally ``schema.name``) as a quoted SQL identifier."""
    parts = name.split(".")
    if not name or len(parts) > 2 or any(not p for p in parts):
        raise UnsafeQueryError(f"table name {name!r} is not a valid [schema.]name")
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def load_tiles(
    engine: Engine,
    table: str = "tile",
    where_clause: str | None = None,
    statement_timeout_s: float = 60.0,
    *,
    run_id: int | None = None,
    run_included_only: bool = False,
    categorical: bool = False,
) -> TileTable:
    """Tiles of the catalog (``table``: ``tile`` or a view/table with its columns) as a TileTable.

    The frame has every column of :data:`TILE_COLUMNS` (native bounds from the source image's
    transform and the window, ``crs`` from ``source_image``), rows sorted by ``tile_id``;
    counts (n, C) int64 are aligned to ``catalog_class`` (ascending class value; classes with no
    pixel in the selection dropped, as a local scan of the same tiles would). ``where_clause``
    filters rows of ``table`` (e.g. ``"nodata_ratio < 0.05"``): it must be ONE boolean
    expression (:func:`~smt_tools.catalog.where.check_where_clause` refuses anything else before
    it runs) and runs as ``WHERE (<clause>)`` in a READ ONLY transaction with a statement
    timeout and the connecting user's privileges; its errors never echo data values.
    ``run_id`` keeps only tiles with a ``tile_result`` row of that run (``run_included_only``:
    and not excluded), as a bound parameter. ``categorical``: group_id, image_path, mask_path
    and crs as pandas categories (sorted; one string per image, not per tile).
    """
    label = engine_label(engine)
    if where_clause is not None:
        check_where_clause(where_clause)  # before any round trip
    require_schema(engine)
    probe_sql, tile_sql, params = _tile_queries(table, where_clause, run_id, run_included_only)
    try:
        classes, sources, columns = _read_tile_rows(
            engine, probe_sql, tile_sql, params, statement_timeout_s
        )
    except (DBAPIError, psycopg.Error) as exc:
        raise _load_error(exc, label, where_clause, statement_timeout_s) from None
    except SQLAlchemyError as exc:
        raise db_failure(exc, label, "loading tiles") from None
    if not columns["id"].size:
        what = f"where {where_clause!r}" if where_clause is not None else "(no tiles ingested)"
        raise EmptySelectionError(
            f"catalog {label}: no tile in {table} {what}; check the filter or run `catalog ingest`"
        )
    return tile_table(columns, sources, classes, label, categorical)


_SOURCE_SQL = (
    "select id, group_id, image_path, mask_path, transform, crs, nodata_class, mask_band "
    "from source_image"
)


def _tile_queries(
    table: str, where_clause: str | None, run_id: int | None, run_included_only: bool
) -> tuple[str, str, dict[str, int]]:
    """(probe SQL, tile SQL, bound parameters) of :func:`load_tiles`: the filter and the run
    condition as the WHERE of ``table``; the probe reads nothing (the server checks the filter)."""
    ident = quote_identifier(table)
    conds: list[str] = []
    if where_clause is not None:
        conds.append("(" + where_clause.replace("%", "%%") + ")")  # % is psycopg's placeholder
    if run_id is not None:
        conds.append(
            "id in (select tile_id from tile_result where run_id = %(run_id)s"
            + (" and coalesce(excluded, false) = false" if run_included_only else "")
            + ")"
        )
    where = (" where " + " and ".join(conds)) if conds else ""
    params = {"run_id": int(run_id)} if run_id is not None else {}
    tile_sql = f"select * from {ident}{where}"  # read by binary COPY (catalog.copy_read)
    probe_sql = f"select 1 from {ident}{where} limit 0"
    return probe_sql, tile_sql, params


def _read_tile_rows(
    engine: Engine,
    probe_sql: str,
    tile_sql: str,
    params: Mapping[str, Any],
    statement_timeout_s: float,
) -> tuple[list[Any], list[Any], dict[str, np.ndarray]]:
    """(catalog classes, source images, tile columns) read in ONE read-only transaction with a
    statement timeout; the probe runs first so a bad filter fails before anything is read.
    The tiles are counted, then come through one binary COPY into arrays allocated once
    (:mod:`smt_tools.catalog.copy_read`), both in one REPEATABLE READ snapshot, so millions
    of tiles never sit in memory as Python objects."""
    timeout_ms = max(1, int(statement_timeout_s * 1000))
    with engine.connect() as conn:
        conn.exec_driver_sql("set transaction isolation level repeatable read, read only")
        conn.exec_driver_sql(f"set local statement_timeout = {timeout_ms}")
        # strings are tokenized as check_where_clause did ('\' is no escape character)
        conn.exec_driver_sql("set local standard_conforming_strings = on")
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:  # the server checks the filter is boolean, reads nothing
            cur.execute(probe_sql, params)
        classes = conn.execute(
            text("select position, class_value from catalog_class order by position")
        ).all()
        sources = conn.execute(text(_SOURCE_SQL)).all()
        with raw.cursor() as cur:  # the count and the COPY see the same snapshot
            row = cur.execute(f"select count(*) from ({tile_sql}) t", params).fetchone()
            n_rows = int(row[0]) if row else 0
            sql = copy_sql(tile_sql, len(classes))
            columns = read_tile_columns(cur, sql, params, n_rows, len(classes))
        conn.rollback()
    return list(classes), list(sources), columns


def _load_error(
    exc: BaseException, label: str, where_clause: str | None, statement_timeout_s: float
) -> SmtError:
    """The one-line error of a failed :func:`load_tiles` read: timeout, a filter the database
    rejected, a failure while the filter ran (no data values echoed), or a plain db failure."""
    state = db_sqlstate(exc)
    if state == "57014":
        return CatalogError(
            f"catalog {label}: loading tiles took longer than {statement_timeout_s:g} s "
            "(statement timeout); narrow the where clause or raise the timeout"
        )
    if where_clause is not None and (state.startswith(("42", "22")) or state == "25006"):
        return UnsafeQueryError(
            f"where clause {where_clause!r} rejected by the database: {safe_db_message(exc)}"
        )
    if where_clause is not None:  # the filter ran: its error may carry data values
        return CatalogError(f"catalog {label}: loading tiles failed: {safe_db_message(exc)}")
    return db_failure(exc, label, "loading tiles")


def _rows(engine: Engine, sql: str, what: str) -> list[Any]:
    """All rows of one read-only query; a database error is one line naming ``what``."""
    label = engine_label(engine)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    except SQLAlchemyError as exc:
        raise db_failure(exc, label, what) from None


def class_names(engine: Engine) -> dict[int, str]:
    """Class value -> name from ``catalog_class`` (classes without a name are left out)."""
    sql = "select class_value, name from catalog_class where name is not null"
    return {int(v): str(n) for v, n in _rows(engine, sql, "reading class names")}


def class_colours(engine: Engine) -> dict[int, str]:
    """Class value -> colour text from ``catalog_class`` (as given to ``--class-names``;
    classes without a colour are left out)."""
    sql = "select class_value, colour from catalog_class where colour is not null"
    return {int(v): str(c) for v, c in _rows(engine, sql, "reading class colours")}


def record_run(
    engine: Engine,
    command: str,
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
    results: pd.DataFrame,
    started_at: datetime,
    finished_at: datetime,
    *,
    map_style: str | None = None,
) -> int:
    """Insert a ``run`` row and its ``tile_result`` rows in one transaction; return run id. The
    rows go into the run's own partition ``tile_result_run_<id>`` (COPY, then ATTACH PARTITION).

    results: column ``tile_id`` plus any of :data:`RESULT_COLUMNS` (other columns ignored).
    Tile ids unknown to the catalog are an error (nothing is written). The same transaction
    creates the run's view ``run_<id>_<kind>`` (:mod:`smt_tools.catalog.layers`) with
    ``map_style`` (QGIS .qml text) as its default QGIS style.
    """
    from smt_tools._version import __version__
    from smt_tools.catalog.layers import create_run_layer

    label = engine_label(engine)
    if "tile_id" not in results.columns:
        raise CatalogError("record_run: results need a tile_id column")
    dup = first_duplicate(results["tile_id"])
    if dup is not None:
        raise CatalogError(f"record_run: tile_id {dup} appears twice in the results")
    columns = [c for c in RESULT_COLUMNS if c in results.columns]
    require_schema(engine)
    try:
        with engine.begin() as conn:
            run_id = int(
                conn.execute(
                    text(
                        "insert into run (command, config, started_at, finished_at, tool_version, "
                        "summary) values (:c, cast(:cfg as jsonb), :s, :f, :v, cast(:sm as jsonb)) "
                        "returning id"
                    ),
                    {
                        "c": command,
                        "cfg": json.dumps(dict(config), default=str),
                        "s": started_at,
                        "f": finished_at,
                        "v": __version__,
                        "sm": json.dumps(dict(summary), default=str),
                    },
                ).scalar_one()
            )
            raw = conn.connection.driver_connection
            assert raw is not None
            part = f'"tile_result_run_{run_id}"'
            copy = f"COPY {part} ({', '.join(['run_id', 'tile_id', *columns])}) FROM STDIN (FREEZE)"
            with raw.cursor() as cur:
                # the run's partition, filled bare (no index, no FK check per row), then attached:
                # indexes built once, foreign keys checked in one query
                cur.execute(f"CREATE TABLE {part} (LIKE tile_result INCLUDING DEFAULTS)")
                cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
                with cur.copy(copy) as cp:
                    for chunk in result_copy_text(run_id, results, columns):
                        cp.write(chunk)
                cur.execute(
                    f"ALTER TABLE tile_result ATTACH PARTITION {part} FOR VALUES IN ({run_id})"
                )
                cur.execute(f"COMMENT ON TABLE {part} IS 'Rows of run {run_id} (dropped with it).'")
            create_run_layer(conn, run_id, command, map_style, f"smt-tools {command}")
    except SmtError:
        raise
    except Exception as exc:
        if not is_db_error(exc):
            raise
        hint = (
            "; some tile ids are not in the catalog (ingest their source images first)"
            if not isinstance(exc, SQLAlchemyError) and "foreign key" in str(exc)
            else ""
        )
        raise db_failure(exc, label, "recording the run", f"{hint}; nothing was written") from None
    return run_id


def count_rows(engine: Engine) -> tuple[int, int]:
    """(tiles, source images) in the catalog."""
    sql = "select (select count(*) from tile), (select count(*) from source_image)"
    row = _rows(engine, sql, "counting tiles")[0]
    return int(row[0]), int(row[1])


def catalog_stats(engine: Engine) -> dict[str, Any]:
    """Counts for ``catalog stats``: tiles, source images, groups, runs, and per class
    (value, name, colour, pixels); plus total window pixels and valid pixels."""
    label = engine_label(engine)
    require_schema(engine)
    try:
        with engine.connect() as conn:
            head = conn.execute(
                text(
                    "select (select count(*) from tile), (select count(*) from source_image), "
                    "(select count(distinct group_id) from source_image), (select count(*) from run), "
                    "(select coalesce(sum(height::bigint * width), 0) from tile), "
                    "(select coalesce(sum(valid_pixels), 0) from tile), "
                    "(select max(ingested_at) from source_image)"
                )
            ).one()
            per_class = conn.execute(
                text(
                    "select c.class_value, c.name, c.colour, coalesce(s.px, 0) from catalog_class c "
                    "left join (select o.pos, sum(o.v) as px from tile, "
                    "unnest(class_counts) with ordinality as o(v, pos) group by o.pos) s "
                    "on s.pos = c.position order by c.class_value"
                )
            ).all()
    except SQLAlchemyError as exc:
        raise db_failure(exc, label, "reading stats") from None
    return {
        "tiles": int(head[0]),
        "source_images": int(head[1]),
        "groups": int(head[2]),
        "runs": int(head[3]),
        "window_pixels": int(head[4]),
        "valid_pixels": int(head[5]),
        "last_ingest": head[6],
        "classes": [
            {"class_value": int(r[0]), "name": r[1], "colour": r[2], "pixels": int(r[3])}
            for r in per_class
        ],
    }


def server_versions(engine: Engine) -> tuple[str, str | None]:
    """(PostgreSQL version, PostGIS version or None when the extension is not installed)."""
    sql = (
        "select current_setting('server_version'), "
        "(select extversion from pg_extension where extname = 'postgis')"
    )
    row = _rows(engine, sql, "reading the server version")[0]
    return str(row[0]), (str(row[1]) if row[1] is not None else None)

"""A PostGIS table as the map layer of a hybrid coreset step: the share of each tile it covers.

The intersection runs in SQL (docs/algorithms.md §10, "Hybrid selection"): the tile footprints
(lon/lat) are transformed into the layer's SRID, so the layer's own spatial index finds the
features; ``where`` (an attribute filter, checked like every user clause by
:func:`smt_tools.catalog.where.check_where_clause`) keeps some of them. A feature that only
touches a tile's edge does not count. Shares are areas in the layer's SRID. Runs in one READ ONLY
transaction with a statement timeout; nothing in the catalog changes.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from smt_tools.catalog.engine import db_failure, engine_label, is_db_error
from smt_tools.catalog.queries import quote_identifier
from smt_tools.catalog.where import check_where_clause
from smt_tools.errors import CatalogError, SmtError

_COVER_SQL = """
select i.pos,
       st_area(st_intersection(i.fp, st_unaryunion(st_collect(st_makevalid(l.{geom})))))
           / nullif(st_area(i.fp), 0)
from (select s.pos, st_transform(t.footprint, :srid) as fp
      from unnest(cast(:ids as bigint[])) with ordinality as s(tile_id, pos)
      join tile t on t.id = s.tile_id
      where t.footprint is not null) i
join {table} l on st_intersects(l.{geom}, i.fp) and not st_touches(l.{geom}, i.fp)
where ({where})
group by i.pos, i.fp
"""


def _geometry_column(conn: Connection, table: str, given: str | None) -> str:
    """The layer's geometry column: ``given``, else its only one (from ``geometry_columns``)."""
    if given is not None:
        return given
    schema, _, name = table.rpartition(".")
    rows = conn.execute(
        text(
            "select f_geometry_column from geometry_columns where f_table_name = :t "
            "and f_table_schema = coalesce(nullif(:s, ''), current_schema())"
        ),
        {"t": name, "s": schema},
    ).all()
    if len(rows) != 1:
        found = ", ".join(str(r[0]) for r in rows) or "none"
        raise CatalogError(
            f"table {table} must have exactly one geometry column (found: {found}); name it "
            "with geometry_column in the vector step, or check the table name"
        )
    return str(rows[0][0])


def _check_tiles_known(conn: Connection, ids: np.ndarray, label: str) -> None:
    """Every id must be a row of the catalog's ``tile`` table (a user's own table is not:
    its tiles would silently meet no feature)."""
    known = conn.execute(
        text("select count(*) from tile t where t.id = any(cast(:ids as bigint[]))"),
        {"ids": ids.tolist()},
    ).scalar_one()
    if int(known) != np.unique(ids).size:
        raise CatalogError(
            f"catalog {label}: {np.unique(ids).size - int(known)} of the {np.unique(ids).size} "
            "tiles are not in its tile table, so a table layer cannot be intersected with them; "
            "give the vector step a file (path:) instead of table:"
        )


def vector_overlap_postgis(
    engine: Engine,
    tile_ids: np.ndarray,
    table: str,
    geometry_column: str | None = None,
    where: str | None = None,
    statement_timeout_s: float = 300.0,
) -> np.ndarray:
    """(n,) float64: the share of each tile (``tile.id`` in ``tile_ids``) that the features of
    ``table`` passing ``where`` cover, NaN where none meets the tile's interior (or the tile
    has no footprint)."""
    ids = np.asarray(tile_ids, dtype=np.int64)
    qtable = quote_identifier(table)
    clause = check_where_clause(where) if where else "true"
    label = engine_label(engine)
    out = np.full(ids.size, np.nan, dtype=np.float64)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("set transaction read only")
            conn.exec_driver_sql(f"set local statement_timeout = {int(statement_timeout_s * 1000)}")
            _check_tiles_known(conn, ids, label)
            geom = quote_identifier(_geometry_column(conn, table, geometry_column))
            srid = conn.execute(
                text(f"select st_srid({geom}) from {qtable} where {geom} is not null limit 1")
            ).scalar_one_or_none()
            if srid is None:
                return out
            if int(srid) <= 0:
                raise CatalogError(
                    f"table {table}: its geometries have no SRID; set one "
                    f"(select UpdateGeometrySRID(...)) so the tiles can be placed on it"
                )
            rows = conn.execute(
                text(_COVER_SQL.format(table=qtable, geom=geom, where=clause)),
                {"srid": int(srid), "ids": ids.tolist()},
            ).all()
    except SmtError:
        raise
    except Exception as exc:
        if not is_db_error(exc):
            raise
        raise db_failure(exc, label, f"intersecting the tiles with table {table}") from None
    for pos, share in rows:
        out[int(pos) - 1] = min(1.0, float(share)) if share is not None else 0.0
    return out

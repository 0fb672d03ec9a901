"""The split's spatial buffer computed in PostGIS (catalog input).

Same rule and same distance method as :func:`smt_tools.splits.buffer.buffer_exclusions`
(:func:`smt_tools.splits.distance.distance_method` chooses it):

- planar: tiles in the metric CRS are the exact boxes of their native window
  (``ST_MakeEnvelope`` from ``source_image.transform`` and the window, the same numbers the tile
  table carries); tiles in any other CRS use their stored lon/lat footprint ``ST_Transform``-ed
  into it (the shapely path reprojects the same densified rings);
- geodesic (``geodesic=True``): the stored lon/lat footprints as ``geography``, so
  ``ST_DWithin`` measures on the WGS 84 spheroid (the shapely path measures the same rings in a
  local tangent plane per pair; the two agree to millimetres).

Pairs come from ``ST_DWithin`` on a GiST-indexed temporary table, so both backends give the same
answer on the same tiles. Tiles without a CRS (NULL footprint) must not be passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pyproj import CRS
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from smt_tools.catalog.engine import db_failure, engine_label, is_db_error
from smt_tools.catalog.queries import quote_identifier
from smt_tools.errors import CatalogError, InputDataError, SmtError

__all__ = ["buffer_exclusions_postgis", "srid_of"]


def srid_of(crs: str) -> int:
    """EPSG code of ``crs`` (PostGIS SRID); InputDataError when it has none."""
    try:
        code = CRS.from_user_input(crs).to_epsg()
    except Exception as exc:
        raise InputDataError(f"unknown CRS {crs[:60]!r}: {exc}") from None
    if code is None:
        raise InputDataError(
            f"the distance CRS {crs[:60]!r} has no EPSG code, which PostGIS needs; "
            "use tiles in an EPSG-coded projected CRS"
        )
    return int(code)


_GEOM_SQL = """
create temp table smt_split_geom on commit drop as
select f.pos, f.fold, t.source_image_id as src,
       case when s.crs = :native then
         ST_MakeEnvelope(
           least(s.transform[3] + s.transform[1] * t.col_off + s.transform[2] * t.row_off,
                 s.transform[3] + s.transform[1] * (t.col_off + t.width) + s.transform[2] * t.row_off,
                 s.transform[3] + s.transform[1] * t.col_off + s.transform[2] * (t.row_off + t.height),
                 s.transform[3] + s.transform[1] * (t.col_off + t.width) + s.transform[2] * (t.row_off + t.height)),
           least(s.transform[6] + s.transform[4] * t.col_off + s.transform[5] * t.row_off,
                 s.transform[6] + s.transform[4] * (t.col_off + t.width) + s.transform[5] * t.row_off,
                 s.transform[6] + s.transform[4] * t.col_off + s.transform[5] * (t.row_off + t.height),
                 s.transform[6] + s.transform[4] * (t.col_off + t.width) + s.transform[5] * (t.row_off + t.height)),
           greatest(s.transform[3] + s.transform[1] * t.col_off + s.transform[2] * t.row_off,
                 s.transform[3] + s.transform[1] * (t.col_off + t.width) + s.transform[2] * t.row_off,
                 s.transform[3] + s.transform[1] * t.col_off + s.transform[2] * (t.row_off + t.height),
                 s.transform[3] + s.transform[1] * (t.col_off + t.width) + s.transform[2] * (t.row_off + t.height)),
           greatest(s.transform[6] + s.transform[4] * t.col_off + s.transform[5] * t.row_off,
                 s.transform[6] + s.transform[4] * (t.col_off + t.width) + s.transform[5] * t.row_off,
                 s.transform[6] + s.transform[4] * t.col_off + s.transform[5] * (t.row_off + t.height),
                 s.transform[6] + s.transform[4] * (t.col_off + t.width) + s.transform[5] * (t.row_off + t.height)),
           :srid)
       else ST_Transform(t.footprint, :srid) end as g
from smt_split_fold f
join {table} t on t.id = f.tile_id
join source_image s on s.id = t.source_image_id
"""

# geodesic: the stored lon/lat footprint as geography (spheroid distances); gm keeps the geometry
# for the per-image envelopes below
_GEOM_GEODESIC_SQL = """
create temp table smt_split_geom on commit drop as
select f.pos, f.fold, t.source_image_id as src, t.footprint as gm, t.footprint::geography as g
from smt_split_fold f
join {table} t on t.id = f.tile_id
"""

# Geodesic, fast path: every pre-filter runs on the lon/lat GEOMETRY (GiST index, cheap) with a
# radius in degrees that can only be too large: a ground distance d spans at most
# d / (110574 m * cos(latmax)) degrees (110574 m: the shortest degree of latitude; a degree of
# longitude is longer than 110574 m * cos(lat)); plus _SLACK_M and 1 %. Only the surviving pairs
# are measured on the spheroid (geography). Not used across the antimeridian or near the poles.
_IMAGES_LONLAT_SQL = """
create temp table smt_split_img on commit drop as
select src, fold, ST_Envelope(ST_Collect(gm)) as env
from smt_split_geom group by src, fold
"""

_PAIRS_LONLAT_SQL = """
with near as materialized (
  select i.src as si, i.fold as fi, j.src as sj, j.fold as fj, j.env as envj
  from smt_split_img i
  join smt_split_img j on i.fold >= 0 and i.fold <> j.fold and ST_DWithin(i.env, j.env, :deg)
), cand as materialized (
  select a.pos, a.gm, a.g, n.sj, n.fj
  from near n
  join smt_split_geom a on a.src = n.si and a.fold = n.fi and ST_DWithin(a.gm, n.envj, :deg)
)
select distinct c.pos, c.fj
from cand c
join smt_split_geom b on ST_DWithin(c.gm, b.gm, :deg) and b.src = c.sj and b.fold = c.fj
  and ST_DWithin(c.g, b.g, :buffer)
"""

# Geodesic, general path (tiles near the antimeridian or a pole): geography everywhere. The
# lon/lat envelope of each (source image, fold) is segmentized (0.01 degree, about 1 km) so that
# its geography edges follow the parallels to centimetres; the pre-filters add _SLACK_M to the
# buffer, so no pair is missed, and the last join is exact.
_IMAGES_GEODESIC_SQL = """
create temp table smt_split_img on commit drop as
select src, fold, ST_Segmentize(ST_Envelope(ST_Collect(gm)), 0.01)::geography as env
from smt_split_geom group by src, fold
"""
_SLACK_M = 1.0
#: the fast geodesic path needs tiles within this latitude and a longitude span under 180°
_LONLAT_MAX_LAT = 80.0

# Envelope of each (source image, fold): a cheap first filter so that only tiles near an image
# of another fold probe the tile index (most tiles are far inside their own image).
_IMAGES_SQL = """
create temp table smt_split_img on commit drop as
select src, fold, ST_Envelope(ST_Collect(g)) as env
from smt_split_geom group by src, fold
"""

_PAIRS_SQL = """
with near as materialized (
  select i.src as si, i.fold as fi, j.src as sj, j.fold as fj, j.env as envj
  from smt_split_img i
  join smt_split_img j on i.fold >= 0 and i.fold <> j.fold and ST_DWithin(i.env, j.env, :reach)
), cand as materialized (
  select a.pos, a.g, n.sj, n.fj
  from near n
  join smt_split_geom a on a.src = n.si and a.fold = n.fi and ST_DWithin(a.g, n.envj, :reach)
)
select distinct c.pos, c.fj
from cand c
join smt_split_geom b on ST_DWithin(c.g, b.g, :buffer) and b.src = c.sj and b.fold = c.fj
"""


def _lonlat_radius(conn: Connection, buffer_m: float) -> float | None:
    """The degree radius of the fast geodesic path, or None when the tiles are too close to a
    pole or span 180° of longitude or more (antimeridian): then geography is used throughout."""
    row = conn.execute(
        text(
            "select min(ST_XMin(gm)), max(ST_XMax(gm)), "
            "max(greatest(abs(ST_YMin(gm)), abs(ST_YMax(gm)))) from smt_split_geom"
        )
    ).one()
    if row[0] is None:
        return None
    lon_min, lon_max, lat_max = float(row[0]), float(row[1]), float(row[2])
    if lon_max - lon_min >= 180.0 or lat_max > _LONLAT_MAX_LAT:
        return None
    metres_per_degree = 110_574.0 * math.cos(math.radians(lat_max + 0.1))
    return (buffer_m + _SLACK_M) * 1.01 / metres_per_degree


def buffer_exclusions_postgis(
    engine: Engine,
    tile_ids: np.ndarray,
    fold: np.ndarray,
    buffer_m: float,
    n_splits: int,
    metric_crs: str,
    table: str = "tile",
    *,
    geodesic: bool = False,
) -> np.ndarray:
    """PostGIS twin of :func:`smt_tools.splits.buffer.buffer_exclusions`.

    tile_ids: (n,) int64 ``tile.id`` values of tiles WITH a CRS; fold: (n,) int64 (``-1`` =
    holdout test); metric_crs: the planar distance CRS (``"EPSG:xxxx"``, see
    :func:`smt_tools.splits.distance_method`), ignored when ``geodesic`` (spheroid distances
    between the stored lon/lat footprints).
    Returns (n, n_splits + 1) bool exclusions, rows aligned with ``tile_ids``. Runs in one
    transaction on temporary tables (dropped at commit); nothing in the catalog changes.
    """
    if buffer_m < 0:
        raise InputDataError(f"buffer_m must be >= 0; got {buffer_m}")
    ids = np.asarray(tile_ids, dtype=np.int64)
    fold = np.asarray(fold, dtype=np.int64)
    if len(ids) != len(fold):
        raise InputDataError(f"{len(ids)} tile ids but {len(fold)} fold values")
    srid = 4326 if geodesic else srid_of(metric_crs)
    label = engine_label(engine)
    payload = "".join(
        f"{int(t)}\t{int(f)}\t{p}\n" for p, (t, f) in enumerate(zip(ids, fold, strict=True))
    ).encode()
    try:
        with engine.begin() as conn:
            # JIT compilation costs more than these short queries gain from it
            conn.execute(text("set local jit = off"))
            _load_folds(conn, payload)
            _build_geometries(conn, table, geodesic, metric_crs, srid)
            _check_geometries(conn, label, table, len(ids))
            rows = _near_pairs(conn, float(buffer_m), geodesic)
    except SmtError:
        raise
    except Exception as exc:
        if not is_db_error(exc):
            raise
        raise db_failure(exc, label, "spatial buffer query") from None
    return _exclusions(rows, len(ids), n_splits)


def _load_folds(conn: Connection, payload: bytes) -> None:
    """Temporary table ``smt_split_fold`` (tile_id, fold, pos) filled by COPY from ``payload``."""
    conn.execute(
        text(
            "create temp table smt_split_fold (tile_id bigint primary key, "
            "fold integer not null, pos integer not null) on commit drop"
        )
    )
    raw = conn.connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cur,
        cur.copy("COPY smt_split_fold (tile_id, fold, pos) FROM STDIN") as cp,
    ):
        cp.write(payload)


def _build_geometries(
    conn: Connection, table: str, geodesic: bool, metric_crs: str, srid: int
) -> None:
    """Temporary table ``smt_split_geom``: each tile's geometry in the distance space."""
    if geodesic:
        conn.execute(text(_GEOM_GEODESIC_SQL.format(table=quote_identifier(table))))
    else:
        conn.execute(
            text(_GEOM_SQL.format(table=quote_identifier(table))),
            {"native": metric_crs, "srid": srid},
        )


def _check_geometries(conn: Connection, label: str, table: str, n: int) -> None:
    """CatalogError when a tile is missing from ``table`` or has no footprint."""
    found = int(conn.execute(text("select count(*) from smt_split_geom")).scalar_one())
    if found != n:
        raise CatalogError(
            f"catalog {label}: {n - found} of {n} tiles are not in table "
            f"{table!r}; re-run the split on the current catalog"
        )
    nulls = int(
        conn.execute(text("select count(*) from smt_split_geom where g is null")).scalar_one()
    )
    if nulls:
        raise CatalogError(
            f"catalog {label}: {nulls} tiles have no footprint (their source raster has no "
            "CRS); they cannot be measured in metres"
        )


def _near_pairs(conn: Connection, buffer_m: float, geodesic: bool) -> list[Any]:
    """(pos, other fold) rows: tile ``pos`` lies within ``buffer_m`` of a tile of fold
    ``other``. Picks the planar, fast geodesic or general geodesic queries, indexes the
    geometry table, builds the per-image envelopes and runs the pair query."""
    params: dict[str, float] = {"buffer": buffer_m, "reach": buffer_m}
    images_sql, pairs_sql = _IMAGES_SQL, _PAIRS_SQL
    if geodesic:
        deg = _lonlat_radius(conn, buffer_m)
        if deg is not None:  # fast: geometry pre-filters, spheroid on the survivors
            images_sql, pairs_sql = _IMAGES_LONLAT_SQL, _PAIRS_LONLAT_SQL
            params["deg"] = deg
        else:
            images_sql = _IMAGES_GEODESIC_SQL
            params["reach"] = buffer_m + _SLACK_M
    index_col = "gm" if "deg" in params else "g"
    conn.execute(text(f"create index on smt_split_geom using gist ({index_col})"))
    conn.execute(text("analyze smt_split_geom"))
    conn.execute(text(images_sql))
    conn.execute(text("analyze smt_split_img"))
    return list(conn.execute(text(pairs_sql), params).all())


def _exclusions(rows: Sequence[Any], n: int, n_splits: int) -> np.ndarray:
    """(n, n_splits + 1) bool exclusions from the pair rows (column n_splits: holdout test)."""
    out = np.zeros((n, n_splits + 1), dtype=bool)
    if rows:
        pos = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        other = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        # each row: tile `pos` trains while fold `other` is evaluated (-1 = holdout test set)
        col = np.where(other < 0, n_splits, other)
        out[pos, col] = True
    return out

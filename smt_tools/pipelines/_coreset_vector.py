"""The vector step of a hybrid selection: how much of each tile a map layer covers.

The layer is a GeoPackage / GeoJSON file read with pyogrio (``where``: OGR SQL attribute filter)
or, with the catalog as input, a PostGIS table (the store intersects it in SQL). In memory the
features are reprojected into each tile CRS (tiles may lie in several UTM zones) with pyproj and
intersected with the tile rectangles through a shapely STRtree (docs/algorithms.md §10,
"Hybrid selection").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smt_tools.errors import ConfigError, InputDataError

if TYPE_CHECKING:
    from smt_tools.catalog.store import TileStore
    from smt_tools.config._hybrid import HybridStep


def read_layer(path: Path, layer: str | None, where: str | None, key: str) -> tuple[Any, str]:
    """(geometries (m,) shapely array, CRS text) of the features of ``path`` that ``where``
    keeps; ``key`` names the config key in one-line errors."""
    import pyogrio
    import shapely
    from pyogrio.errors import DataLayerError, DataSourceError, FieldError

    if not path.is_file():
        raise InputDataError(f"{key}.path: {path} not found; give a GeoPackage or GeoJSON file")
    try:
        meta, _fids, wkb, _fields = pyogrio.raw.read(
            path, layer=layer, where=where, columns=[], read_geometry=True
        )
    except (DataLayerError, FieldError, ValueError) as exc:  # GeoJSON: a ValueError
        what = f"where {where!r}" if where else f"layer {layer!r}"
        raise ConfigError(
            f"{key}: {path}: {what} does not work ({_first_line(exc)}); fix the "
            "attribute filter (OGR SQL, e.g. class = 'building') or the layer name"
        ) from None
    except DataSourceError as exc:
        raise InputDataError(
            f"{key}.path: {path} is not a readable vector file ({_first_line(exc)})"
        ) from None
    crs = meta.get("crs")
    if not crs:
        raise InputDataError(
            f"{key}.path: {path} has no CRS; set it (e.g. ogr2ogr -a_srs EPSG:4326 out.gpkg in.gpkg)"
        )
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, dtype=object)
    keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    return shapely.make_valid(geoms[keep]), str(crs)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _transformer(src: str, dst: str) -> Callable[[np.ndarray], np.ndarray]:
    from pyproj import Transformer

    from smt_tools.geo import parse_crs

    tr = Transformer.from_crs(parse_crs(src), parse_crs(dst), always_xy=True)

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([np.asarray(x), np.asarray(y)])

    return apply


#: features in one tile unioned in the vectorised grid (more: one tile at a time)
_GRID = 32


def covered_shares(
    boxes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    geoms: Any,
) -> np.ndarray:
    """(n,) float64: the share of each rectangle (minx, miny, maxx, maxy: (n,) each, in the
    geometries' CRS) that the union of ``geoms`` covers; NaN where no geometry meets the
    rectangle's interior (a feature that only touches its edge does not count)."""
    import shapely

    minx, miny, maxx, maxy = boxes
    n = minx.size
    out = np.full(n, np.nan, dtype=np.float64)
    if n == 0 or len(geoms) == 0:
        return out
    rect = shapely.box(minx, miny, maxx, maxy)
    tile_idx, geom_idx = shapely.STRtree(geoms).query(rect, predicate="intersects")
    pieces = shapely.intersection(rect[tile_idx], geoms[geom_idx])
    area = shapely.area(pieces)
    # interiors meet: a piece of area > 0 (polygons), else not just a touch (points, lines)
    inner = area > 0
    flat = ~inner & (shapely.get_dimensions(geoms[geom_idx]) < 2)
    inner[flat] = ~shapely.touches(rect[tile_idx[flat]], geoms[geom_idx[flat]])
    tile_idx, pieces, area = tile_idx[inner], pieces[inner], area[inner]
    if tile_idx.size == 0:
        return out
    order = np.argsort(tile_idx, kind="stable")
    tile_idx, pieces, area = tile_idx[order], pieces[order], area[order]
    first = np.r_[True, tile_idx[1:] != tile_idx[:-1]]
    tiles = tile_idx[first]
    k = np.cumsum(first) - 1  # group of each piece
    rank = np.arange(tile_idx.size) - np.flatnonzero(first)[k]  # position inside its group
    covered = np.bincount(k, weights=area)
    sizes = np.bincount(k)
    # several features in a tile: the area of their union, not the sum; up to _GRID of them
    # in one vectorised union per row of a (tiles, pieces) grid, more one tile at a time
    few = np.flatnonzero((sizes > 1) & (sizes <= _GRID))
    if few.size:
        row = np.full(tiles.size, -1)
        row[few] = np.arange(few.size)
        sel = row[k] >= 0
        grid = np.full((few.size, int(sizes[few].max())), None, dtype=object)
        grid[row[k[sel]], rank[sel]] = pieces[sel]
        covered[few] = shapely.area(shapely.union_all(grid, axis=1))
    for g in np.flatnonzero(sizes > _GRID):
        covered[g] = shapely.area(shapely.union_all(pieces[k == g]))
    out[tiles] = np.minimum(1.0, covered / shapely.area(rect[tiles]))
    return out
    pieces = shapely.intersection(rect[tile_idx], geoms[geom_idx])
    order = np.argsort(tile_idx, kind="stable")
    tile_idx, pieces = tile_idx[order], pieces[order]
    starts = np.flatnonzero(np.r_[True, tile_idx[1:] != tile_idx[:-1]])
    ends = np.r_[starts[1:], tile_idx.size]
    area = shapely.area(pieces)
    for s, e in zip(starts, ends, strict=True):
        t = tile_idx[s]
        covered = area[s] if e - s == 1 else shapely.area(shapely.union_all(pieces[s:e]))
        out[t] = min(1.0, float(covered) / float(shapely.area(rect[t])))
    return out


def layer_shares(frame: pd.DataFrame, geoms: Any, layer_crs: str) -> tuple[np.ndarray, int]:
    """(covered share of every tile (n,) float64, NaN: not met; tiles without a CRS) for a
    layer in ``layer_crs``: the features are reprojected into each tile CRS in turn (only those
    near that CRS's tiles, found with an STRtree in the layer's own CRS)."""
    import shapely
    from pyproj import Transformer

    from smt_tools.geo import crs_strings, parse_crs

    out = np.full(len(frame), np.nan, dtype=np.float64)
    crs_col = crs_strings(frame)
    bounds = [frame[c].to_numpy(np.float64) for c in ("minx", "miny", "maxx", "maxy")]
    tree = shapely.STRtree(geoms) if len(geoms) else None
    for crs, idx in pd.Series(crs_col).groupby(crs_col, sort=False).indices.items():
        if not crs or tree is None:
            continue
        b = [v[idx] for v in bounds]
        crs = str(crs)
        back = Transformer.from_crs(parse_crs(crs), parse_crs(layer_crs), always_xy=True)
        area = back.transform_bounds(
            float(b[0].min()), float(b[1].min()), float(b[2].max()), float(b[3].max()), 21
        )
        near = tree.query(shapely.box(*area))
        if near.size == 0:
            continue
        local = shapely.transform(geoms[near], _transformer(layer_crs, crs))
        out[idx] = covered_shares((b[0], b[1], b[2], b[3]), shapely.make_valid(local))
    return out, int((crs_col == "").sum())


def vector_step_shares(
    frame: pd.DataFrame,
    step: HybridStep,
    key: str,
    store: TileStore | None,
    eligible: np.ndarray,
) -> tuple[np.ndarray, list[str]]:
    """(covered share of each tile (n,) float64, NaN: not met; warning lines) for the vector
    step ``step`` (``key``: its config key, e.g. ``coreset.hybrid.steps[0]``)."""
    from smt_tools.pipelines._coreset_input import BOUNDS_COLUMNS

    if step.table is not None:
        return _table_shares(frame, step, key, store)
    missing = [c for c in BOUNDS_COLUMNS if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{key}: a vector step needs the tile bounds; the input lacks {', '.join(missing)}"
        )
    assert step.path is not None
    geoms, crs = read_layer(Path(step.path), step.layer, step.where, key)
    shares, no_crs = layer_shares(frame, geoms, crs)
    notes = []
    if no_crs and (eligible & ~np.isfinite(shares)).any():
        notes.append(
            f"{key}: {no_crs} tiles have no CRS (pixel-space rasters): the map layer "
            f"{step.path} cannot cover them"
        )
    return shares, notes


def _table_shares(
    frame: pd.DataFrame, step: HybridStep, key: str, store: TileStore | None
) -> tuple[np.ndarray, list[str]]:
    """The covered shares computed by the catalog (PostGIS) from ``step.table``."""
    if store is None or store.kind != "postgis":
        raise ConfigError(
            f"{key}.table {step.table!r} needs a PostGIS catalog as the input; with a "
            "Parquet tile table or a CSV, export the layer to a file and give path instead"
        )
    assert step.table is not None
    tile_ids = frame["tile_id"].to_numpy(np.int64)
    shares = store.vector_overlap(tile_ids, step.table, step.geometry_column, step.where)
    assert shares is not None  # a PostGIS store
    return shares, []

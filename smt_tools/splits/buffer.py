"""Spatial buffer between folds (ALGORITHMS.md §8), with shapely STRtree.

A training tile whose footprint lies within ``buffer_m`` metres of a validation tile's footprint
(from ANY source image, e.g. a second acquisition of the same place) is dropped from that fold's
training set. Distances are planar, in metres, in one common projected CRS
(:func:`metric_crs`): the tiles' own CRS when they all share one projected metric CRS (the usual
case), else the UTM zone of the tiles' centre. The PostGIS backend
(:mod:`smt_tools.catalog.spatial`) measures in the same CRS, so both give the same answer.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from smt_tools.errors import InputDataError
from smt_tools.geo import footprints_lonlat

__all__ = [
    "TEST_FOLD",
    "buffer_exclusions",
    "close_pairs",
    "exclusions_from_pairs",
    "metric_crs",
    "metric_footprints",
]

#: fold value of holdout (test-set) tiles
TEST_FOLD = -1


@lru_cache(maxsize=64)
def _crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except Exception as exc:
        raise InputDataError(f"unknown CRS {text[:60]!r}: {exc}") from None


def _is_metric(crs: CRS) -> bool:
    if not crs.is_projected:
        return False
    units = {(ax.unit_name or "").lower() for ax in crs.axis_info[:2]}
    return units <= {"metre", "meter", "m"}


def metric_crs(frame: pd.DataFrame) -> str:
    """The CRS distances are measured in: ``"EPSG:xxxx"`` (or WKT) of a projected metric CRS.

    ``frame`` needs ``crs`` (and ``minx..maxy`` when several CRSs are mixed).
    """
    if len(frame) == 0:
        raise InputDataError("no tiles: cannot choose a CRS for distances")
    values = pd.unique(frame["crs"].astype(str))
    if len(values) == 1 and _is_metric(_crs(str(values[0]))):
        code = _crs(str(values[0])).to_epsg()
        return f"EPSG:{code}" if code is not None else str(values[0])
    rings = footprints_lonlat(frame, densify=1)
    lon = float(np.median(rings[:, :4, 0]))
    lat = float(np.median(rings[:, :4, 1]))
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def metric_footprints(frame: pd.DataFrame, target_crs: str | None = None) -> np.ndarray:
    """Tile footprints as shapely polygons in metres: (n,) object array of Polygon.

    Tiles already in ``target_crs`` (default :func:`metric_crs`) are boxes of their native
    bounds; others are reprojected (densified rings) into it.
    """
    target = target_crs or metric_crs(frame)
    minx = frame["minx"].to_numpy(np.float64)
    miny = frame["miny"].to_numpy(np.float64)
    maxx = frame["maxx"].to_numpy(np.float64)
    maxy = frame["maxy"].to_numpy(np.float64)
    if not np.all((maxx >= minx) & (maxy >= miny)):
        raise InputDataError("tile bounds must have minx <= maxx and miny <= maxy")
    out = shapely.box(minx, miny, maxx, maxy)
    crs = frame["crs"].astype(str).to_numpy()
    target_crs_obj = _crs(target)
    for value in pd.unique(crs):
        if value == target or _crs(str(value)) == target_crs_obj:
            continue
        idx = np.flatnonzero(crs == value)
        sub = frame.iloc[idx]
        rings = footprints_lonlat(sub)  # (m, 17, 2) lon/lat
        to_metric = Transformer.from_crs(CRS.from_epsg(4326), target_crs_obj, always_xy=True)
        x, y = to_metric.transform(rings[..., 0], rings[..., 1])
        coords = np.stack([x, y], axis=-1)
        out[idx] = shapely.polygons(coords)
    return np.asarray(out, dtype=object)


def close_pairs(
    query: np.ndarray, tree_geoms: np.ndarray, distance_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``(i, j)`` with ``dist(query[i], tree_geoms[j]) <= distance_m``.

    Returns two (m,) int64 arrays (query index, tree index), sorted by (i, j).
    """
    if len(query) == 0 or len(tree_geoms) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tree = shapely.STRtree(tree_geoms)
    if distance_m > 0:
        pairs = tree.query(query, predicate="dwithin", distance=float(distance_m))
    else:
        pairs = tree.query(query, predicate="intersects")
    i, j = pairs[0].astype(np.int64), pairs[1].astype(np.int64)
    order = np.lexsort((j, i))
    return i[order], j[order]


def exclusions_from_pairs(
    i: np.ndarray, j: np.ndarray, fold: np.ndarray, n_splits: int
) -> np.ndarray:
    """Exclusion matrix from close pairs (symmetric or not; both directions are applied).

    fold: (n,) int64, ``-1`` = holdout test tile. Returns (n, n_splits + 1) bool:
    ``[t, f]`` (f < n_splits) = tile t must not train fold f; ``[t, n_splits]`` = tile t must
    not train the final model evaluated on the holdout test set.
    """
    fold = np.asarray(fold, dtype=np.int64)
    n = len(fold)
    out = np.zeros((n, n_splits + 1), dtype=bool)
    a = np.concatenate([i, j])
    b = np.concatenate([j, i])
    fa, fb = fold[a], fold[b]
    # tile a trains in the round where b's fold is validation
    cross = (fa != fb) & (fa >= 0)
    col = np.where(fb[cross] == TEST_FOLD, n_splits, fb[cross])
    out[a[cross], col] = True
    return out


def buffer_exclusions(
    geoms: np.ndarray, fold: np.ndarray, buffer_m: float, n_splits: int
) -> np.ndarray:
    """Which training tiles the buffer drops, per fold: (n, n_splits + 1) bool.

    geoms: (n,) shapely polygons in metres (:func:`metric_footprints`).
    fold: (n,) int64 fold per tile, ``-1`` for holdout test tiles.
    A tile t of fold g is dropped from fold f's training set (f != g) when it lies within
    ``buffer_m`` (distance <= buffer_m; touching or overlapping counts at 0) of any tile of fold
    f; the last column does the same against the holdout test tiles. ``buffer_m = 0`` drops
    tiles that intersect (overlap or touch) a validation tile.
    """
    if buffer_m < 0:
        raise InputDataError(f"buffer_m must be >= 0; got {buffer_m}")
    fold = np.asarray(fold, dtype=np.int64)
    if len(geoms) != len(fold):
        raise InputDataError(f"{len(geoms)} footprints but {len(fold)} fold values")
    i, j = close_pairs(np.asarray(geoms, dtype=object), np.asarray(geoms, dtype=object), buffer_m)
    keep = i < j
    return exclusions_from_pairs(i[keep], j[keep], fold, n_splits)

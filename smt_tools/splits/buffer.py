"""Spatial buffer between folds (docs/algorithms.md §11), with shapely STRtree.

A training tile whose footprint lies within ``buffer_m`` metres of a validation tile's footprint
(from ANY source image, e.g. a second acquisition of the same place) is dropped from that fold's
training set. Distances are measured per pair by :mod:`smt_tools.splits.distance`: planar in the
tiles' CRS when they all share one low-distortion metric CRS (the usual case), else geodesically
on WGS 84 (tiles in several UTM zones, geographic or Web Mercator tiles); in the second case the
buffer finds the same pairs planar within each CRS and geodesically only across CRSs and near
the threshold (:mod:`smt_tools.splits.zones`). The PostGIS backend
(:mod:`smt_tools.catalog.spatial`) measures the same way, so both give the same answer.

Tiles without a CRS (pixel space) share no coordinates with other images: they are only
related to tiles of their own source image (:func:`pixel_space_exclusions`).

:func:`metric_crs` / :func:`metric_footprints` are the older one-common-CRS helpers, kept for
callers that want polygons in one CRS (their distances are only right near that CRS's centre).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from smt_tools.errors import InputDataError
from smt_tools.geo import crs_strings, footprints_lonlat, parse_crs, shared_metric_crs
from smt_tools.splits.distance import TileFootprints, measure_pairs
from smt_tools.splits.grid import grid_close_pairs
from smt_tools.splits.zones import zoned_close_pairs

__all__ = [
    "TEST_FOLD",
    "buffer_exclusions",
    "close_pairs",
    "exclusions_from_pairs",
    "metric_crs",
    "metric_footprints",
    "pixel_space_exclusions",
    "planar_buffer_exclusions",
]

#: fold value of holdout (test-set) tiles
TEST_FOLD = -1


def metric_crs(frame: pd.DataFrame) -> str:
    """The CRS distances are measured in: ``"EPSG:xxxx"`` (or WKT) of a projected metric CRS:
    the tiles' own when they share one (:func:`smt_tools.geo.shared_metric_crs`), else the UTM
    zone of their median centre.

    ``frame`` needs ``crs`` (and ``minx..maxy`` when several CRSs are mixed).
    """
    if len(frame) == 0:
        raise InputDataError("no tiles: cannot choose a CRS for distances")
    shared = shared_metric_crs([str(v) for v in pd.unique(frame["crs"].astype(str))])
    if shared is not None:
        return shared.name
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
    target_crs_obj = parse_crs(target)
    for value in pd.unique(crs):
        if value == target or parse_crs(str(value)) == target_crs_obj:
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
    geoms: np.ndarray | TileFootprints, fold: np.ndarray, buffer_m: float, n_splits: int
) -> np.ndarray:
    """Which training tiles the buffer drops, per fold: (n, n_splits + 1) bool.

    geoms: :class:`~smt_tools.splits.distance.TileFootprints` (each pair measured correctly,
    tiles without a CRS never paired) or (n,) shapely polygons in metres of one CRS.
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
    if isinstance(geoms, TileFootprints):
        if geoms.method.kind == "geodesic" and geoms.source is not None:
            # the pairs of measure_pairs, planar within each CRS (e.g. two UTM zones)
            i, j = zoned_close_pairs(geoms, buffer_m, fold)
        else:
            i, j, _ = measure_pairs(geoms, buffer_m, labels=fold)
        return exclusions_from_pairs(i, j, fold, n_splits)
    i, j = close_pairs(np.asarray(geoms, dtype=object), np.asarray(geoms, dtype=object), buffer_m)
    keep = i < j
    return exclusions_from_pairs(i[keep], j[keep], fold, n_splits)


def planar_buffer_exclusions(
    frame: pd.DataFrame, rows: np.ndarray, fold: np.ndarray, buffer_m: float, n_splits: int
) -> np.ndarray:
    """:func:`buffer_exclusions` of the tiles at positions ``rows`` of ``frame`` for the planar
    distance method (every tile in one metric CRS): the boxes of their bounds are paired on a
    grid in batches (:func:`smt_tools.splits.grid.grid_close_pairs`), no geometry objects.
    Same pairs as the STRtree path. fold: (len(rows),) int64. Returns (len(rows), n_splits + 1)
    bool."""
    if buffer_m < 0:
        raise InputDataError(f"buffer_m must be >= 0; got {buffer_m}")
    fold = np.asarray(fold, dtype=np.int64)
    minx, miny, maxx, maxy = (
        frame[c].to_numpy(np.float64)[rows] for c in ("minx", "miny", "maxx", "maxy")
    )
    bad = ~((maxx >= minx) & (maxy >= miny))
    if bad.any():
        raise InputDataError(
            f"tile bounds must have minx <= maxx and miny <= maxy; row {int(rows[bad][0])} does not"
        )
    i, j, _ = grid_close_pairs(minx, miny, maxx, maxy, buffer_m, labels=fold)
    return exclusions_from_pairs(i, j, fold, n_splits)


def _image_labels(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(n,) int codes of each tile's source image and (k,) display names."""
    for col in ("source_image_id", "image_path", "group_id"):
        if col in frame.columns:
            codes, uniques = pd.factorize(frame[col].astype(str))
            names = np.asarray(uniques, dtype=object)
            if col == "source_image_id" and "image_path" in frame.columns:
                first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
                names = frame["image_path"].astype(str).to_numpy()[first]
            return codes.astype(np.int64), names
    return np.arange(len(frame), dtype=np.int64), np.asarray(
        [f"row {k + 2}" for k in range(len(frame))], dtype=object
    )


def pixel_space_exclusions(
    frame: pd.DataFrame, fold: np.ndarray, buffer_m: float, n_splits: int
) -> np.ndarray:
    """Buffer exclusions of tiles WITHOUT a CRS: (n, n_splits + 1) bool (rows of ``frame``).

    Such tiles are in the raster's own pixel coordinates: tiles of different source images share
    no coordinates and are never related. Within one source image the windows' pixel boxes are
    compared: when an image's tiles fall in several folds (a group column finer than the source
    image), tiles that overlap or touch a tile of another fold are dropped (the ``buffer_m = 0``
    rule); ``buffer_m > 0`` then cannot be honoured (metres are unknown) and is refused. When
    every such image lies in one fold (the default grouping), nothing is dropped.
    frame needs ``minx, miny, maxx, maxy`` and ``source_image_id`` (or ``image_path``).
    """
    fold = np.asarray(fold, dtype=np.int64)
    out = np.zeros((len(frame), n_splits + 1), dtype=bool)
    if len(frame) == 0:
        return out
    if (crs_strings(frame) != "").any():
        raise InputDataError("pixel_space_exclusions: every tile must be without a CRS")
    images, names = _image_labels(frame)
    per_image = pd.DataFrame({"img": images, "fold": fold}).drop_duplicates()
    n_folds = per_image.groupby("img")["fold"].size()
    split_images = n_folds.index[n_folds.to_numpy() > 1].to_numpy()
    if len(split_images) == 0:
        return out
    if buffer_m > 0:
        name = names[int(split_images[0])]
        raise InputDataError(
            f"split: source image {name} has no CRS and its tiles fall in "
            f"{int(n_folds.loc[split_images[0]])} folds ({len(split_images)} such images): a "
            f"buffer of {buffer_m:g} m cannot be measured in pixel space; set split.buffer_m: 0 "
            "(overlapping windows are still kept apart) or group by source image "
            "(split.group_column: source_image_id)"
        )
    rows = np.flatnonzero(np.isin(images, split_images))
    sub = frame.iloc[rows]
    boxes = shapely.box(
        sub["minx"].to_numpy(np.float64),
        sub["miny"].to_numpy(np.float64),
        sub["maxx"].to_numpy(np.float64),
        sub["maxy"].to_numpy(np.float64),
    )
    a, b = close_pairs(boxes, boxes, 0.0)
    img = images[rows]
    keep = (a < b) & (img[a] == img[b])
    local = exclusions_from_pairs(a[keep], b[keep], fold[rows], n_splits)
    out[rows] = local
    return out

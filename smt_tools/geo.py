"""Footprint reprojection shared by the catalog (EPSG:4326 storage) and GeoJSON export.

RFC 7946 GeoJSON and the catalog's ``footprint`` columns are lon/lat (EPSG:4326). Tiles carry
native bounds (``minx, miny, maxx, maxy`` in ``crs``); this module turns them into lon/lat rings.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from smt_tools.errors import InputDataError

#: points per tile edge when reprojecting (corners plus this many-1 points in between)
DENSIFY = 4


@lru_cache(maxsize=64)
def _to_lonlat(crs: str) -> Transformer:
    try:
        src = CRS.from_user_input(crs)
    except Exception as exc:
        raise InputDataError(f"unknown CRS {crs[:60]!r}: {exc}") from None
    return Transformer.from_crs(src, CRS.from_epsg(4326), always_xy=True)


def _ring_native(
    minx: np.ndarray, miny: np.ndarray, maxx: np.ndarray, maxy: np.ndarray, densify: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counter-clockwise closed rings (n, 4*densify+1) of x and y."""
    t = np.linspace(0.0, 1.0, densify, endpoint=False)
    # bottom edge left->right, right edge bottom->top, top edge right->left, left edge top->bottom
    xs = np.concatenate(
        [
            minx[:, None] + (maxx - minx)[:, None] * t,
            np.repeat(maxx[:, None], densify, 1),
            maxx[:, None] - (maxx - minx)[:, None] * t,
            np.repeat(minx[:, None], densify, 1),
        ],
        axis=1,
    )
    ys = np.concatenate(
        [
            np.repeat(miny[:, None], densify, 1),
            miny[:, None] + (maxy - miny)[:, None] * t,
            np.repeat(maxy[:, None], densify, 1),
            maxy[:, None] - (maxy - miny)[:, None] * t,
        ],
        axis=1,
    )
    return np.concatenate([xs, xs[:, :1]], axis=1), np.concatenate([ys, ys[:, :1]], axis=1)


def footprints_lonlat(frame: pd.DataFrame, densify: int = DENSIFY) -> np.ndarray:
    """Lon/lat rings of every tile: (n, 4*densify+1, 2) float64, counter-clockwise, closed.

    ``frame`` needs ``minx, miny, maxx, maxy, crs``. Tiles are grouped by CRS, so mixed-CRS
    tables (scenes from several UTM zones) work.
    """
    n = len(frame)
    out = np.empty((n, 4 * densify + 1, 2), dtype=np.float64)
    if n == 0:
        return out
    for crs, idx in frame.groupby("crs", sort=False).indices.items():
        if not crs:
            raise InputDataError("a tile has no CRS: its source raster is not georeferenced")
        sub = frame.iloc[idx]
        xs, ys = _ring_native(
            sub["minx"].to_numpy(np.float64),
            sub["miny"].to_numpy(np.float64),
            sub["maxx"].to_numpy(np.float64),
            sub["maxy"].to_numpy(np.float64),
            densify,
        )
        if str(crs) in {"EPSG:4326", "OGC:CRS84"}:
            lon, lat = xs, ys
        else:
            lon, lat = _to_lonlat(str(crs)).transform(xs, ys)
        out[idx, :, 0] = lon
        out[idx, :, 1] = lat
    return out


def rings_to_wkt(rings: np.ndarray, precision: int = 9) -> list[str]:
    """``POLYGON((...))`` WKT for each ring of :func:`footprints_lonlat`."""
    fmt = f"{{:.{precision}f}} {{:.{precision}f}}"
    return ["POLYGON((" + ",".join(fmt.format(x, y) for x, y in ring) + "))" for ring in rings]

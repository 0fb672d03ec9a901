"""Footprint reprojection shared by the catalog (EPSG:4326 storage) and GeoJSON export.

RFC 7946 GeoJSON and the catalog's ``footprint`` columns are lon/lat (EPSG:4326). Tiles carry
native bounds (``minx, miny, maxx, maxy`` in ``crs``); this module turns them into lon/lat rings.

Tiles of rasters without a CRS (slide scans, photos) keep their bounds in the raster's own
pixel coordinates and an empty ``crs`` (a CSV round trip makes it NaN: :func:`crs_strings`
treats both as "no CRS"). They have no lon/lat footprint: :func:`footprints_lonlat` refuses them,
or gives NaN rings with ``missing="nan"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from smt_tools.errors import InputDataError

#: points per tile edge when reprojecting (corners plus this many-1 points in between)
DENSIFY = 4


@lru_cache(maxsize=64)
def parse_crs(text: str) -> CRS:
    """The CRS named by ``text`` (``"EPSG:32631"``, WKT, PROJ string); an unknown one is an
    :class:`InputDataError` quoting it."""
    try:
        return CRS.from_user_input(text)
    except Exception as exc:
        raise InputDataError(f"unknown CRS {text[:60]!r}: {exc}") from None


def is_metric_crs(crs: CRS) -> bool:
    """True for a projected CRS whose two horizontal axes are in metres."""
    if not crs.is_projected:
        return False
    units = {(ax.unit_name or "").lower() for ax in crs.axis_info[:2]}
    return units <= {"metre", "meter", "m"}


@dataclass(frozen=True)
class MetricCrs:
    """The one projected metric CRS a set of tiles shares: ``name`` is ``"EPSG:xxxx"`` (or the
    tiles' own CRS text when it has no EPSG code, then ``epsg`` is None)."""

    name: str
    epsg: int | None


def shared_metric_crs(values: Sequence[str]) -> MetricCrs | None:
    """The projected CRS in metres that ALL tiles are in, decided from the distinct ``crs``
    values of the tiles; None when there are several (or none), or the one is not projected in
    metres (geographic lon/lat, feet). Distances can then be planar in it: the split buffer and
    leakage audit (:func:`smt_tools.splits.distance.distance_method`, which also checks its
    scale error) and :func:`smt_tools.splits.metric_crs` (which falls back to a UTM zone) both
    start from this decision."""
    if len(values) != 1:
        return None
    crs = parse_crs(str(values[0]))
    if not is_metric_crs(crs):
        return None
    code = crs.to_epsg()
    return MetricCrs(f"EPSG:{code}" if code is not None else str(values[0]), code)


@lru_cache(maxsize=64)
def _to_lonlat(crs: str) -> Transformer:
    return Transformer.from_crs(parse_crs(crs), CRS.from_epsg(4326), always_xy=True)


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


def crs_strings(frame: pd.DataFrame) -> np.ndarray:
    """The ``crs`` column as (n,) object array of str, ``""`` where a tile has no CRS
    (empty, None or NaN: a CSV reader turns an empty field into NaN)."""
    col = frame["crs"]
    out = col.where(col.notna(), "").astype(str).str.strip().to_numpy(dtype=object)
    out[out == "nan"] = ""
    return out


def has_crs(frame: pd.DataFrame) -> np.ndarray:
    """(n,) bool: the tile's source raster is georeferenced (its ``crs`` is not empty)."""
    return crs_strings(frame) != ""


def no_crs_message(frame: pd.DataFrame, what: str) -> str:
    """One line naming how many tiles (and which source image) have no CRS, for ``what``."""
    missing = ~has_crs(frame)
    n = int(missing.sum())
    example = ""
    if "image_path" in frame.columns and n:
        example = f", e.g. {frame['image_path'].to_numpy()[np.flatnonzero(missing)[0]]}"
    return (
        f"{n} of {len(frame)} tiles have no CRS (their source raster is not georeferenced"
        f"{example}): {what}"
    )


def pixel_space_note(paths_without_crs: list[str], scanned: int) -> list[str]:
    """The ingest's one warning line about scanned rasters without a CRS ([] when none)."""
    n = len(paths_without_crs)
    if not n:
        return []
    return [
        f"{n} of {scanned} scanned images have no CRS (e.g. {paths_without_crs[0]}): their tiles "
        "are kept in pixel space (bounds in the raster's own pixel coordinates, no lon/lat "
        "footprint); GeoJSON layers and maps leave them out, and split buffers never measure "
        "them against other images"
    ]


def footprints_lonlat(
    frame: pd.DataFrame,
    densify: int = DENSIFY,
    missing: Literal["raise", "nan"] = "raise",
) -> np.ndarray:
    """Lon/lat rings of every tile: (n, 4*densify+1, 2) float64, counter-clockwise, closed.

    ``frame`` needs ``minx, miny, maxx, maxy, crs``. Tiles are grouped by CRS, so mixed-CRS
    tables (scenes from several UTM zones) work. Tiles without a CRS have no lon/lat footprint:
    ``missing="raise"`` raises :class:`InputDataError` naming them, ``"nan"`` gives NaN rings.
    """
    n = len(frame)
    out = np.empty((n, 4 * densify + 1, 2), dtype=np.float64)
    if n == 0:
        return out
    crs_col = crs_strings(frame)
    if missing == "raise" and (crs_col == "").any():
        raise InputDataError(
            no_crs_message(
                frame,
                "they have no lon/lat footprint; georeference the rasters "
                "(e.g. gdal_edit.py -a_srs EPSG:xxxx) or leave these tiles out",
            )
        )
    for crs, idx in pd.Series(crs_col).groupby(crs_col, sort=False).indices.items():
        if not crs:
            out[idx] = np.nan
            continue
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

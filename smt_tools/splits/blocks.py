"""Square spatial blocks as split groups (``split.strategy: spatial_blocks``; docs/algorithms.md
§11, "Spatial blocks").

Each tile belongs to the block that contains its centre. Blocks are ``block_size_m`` squares
aligned on the origin of a projected metric CRS; a block is named
``"EPSG:<code>:<floor(x / size)>:<floor(y / size)>"`` after that CRS and the centre's
coordinates ``(x, y)`` in it. Which CRS follows the distance method of the split buffer
(:func:`smt_tools.splits.distance.distance_method`, §12):

- ``planar`` (every tile in one metric CRS with an EPSG code and a small scale error): that CRS,
  on the tiles' own coordinates;
- ``geodesic`` (tiles in several CRSs, a geographic CRS, a distorted projection): the UTM zone
  (WGS 84, EPSG:326zz north / 327zz south, ``zz = floor((lon + 180) / 6) mod 60 + 1``) of each
  tile's centre, so a place falls in the same block whatever CRS its scene was delivered in;
  tiles already in that zone keep their own coordinates.

Tiles without a CRS (pixel space) have no place on Earth and are refused. Everything is
vectorised and done in chunks of rows (at most a few arrays of n in memory), so ten million
tiles take seconds. Block codes are canonical: the rank of the block in the sorted order of
(EPSG code, column, row), independent of the order of the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from pyproj import Transformer

from smt_tools.errors import InputDataError
from smt_tools.geo import no_crs_message, parse_crs
from smt_tools.splits.distance import DistanceMethod, distance_method, tile_crs

__all__ = ["SpatialBlocks", "spatial_blocks", "utm_epsg"]

#: rows transformed per chunk (bounds the temporaries of pyproj and numpy)
_CHUNK = 1_000_000


@dataclass(frozen=True)
class SpatialBlocks:
    """The block of every tile.

    codes: (n,) int64 block per row, canonical (``0 .. n_blocks - 1`` in sorted block order);
    names: (n_blocks,) object array of ``"EPSG:32631:12:-3"`` block ids (``names[codes]`` is the
    ``block_id`` column); block_size_m: the side in metres; crs: ``"EPSG:xxxx"`` of the planar
    method, or ``"utm"`` when each tile's block is in the UTM zone of its centre; method: the
    distance method the choice followed (the split's buffer uses the same one).
    """

    codes: np.ndarray
    names: np.ndarray
    block_size_m: float
    crs: str
    method: DistanceMethod

    @property
    def n_blocks(self) -> int:
        return len(self.names)

    def ids(self) -> np.ndarray:
        """``block_id`` of every row: (n,) object array of str (one string object per block)."""
        return self.names[self.codes]

    def describe(self) -> str:
        """One line, e.g. ``12 blocks of 1000 m in EPSG:32631``."""
        where = "in the UTM zone of each tile centre" if self.crs == "utm" else f"in {self.crs}"
        return f"{self.n_blocks} blocks of {self.block_size_m:g} m {where}"


def utm_epsg(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """EPSG code of the WGS 84 UTM zone of each point: (n,) int64 (326zz north, 327zz south;
    the regular 6° zones, without the Norway / Svalbard exceptions)."""
    zone = np.floor((np.asarray(lon, np.float64) + 180.0) / 6.0).astype(np.int64) % 60 + 1
    return np.where(np.asarray(lat) >= 0.0, 32600, 32700) + zone


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(parse_crs(src), parse_crs(dst), always_xy=True)


@lru_cache(maxsize=64)
def _epsg_of(crs: str) -> int | None:
    return parse_crs(crs).to_epsg()


def _check(frame: pd.DataFrame, block_size_m: float, source: str) -> np.ndarray:
    """Validate; return the (n,) CRS strings."""
    size = float(block_size_m)
    if not math.isfinite(size) or size <= 0:
        raise InputDataError(
            f"block_size_m must be a finite number of metres > 0; got {block_size_m!r}"
        )
    if len(frame) == 0:
        raise InputDataError(f"{source}: no tiles to put in spatial blocks")
    crs = tile_crs(frame)
    if (crs == "").any():
        raise InputDataError(
            f"{source}: "
            + no_crs_message(
                frame,
                "strategy spatial_blocks needs every tile on the map; georeference the rasters "
                "and ingest again, or use strategy group / stratified_group (folds by source "
                "image work in pixel space)",
            )
        )
    return crs


def _centres(frame: pd.DataFrame, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) of the tiles in ``rows``, in their own CRS: two (m,) float64."""
    b = {c: frame[c].iloc[rows].to_numpy(np.float64) for c in ("minx", "miny", "maxx", "maxy")}
    return (b["minx"] + b["maxx"]) / 2.0, (b["miny"] + b["maxy"]) / 2.0


def _utm_chunk(
    x: np.ndarray, y: np.ndarray, crs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (x, y) in their CRSs ``crs`` (m,) -> (epsg, x, y) in the UTM zone of each centre."""
    epsg = np.zeros(len(x), np.int64)
    ux, uy = np.empty_like(x), np.empty_like(y)
    codes, values = pd.factorize(crs)
    for k, value in enumerate(values):
        idx = np.flatnonzero(codes == k)
        lon, lat = _transformer(str(value), "EPSG:4326").transform(x[idx], y[idx])
        zone = utm_epsg(np.asarray(lon), np.asarray(lat))
        epsg[idx] = zone
        for z in np.unique(zone):
            sub = idx[zone == z]
            if _epsg_of(str(value)) == int(z):  # already in its zone: its own coordinates
                ux[sub], uy[sub] = x[sub], y[sub]
            else:
                px, py = _transformer(str(value), f"EPSG:{int(z)}").transform(x[sub], y[sub])
                ux[sub], uy[sub] = px, py
    return epsg, ux, uy


def _cells(
    frame: pd.DataFrame, x: np.ndarray, y: np.ndarray, size: float, first_row: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """``floor(x / size), floor(y / size)``: two (m,) int64 (rows ``first_row ...`` of
    ``frame``); centres without finite coordinates, or too far out for int64, are refused."""
    qx, qy = np.floor(x / size), np.floor(y / size)
    with np.errstate(invalid="ignore"):
        bad = ~((np.abs(qx) < 2.0**62) & (np.abs(qy) < 2.0**62))  # NaN and inf too
    if bad.any():
        row = first_row + int(np.flatnonzero(bad)[0])
        tile = f"tile_id {frame['tile_id'].iloc[row]}" if "tile_id" in frame.columns else "a tile"
        raise InputDataError(
            f"{source}: {tile} (row {row}) has no finite block: its centre is NaN or outside "
            f"its CRS's projection, or block_size_m {size:g} is too small; fix its bounds and "
            "crs, or use larger blocks"
        )
    return qx.astype(np.int64), qy.astype(np.int64)


def _canonical(epsg: np.ndarray, bx: np.ndarray, by: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each row's (epsg, bx, by) among the sorted distinct keys, and the block names."""
    n = len(epsg)
    order = np.lexsort((by, bx, epsg))
    e, x, y = epsg[order], bx[order], by[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (e[1:] != e[:-1]) | (x[1:] != x[:-1]) | (y[1:] != y[:-1])
    codes = np.empty(n, np.int64)
    codes[order] = np.cumsum(new) - 1
    del e, x, y
    first = order[new]
    names = (
        "EPSG:"
        + pd.Series(epsg[first]).astype(str)
        + ":"
        + pd.Series(bx[first]).astype(str)
        + ":"
        + pd.Series(by[first]).astype(str)
    )
    return codes, names.to_numpy(dtype=object)


def spatial_blocks(
    frame: pd.DataFrame,
    block_size_m: float,
    method: DistanceMethod | None = None,
    source: str = "split",
) -> SpatialBlocks:
    """The ``block_size_m`` square block of every tile of ``frame`` (see module docstring).

    frame needs ``minx, miny, maxx, maxy, crs`` (one row per tile); method: the split's distance
    method (default: :func:`~smt_tools.splits.distance.distance_method` of ``frame``); source:
    the input named in error messages (the CSV path or the catalog). A tile without a CRS, or
    ``block_size_m <= 0``, is an :class:`~smt_tools.errors.InputDataError`.
    """
    crs = _check(frame, block_size_m, source)
    size = float(block_size_m)
    method = method or distance_method(frame)
    n = len(frame)
    epsg = np.empty(n, np.int64)
    bx = np.empty(n, np.int64)
    by = np.empty(n, np.int64)
    planar = method.kind == "planar"
    planar_epsg = _epsg_of(method.crs) if planar else None
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        x, y = _centres(frame, rows)
        if planar and planar_epsg is not None:
            e = np.full(len(x), planar_epsg, np.int64)
        else:
            e, x, y = _utm_chunk(x, y, crs[rows])
        epsg[rows] = e
        bx[rows], by[rows] = _cells(frame, x, y, size, start, source)
    codes, names = _canonical(epsg, bx, by)
    where = method.crs if planar and planar_epsg is not None else "utm"
    return SpatialBlocks(codes=codes, names=names, block_size_m=size, crs=where, method=method)

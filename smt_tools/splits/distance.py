"""How far apart two tile footprints are, measured correctly whatever their CRSs (docs/algorithms.md §12).

One method per run, chosen from the tiles (:func:`distance_method`, which starts from
:func:`smt_tools.geo.shared_metric_crs` like :func:`smt_tools.splits.metric_crs`):

- ``planar``: every tile is in ONE projected metric CRS with an EPSG code whose scale error is at
  most :data:`PLANAR_SCALE_TOLERANCE` (0.1 %) at every tile centre (a UTM zone over its own
  zone, a national grid over its country): distances are planar in that CRS, on the exact
  boxes of the tiles' native bounds (fast: one STRtree; the PostGIS twin uses the same boxes);
- ``geodesic``: anything else (tiles in several CRSs, e.g. two UTM zones; a geographic CRS; a
  projected CRS whose scale is off, e.g. Web Mercator): each candidate pair is measured on the
  WGS 84 ellipsoid. Candidates come from a KD-tree of tile centres in Earth-centred (ECEF)
  coordinates, where the straight chord never exceeds the distance along the surface, so the
  search radius ``distance + r_i + r_j + slack`` never misses a pair. Each candidate pair is
  then measured as the planar minimum distance between its two lon/lat rings projected
  orthographically onto the ellipsoid's tangent plane at the pair's midpoint: vertex-to-edge,
  not just vertex-to-vertex; the relative error is below (s / R)^2 / 2 for pairs within s of
  the midpoint (under 1e-6 for tiles of 10 km). The PostGIS twin uses ``geography`` (spheroid).
- ``none``: no tile has a CRS (pixel space): there is no shared coordinate between images.

Tiles without a CRS in a mixed table are never measured against anything (see the split and
check-leakage pipelines for what they do instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Proj, Transformer

from smt_tools.errors import InputDataError
from smt_tools.geo import DENSIFY, crs_strings, footprints_lonlat, parse_crs, shared_metric_crs

__all__ = [
    "PLANAR_SCALE_TOLERANCE",
    "DistanceMethod",
    "TileFootprints",
    "distance_method",
    "geodesic_distances",
    "geodesic_pairs",
    "measure_pairs",
    "overlap_areas",
    "tile_crs",
    "tile_footprints",
]

#: planar distances only when the CRS's point scale is within 1 +- this at every tile centre
PLANAR_SCALE_TOLERANCE = 1e-3
_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_WGS84_E2 = _WGS84_F * (2.0 - _WGS84_F)
#: pairs measured per chunk in the geodesic path (bounds memory: ~1 KB per pair)
_CHUNK = 100_000
#: above this many tiles the geodesic rings are never all in memory at once
_LAZY_RINGS = 1_000_000
_BOUNDS_CRS = ("minx", "miny", "maxx", "maxy", "crs")


@dataclass(frozen=True)
class DistanceMethod:
    """How distances between tiles are measured, and why.

    kind: ``planar`` | ``geodesic`` | ``none``; crs: the CRS of planar distances
    (``"EPSG:xxxx"``), ``"EPSG:4326"`` for geodesic (WGS 84), ``""`` for none;
    crs_values: the distinct CRSs of the tiles that have one; scale_error: the largest
    ``|scale - 1|`` of the single CRS over the tile centres (NaN when not computed);
    tiles_without_crs / images_without_crs: tiles (and source images) in pixel space.
    """

    kind: str
    crs: str
    crs_values: tuple[str, ...]
    scale_error: float
    tiles_without_crs: int = 0
    images_without_crs: int = 0

    def describe(self) -> str:
        """One line: how and why, e.g. ``measured geodesically on WGS 84 (tiles in 2 CRSs:
        EPSG:32631, EPSG:32632)``."""
        if self.kind == "none":
            return "not measured: no tile has a CRS (pixel space, no shared coordinates)"
        if self.kind == "planar":
            text = (
                f"measured planar in {self.crs} (every tile in this CRS; scale error at most "
                f"{self.scale_error * 100:.2f} %)"
            )
        else:
            shown = ", ".join(_short(c) for c in self.crs_values[:4])
            more = ", ..." if len(self.crs_values) > 4 else ""
            if len(self.crs_values) > 1:
                why = f"tiles in {len(self.crs_values)} CRSs: {shown}{more}"
            elif not np.isfinite(self.scale_error):
                why = f"tiles in {shown}, not a projected metric CRS with an EPSG code"
            else:
                why = f"tiles in {shown}, whose scale error reaches {self.scale_error * 100:.2f} %"
            text = f"measured geodesically on WGS 84 ({why})"
        if self.tiles_without_crs:
            text += (
                f"; {self.tiles_without_crs} tiles of {self.images_without_crs} source images "
                "have no CRS (pixel space): not measured against other images"
            )
        return text


def _short(crs: str) -> str:
    return crs if len(crs) <= 40 else crs[:37] + "..."


def _image_codes(frame: pd.DataFrame) -> np.ndarray:
    for col in ("source_image_id", "image_path", "group_id"):
        if col in frame.columns:
            return pd.factorize(frame[col].astype(str))[0]
    return np.arange(len(frame))


def _centres_lonlat(frame: pd.DataFrame, crs: str) -> tuple[np.ndarray, np.ndarray]:
    x = (frame["minx"].to_numpy(np.float64) + frame["maxx"].to_numpy(np.float64)) / 2
    y = (frame["miny"].to_numpy(np.float64) + frame["maxy"].to_numpy(np.float64)) / 2
    tr = Transformer.from_crs(parse_crs(crs), CRS.from_epsg(4326), always_xy=True)
    lon, lat = tr.transform(x, y)
    return np.asarray(lon, np.float64), np.asarray(lat, np.float64)


def _scale_error(frame: pd.DataFrame, crs: str) -> float:
    """Largest ``|k - 1|`` (meridional and parallel point scale) of ``crs`` at the tile centres."""
    lon, lat = _centres_lonlat(frame, crs)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return float("inf")
    factors = Proj(parse_crs(crs)).get_factors(lon[ok], lat[ok])
    h = np.asarray(factors.meridional_scale, np.float64)
    k = np.asarray(factors.parallel_scale, np.float64)
    err = np.maximum(np.abs(h - 1.0), np.abs(k - 1.0))
    return float(np.nanmax(err)) if np.isfinite(err).any() else float("inf")


def tile_crs(frame: pd.DataFrame) -> np.ndarray:
    """:func:`smt_tools.geo.crs_strings` (``""`` = no CRS), one string per distinct CRS when
    the column is categorical (a batched Parquet read): (n,) object array."""
    col = frame["crs"]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        return crs_strings(frame)
    cats = crs_strings(pd.DataFrame({"crs": pd.Series(col.cat.categories, dtype=object)}))
    table = np.append(cats, "").astype(object)  # code -1 (missing) -> ""
    return table[col.cat.codes.to_numpy()]


def distance_method(frame: pd.DataFrame) -> DistanceMethod:
    """Choose how to measure distances between the tiles of ``frame`` (see module docstring).

    frame needs ``minx, miny, maxx, maxy, crs`` (and ``source_image_id`` or ``image_path`` to
    count the source images without a CRS).
    """
    crs = tile_crs(frame)
    georef = crs != ""
    n_without = int((~georef).sum())
    images_without = len(np.unique(_image_codes(frame)[~georef])) if n_without else 0
    values = tuple(sorted(str(c) for c in pd.unique(crs[georef])))
    if not values:
        return DistanceMethod("none", "", (), float("nan"), n_without, images_without)
    shared = shared_metric_crs(values)
    if shared is not None and shared.epsg is not None:
        bounds = frame[["minx", "miny", "maxx", "maxy"]]
        err = _scale_error(bounds.iloc[np.flatnonzero(georef)], values[0])
        if err <= PLANAR_SCALE_TOLERANCE:
            return DistanceMethod("planar", shared.name, values, err, n_without, images_without)
        return DistanceMethod("geodesic", "EPSG:4326", values, err, n_without, images_without)
    return DistanceMethod("geodesic", "EPSG:4326", values, float("nan"), n_without, images_without)


@dataclass
class TileFootprints:
    """Tile footprints ready for distance queries (rows aligned with the frame they came from).

    method: how they are measured; georef: (n,) bool, tiles with a CRS (only these are
    measured); planar: (n,) shapely boxes in ``method.crs`` metres (planar method; None rows for
    tiles without a CRS); rings: (n, m, 2) float64 lon/lat rings (geodesic method; NaN rows for
    tiles without a CRS).
    """

    method: DistanceMethod
    georef: np.ndarray
    planar: np.ndarray | None = None
    rings: np.ndarray | None = None
    #: the frame with the bounds and crs of every row (geodesic method; the rings are built
    #: from it per chunk above :data:`_LAZY_RINGS` rows)
    source: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.georef)

    def rings_of(self, idx: np.ndarray) -> np.ndarray:
        """Lon/lat rings of rows ``idx``: (len(idx), m, 2) float64 (geodesic method)."""
        if self.rings is not None:
            return self.rings[idx]
        assert self.source is not None
        src = self.source  # column by column: a categorical crs stays codes
        part = pd.DataFrame({c: src[c].iloc[idx].reset_index(drop=True) for c in _BOUNDS_CRS})
        return footprints_lonlat(part, DENSIFY, missing="nan")


def tile_footprints(frame: pd.DataFrame, method: DistanceMethod | None = None) -> TileFootprints:
    """Footprints of ``frame``'s tiles for :func:`measure_pairs` (method: default chosen by
    :func:`distance_method`)."""
    method = method or distance_method(frame)
    crs = tile_crs(frame)
    georef = crs != ""
    minx = frame["minx"].to_numpy(np.float64)
    miny = frame["miny"].to_numpy(np.float64)
    maxx = frame["maxx"].to_numpy(np.float64)
    maxy = frame["maxy"].to_numpy(np.float64)
    bad = georef & ~((maxx >= minx) & (maxy >= miny))
    if bad.any():
        raise InputDataError(
            f"tile bounds must have minx <= maxx and miny <= maxy; row {int(np.flatnonzero(bad)[0])} "
            "does not"
        )
    if method.kind == "planar":
        geoms = np.full(len(frame), None, dtype=object)
        idx = np.flatnonzero(georef)
        geoms[idx] = shapely.box(minx[idx], miny[idx], maxx[idx], maxy[idx])
        return TileFootprints(method, georef, planar=geoms)
    if method.kind == "geodesic":
        source = frame  # not a copy: only _BOUNDS_CRS are read
        if len(frame) > _LAZY_RINGS:  # 10M rings would take ~3 GB: built per chunk instead
            return TileFootprints(method, georef, source=source)
        rings = footprints_lonlat(frame, DENSIFY, missing="nan")
        return TileFootprints(method, georef, rings=rings, source=source)
    return TileFootprints(method, georef)


# --- geodesic kernels -------------------------------------------------------------------


def ecef(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Earth-centred coordinates (..., 3) in metres of WGS 84 points on the ellipsoid."""
    lam, phi = np.deg2rad(lon), np.deg2rad(lat)
    sin_phi = np.sin(phi)
    n = _WGS84_A / np.sqrt(1.0 - _WGS84_E2 * sin_phi**2)
    cos_phi = np.cos(phi)
    return np.stack(
        [n * cos_phi * np.cos(lam), n * cos_phi * np.sin(lam), n * (1.0 - _WGS84_E2) * sin_phi],
        axis=-1,
    )


def _tangent_rings(ra: np.ndarray, rb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rings (m, p, 3) ECEF of pairs -> (m, p, 2) coordinates in metres on the tangent plane of
    the ellipsoid at each pair's midpoint (orthographic: east, north)."""
    mid = (ra[:, :-1].mean(axis=1) + rb[:, :-1].mean(axis=1)) / 2.0  # (m, 3)
    lam = np.arctan2(mid[:, 1], mid[:, 0])
    phi = np.arctan2(mid[:, 2], (1.0 - _WGS84_E2) * np.hypot(mid[:, 0], mid[:, 1]))
    east = np.stack([-np.sin(lam), np.cos(lam), np.zeros_like(lam)], axis=-1)
    north = np.stack([-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)], axis=-1)

    def plane(r: np.ndarray) -> np.ndarray:
        d = r - mid[:, None, :]
        return np.stack(
            [np.einsum("mpk,mk->mp", d, east), np.einsum("mpk,mk->mp", d, north)], axis=-1
        )

    return plane(ra), plane(rb)


def _centres_radii(fp: TileFootprints, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ECEF centre (m, 3) of each ring of rows ``idx`` and its farthest vertex (m,), chunked."""
    centre = np.empty((len(idx), 3), np.float64)
    radius = np.empty(len(idx), np.float64)
    for start in range(0, len(idx), _CHUNK):
        rings = fp.rings_of(idx[start : start + _CHUNK])
        xyz = ecef(rings[..., 0], rings[..., 1])
        c = xyz[:, :-1].mean(axis=1)
        centre[start : start + _CHUNK] = c
        radius[start : start + _CHUNK] = np.sqrt(((xyz - c[:, None, :]) ** 2).sum(axis=-1)).max(
            axis=1
        )
    return centre, radius


def _geodesic_candidates(
    centre: np.ndarray, radius: np.ndarray, labels: np.ndarray | None, distance_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) that may lie within ``distance_m``: (m,) int64 each, a superset.

    centre: (n, 3) ECEF ring centres; radius: (n,) farthest ring vertex from the centre. The
    chord between two surface points never exceeds their distance along the surface, so any
    pair within ``distance_m`` has centres at most ``distance_m + r_i + r_j + slack`` apart
    (slack covers the surface bulging above the vertices' chords).
    """
    from scipy.spatial import cKDTree

    r_max = float(radius.max()) if len(radius) else 0.0
    slack = (2.0 * r_max) ** 2 / (8.0 * _WGS84_A) * 2.0 + 0.01
    reach = float(distance_m) + 2.0 * r_max + slack
    if labels is None:
        tree = cKDTree(centre)
        pairs = tree.query_pairs(reach, output_type="ndarray").astype(np.int64)
        i, j = pairs[:, 0], pairs[:, 1]
    else:
        groups = [np.flatnonzero(labels == v) for v in np.unique(labels)]
        trees = [cKDTree(centre[g]) for g in groups]
        ii, jj = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                hit = trees[a].sparse_distance_matrix(trees[b], reach, output_type="ndarray")
                ii.append(groups[a][hit["i"]].astype(np.int64))
                jj.append(groups[b][hit["j"]].astype(np.int64))
        i, j = np.concatenate(ii), np.concatenate(jj)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    gap = np.sqrt(((centre[lo] - centre[hi]) ** 2).sum(axis=1))
    keep = gap <= float(distance_m) + radius[lo] + radius[hi] + slack
    return lo[keep], hi[keep]


def geodesic_distances(fp: TileFootprints, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The geodesic method's distance in metres between the footprints of rows ``i`` and ``j``
    of ``fp``: (m,) float64, 0 when they touch or overlap; measured in chunks."""
    out = np.empty(len(i), np.float64)
    for start in range(0, len(i), _CHUNK):
        ra = fp.rings_of(i[start : start + _CHUNK])
        rb = fp.rings_of(j[start : start + _CHUNK])
        pa, pb = _tangent_rings(ecef(ra[..., 0], ra[..., 1]), ecef(rb[..., 0], rb[..., 1]))
        out[start : start + _CHUNK] = shapely.distance(shapely.polygons(pa), shapely.polygons(pb))
    return out


def measure_pairs(
    fp: TileFootprints,
    distance_m: float,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of measured tiles whose footprints lie within ``distance_m`` metres.

    Returns ``(i, j, d)``: (m,) int64 row positions with ``i < j`` sorted by (i, j), and (m,)
    float64 distances in metres (0 when the footprints touch or overlap). ``distance_m = 0``
    gives touching or overlapping pairs. labels: (n,) int, only pairs with different labels are
    returned (e.g. folds; much less work). Tiles without a CRS are never paired.
    """
    if distance_m < 0:
        raise InputDataError(f"distance must be >= 0 m; got {distance_m}")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    idx = np.flatnonzero(fp.georef)
    if len(idx) < 2 or fp.method.kind == "none":
        return empty
    sub_labels = None if labels is None else np.asarray(labels)[idx]
    if fp.method.kind == "planar":
        assert fp.planar is not None
        geoms = fp.planar[idx]
        tree = shapely.STRtree(geoms)
        if distance_m > 0:
            pairs = tree.query(geoms, predicate="dwithin", distance=float(distance_m))
        else:
            pairs = tree.query(geoms, predicate="intersects")
        a, b = pairs[0].astype(np.int64), pairs[1].astype(np.int64)
        keep = a < b
        if sub_labels is not None:
            keep &= sub_labels[a] != sub_labels[b]
        a, b = a[keep], b[keep]
        d = shapely.distance(geoms[a], geoms[b]).astype(np.float64)
        i, j = idx[a], idx[b]
    else:
        i, j, d = geodesic_pairs(fp, idx, distance_m, sub_labels)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def geodesic_pairs(
    fp: TileFootprints, idx: np.ndarray, distance_m: float, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The geodesic method of :func:`measure_pairs` on the rows ``idx`` of ``fp`` (tiles with a
    CRS): the pairs within ``distance_m`` as (m,) int64 rows ``i``, ``j`` (unsorted) and their
    (m,) float64 distances. labels: (len(idx),) int, only pairs with different labels."""
    centre, radius = _centres_radii(fp, idx)
    a, b = _geodesic_candidates(centre, radius, labels, distance_m)
    del centre, radius
    d = geodesic_distances(fp, idx[a], idx[b])
    keep = d <= float(distance_m)
    return idx[a[keep]], idx[b[keep]], d[keep]


def overlap_areas(fp: TileFootprints, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Area in square metres of the intersection of each pair's footprints: (m,) float64."""
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    if len(i) == 0:
        return np.zeros(0, np.float64)
    if fp.method.kind == "planar":
        assert fp.planar is not None
        return np.asarray(
            shapely.area(shapely.intersection(fp.planar[i], fp.planar[j])), np.float64
        )
    if fp.method.kind == "geodesic":
        out = np.empty(len(i), np.float64)
        for start in range(0, len(i), _CHUNK):
            a, b = i[start : start + _CHUNK], j[start : start + _CHUNK]
            ga, gb = fp.rings_of(a), fp.rings_of(b)
            ra = ecef(ga[..., 0], ga[..., 1])
            rb = ecef(gb[..., 0], gb[..., 1])
            pa, pb = _tangent_rings(ra, rb)
            out[start : start + _CHUNK] = shapely.area(
                shapely.intersection(shapely.polygons(pa), shapely.polygons(pb))
            )
        return out
    return np.zeros(len(i), np.float64)

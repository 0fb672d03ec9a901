"""Buffer pairs of tiles in several CRSs (e.g. scenes in two UTM zones): planar within each CRS,
geodesic across them and near the decision threshold (docs/algorithms.md §12).

The geodesic method (:func:`smt_tools.splits.distance.measure_pairs`) measures every candidate
pair on WGS 84. :func:`zoned_close_pairs` returns exactly its pairs (for the split's buffer,
which needs the pairs, not their distances) with far less work, because almost every pair lies
in one CRS, where the distance is already known from the tiles' own coordinates:

1. The tiles are grouped by CRS. Each group's tile centres fall in coarse square cells of its
   native coordinates (side :data:`_CELL_TILES` largest tile sides); each occupied cell, grown
   by half the largest tile, gets an Earth-centred (ECEF) centre and a radius from a densified
   ring of its box, and, in a projected CRS in metres, the range of the CRS's point scale over
   it (pyproj's Tissot semi-axes at 3 x 3 points, widened by the spread seen inside the cell).
2. Within a projected metric group whose scale stays in ``[k_lo, k_hi]`` with ``k_hi / k_lo <=
   1 +`` :data:`_MAX_SCALE_SPREAD`: a pair at planar box distance ``d_p`` (native metres, the
   grid of :func:`smt_tools.splits.grid.grid_close_pairs`) is ``d_p / k`` apart on the
   ellipsoid for some ``k`` in that range, up to ``eps`` (edges that are straight in the CRS
   are slightly curved on the ellipsoid). Pairs with ``d_p <= (d + eps) k_hi`` are found; those
   with ``d_p / k_lo + eps <= d`` are within ``d`` without measuring; the few others (a band of
   a few centimetres around ``d``) are measured geodesically, as measure_pairs measures them.
3. Tiles whose cell lies within ``d + r_a + r_b`` (plus slack) of a cell of another group, and
   every tile of a group that fails step 2 (lon/lat, feet, a distorted projection), are paired
   and measured geodesically exactly as measure_pairs does; of those pairs, the ones inside one
   step-2 group are left to step 2.

Memory: the grid pairs in batches, the geodesic pairs in chunks, a few arrays of n.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyproj import CRS, Proj, Transformer
from pyproj.exceptions import CRSError, ProjError
from scipy.spatial import cKDTree

from smt_tools.geo import crs_strings, footprints_lonlat, is_metric_crs, parse_crs
from smt_tools.splits.distance import (
    TileFootprints,
    ecef,
    geodesic_distances,
    geodesic_pairs,
    tile_crs,
)
from smt_tools.splits.grid import grid_close_pairs

__all__ = ["zoned_close_pairs"]

#: side of the coarse cells, in largest tile sides
_CELL_TILES = 64
#: a group is measured planar only when its largest / smallest point scale is within 1 + this
_MAX_SCALE_SPREAD = 0.02
#: relative margin on the sampled point scale
_SCALE_MARGIN = 1e-4
#: points per edge of a cell's ring
_CELL_DENSIFY = 8
_EARTH_R = 6378137.0


def _crs_codes(source: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(n,) int32 CRS group of each row and the (k,) CRS texts (``""``: no CRS)."""
    col = source["crs"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = crs_strings(pd.DataFrame({"crs": pd.Series(col.cat.categories, dtype=object)}))
        codes, names = pd.factorize(np.append(cats, "").astype(object))
        return codes.astype(np.int32)[col.cat.codes.to_numpy()], [str(v) for v in names]
    codes, names = pd.factorize(tile_crs(source))
    return codes.astype(np.int32), [str(v) for v in names]


def _bounds(source: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """minx, miny, maxx, maxy of ``rows``: four (m,) float64 arrays."""
    return tuple(source[c].to_numpy(np.float64)[rows] for c in ("minx", "miny", "maxx", "maxy"))


class _Group:
    """The tiles of one CRS: their rows, coarse cells and what the cells say.

    rows: (m,) int64; cell_of: (m,) int32 cell of each row; centre (c, 3) / radius (c,): ECEF
    sphere of each grown cell (radius inf where it could not be projected); scale: (k_lo, k_hi)
    of step 2, or None when the group is measured geodesically.
    """

    def __init__(self, source: pd.DataFrame, rows: np.ndarray, crs: str) -> None:
        self.rows, self.crs = rows, crs
        minx, miny, maxx, maxy = _bounds(source, rows)
        self.half = (float((maxx - minx).max()) / 2.0, float((maxy - miny).max()) / 2.0)
        side = 2.0 * max(self.half)
        self.size = _CELL_TILES * side if side > 0 else 1.0
        cx = np.floor((minx + maxx) / 2.0 / self.size)
        cy = np.floor((miny + maxy) / 2.0 / self.size)
        del minx, miny, maxx, maxy
        x0, y0 = cx.min(), cy.min()
        width = int(cy.max() - y0) + 1
        key = (cx - x0).astype(np.int64) * width + (cy - y0).astype(np.int64)
        del cx, cy
        keys, cell_of = np.unique(key, return_inverse=True)
        self.cell_of = cell_of.reshape(-1).astype(np.int32)
        # lower-left corner of each cell grown by half the largest tile
        self.cell_x0 = (keys // width + x0) * self.size - self.half[0]
        self.cell_y0 = (keys % width + y0) * self.size - self.half[1]
        self.cell_wh = (self.size + 2.0 * self.half[0], self.size + 2.0 * self.half[1])
        self.centre, self.radius = self._cell_spheres()
        metric = is_metric_crs(parse_crs(crs)) and bool(np.isfinite(self.radius).all())
        self.scale = self._scale_range() if metric else None

    def _cell_spheres(self) -> tuple[np.ndarray, np.ndarray]:
        """ECEF centre (c, 3) and radius (c,) of each grown cell; inf where unprojectable."""
        w, h = self.cell_wh
        boxes = pd.DataFrame(
            {
                "minx": self.cell_x0,
                "miny": self.cell_y0,
                "maxx": self.cell_x0 + w,
                "maxy": self.cell_y0 + h,
                "crs": self.crs,
            }
        )
        with np.errstate(invalid="ignore"):
            rings = footprints_lonlat(boxes, _CELL_DENSIFY)
            xyz = ecef(rings[..., 0], rings[..., 1])
            centre = xyz[:, :-1].mean(axis=1)
            far = np.sqrt(((xyz - centre[:, None, :]) ** 2).sum(axis=-1)).max(axis=1)
        # the surface between ring points bulges above their chords: a generous slack
        radius = far * 1.01 + 10.0
        bad = ~(np.isfinite(radius) & np.isfinite(centre).all(axis=1))
        radius[bad] = np.inf
        centre[bad] = 0.0
        return centre, radius

    def _scale_range(self) -> tuple[float, float] | None:
        """Smallest and largest point scale over the grown cells, widened by the largest spread
        seen inside one cell and :data:`_SCALE_MARGIN`; None when unknown or too spread."""
        w, h = self.cell_wh
        t = np.array([0.0, 0.5, 1.0])
        n = len(self.cell_x0)
        x = np.repeat(self.cell_x0[:, None] + w * t, 3, axis=1)  # (c, 9): 3 x 3 points
        y = np.tile(self.cell_y0[:, None] + h * t, (1, 3))
        to_lonlat = Transformer.from_crs(parse_crs(self.crs), CRS.from_epsg(4326), always_xy=True)
        try:
            with np.errstate(invalid="ignore"):
                lon, lat = to_lonlat.transform(x.ravel(), y.ravel())
                f = Proj(parse_crs(self.crs)).get_factors(lon, lat)
        except (CRSError, ProjError):  # no point scale for this CRS: measured geodesically
            return None
        lo = np.asarray(f.tissot_semiminor, np.float64).reshape(n, 9)
        hi = np.asarray(f.tissot_semimajor, np.float64).reshape(n, 9)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            return None
        spread = float((hi.max(axis=1) - lo.min(axis=1)).max())
        k_lo = (float(lo.min()) - spread) * (1.0 - _SCALE_MARGIN)
        k_hi = (float(hi.max()) + spread) * (1.0 + _SCALE_MARGIN)
        if k_lo <= 0 or k_hi / k_lo > 1.0 + _MAX_SCALE_SPREAD:
            return None
        return k_lo, k_hi


def _planar_pairs(
    fp: TileFootprints, g: _Group, labels: np.ndarray, distance_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: the pairs of group ``g`` (rows of ``fp``) within ``distance_m`` on WGS 84."""
    assert g.scale is not None and fp.source is not None
    k_lo, k_hi = g.scale
    side = 2.0 * max(g.half)
    dist = float(distance_m)
    # native edges are straight, the measured ones curve a little; the tangent plane's own error
    eps = 0.01 + side * (1e-5 + (k_hi / k_lo - 1.0)) + dist * ((dist + 2 * side) / _EARTH_R) ** 2
    minx, miny, maxx, maxy = _bounds(fp.source, g.rows)
    a, b, d = grid_close_pairs(minx, miny, maxx, maxy, (dist + eps) * k_hi, labels=labels[g.rows])
    del minx, miny, maxx, maxy
    i, j = g.rows[a], g.rows[b]
    del a, b
    sure = d / k_lo + eps <= dist
    band = np.flatnonzero(~sure)
    sure[band] = geodesic_distances(fp, i[band], j[band]) <= dist
    return i[sure], j[sure]


def _near_other_groups(groups: list[_Group], distance_m: float) -> list[np.ndarray]:
    """Per group, (cells,) bool: the cell lies within reach of a cell of another group."""
    centre = np.concatenate([g.centre for g in groups])
    radius = np.concatenate([g.radius for g in groups])
    owner = np.repeat(np.arange(len(groups)), [len(g.radius) for g in groups])
    near = np.zeros(len(radius), dtype=bool)
    wild = ~np.isfinite(radius)
    if wild.any():  # a cell that could not be placed: everything of another group is near
        for k in np.unique(owner[wild]):
            near |= owner != k
        near |= wild
    ok = np.flatnonzero(~wild)
    if len(ok) > 1:
        r = radius[ok]
        slack = (2.0 * float(r.max())) ** 2 / (8.0 * _EARTH_R) * 2.0 + 1.0
        tree = cKDTree(centre[ok])
        pairs = tree.query_pairs(
            float(distance_m) + 2.0 * float(r.max()) + slack, output_type="ndarray"
        )
        a, b = ok[pairs[:, 0]], ok[pairs[:, 1]]
        gap = np.sqrt(((centre[a] - centre[b]) ** 2).sum(axis=1))
        hit = (owner[a] != owner[b]) & (gap <= float(distance_m) + radius[a] + radius[b] + slack)
        near[a[hit]] = True
        near[b[hit]] = True
    bounds = np.cumsum([0] + [len(g.radius) for g in groups])
    return [near[bounds[k] : bounds[k + 1]] for k in range(len(groups))]


def zoned_close_pairs(
    fp: TileFootprints, distance_m: float, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs :func:`~smt_tools.splits.distance.measure_pairs` (geodesic method) returns for
    ``fp``, ``distance_m`` and ``labels``, found planar within each CRS (module docstring).

    fp: geodesic footprints with ``source`` (bounds and crs); labels: (n,) int, only pairs
    with different labels. Returns (m,) int64 rows ``i < j``, sorted by (i, j).
    """
    assert fp.source is not None
    labels = np.asarray(labels)
    codes, names = _crs_codes(fp.source)
    codes[~fp.georef] = -1
    groups = [
        _Group(fp.source, np.flatnonzero(codes == k), name)
        for k, name in enumerate(names)
        if name and (codes == k).any()
    ]
    out_i, out_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    exact = []  # rows measured geodesically against each other
    planar_of = np.full(len(codes), -1, dtype=np.int32)  # step-2 group of each row
    near = _near_other_groups(groups, distance_m) if len(groups) > 1 else [None] * len(groups)
    for k, g in enumerate(groups):
        if g.scale is None:
            exact.append(g.rows)
            continue
        planar_of[g.rows] = k
        i, j = _planar_pairs(fp, g, labels, distance_m)
        out_i.append(i)
        out_j.append(j)
        cells = near[k]
        if cells is not None and cells.any():
            exact.append(g.rows[cells[g.cell_of]])
    rows = np.sort(np.concatenate(exact)) if exact else np.zeros(0, np.int64)
    if len(rows) > 1:
        i, j, _ = geodesic_pairs(fp, rows, distance_m, labels[rows])
        keep = (planar_of[i] < 0) | (planar_of[i] != planar_of[j])
        out_i.append(i[keep])
        out_j.append(j[keep])
    i, j = np.concatenate(out_i), np.concatenate(out_j)
    i, j = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((j, i))
    return i[order], j[order]

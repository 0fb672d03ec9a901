"""Spatial cb and fa (docs/algorithms.md §10): candidates penalised by proximity to the tiles
already selected. Pure functions on arrays, no I/O.

Each tile carries a proximity ``π_i = max_j max(0, 1 − d_ij / R)`` over the selected tiles j
(``d`` the distance between tile centres in metres, ``R = spatial_radius_m``): 1 on top of a
selected tile, 0 at R or farther. A candidate is worth its method value less
``spatial_penalty · π_i``; picks are made one at a time so each one pushes its neighbours back
before the next is chosen (a lazy greedy: a value only ever falls as tiles are selected, so a
tile whose stored value is still current and beats every other is the true best).

Distances: tile centres in each tile's own CRS. One projected CRS for every tile: planar in it.
Otherwise (several UTM zones, a geographic CRS): geodesic on WGS 84 (``pyproj.Geod``), the
neighbours found first with a KD-tree on Earth-centred coordinates (a chord is never longer
than the surface distance, so no neighbour within R is missed).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np

from smt_tools.coreset.kcenter import _QUANT, _take_top


@dataclass(frozen=True)
class TileCentres:
    """Tile centres for distances: ``xy`` (n, 2) metres in one projected CRS (``geodesic``
    False) or lon/lat degrees on WGS 84 (``geodesic`` True)."""

    xy: np.ndarray
    geodesic: bool

    def take(self, rows: np.ndarray) -> TileCentres:
        return TileCentres(np.asarray(self.xy)[rows], self.geodesic)


@dataclass(frozen=True)
class SpatialTerm:
    """The spatial options of a run: which methods use the proximity penalty, its radius (m)
    and weight, the centres of every tile (rows as the input), and the projected centres of
    ``spatial_weight`` (fd / kcenter; None when not asked for)."""

    centres: TileCentres | None
    radius_m: float
    penalty: float
    cb: bool = False
    fa: bool = False
    xy: np.ndarray | None = None


def tile_centres(
    minx: np.ndarray, miny: np.ndarray, maxx: np.ndarray, maxy: np.ndarray, crs: np.ndarray
) -> TileCentres:
    """Centres of the tile bounds, each in its own CRS (``crs``: one string per tile): planar
    when all share one projected CRS, else lon/lat for geodesic distances."""
    from pyproj import Transformer

    from smt_tools.geo import is_metric_crs, parse_crs

    cx = (np.asarray(minx, dtype=np.float64) + np.asarray(maxx, dtype=np.float64)) / 2
    cy = (np.asarray(miny, dtype=np.float64) + np.asarray(maxy, dtype=np.float64)) / 2
    values = np.asarray(crs).astype(str)
    distinct = sorted(set(values.tolist()))
    if len(distinct) == 1 and is_metric_crs(parse_crs(distinct[0])):
        return TileCentres(np.column_stack([cx, cy]), geodesic=False)
    lon, lat = np.empty_like(cx), np.empty_like(cy)
    for value in distinct:
        rows = values == value
        tr = Transformer.from_crs(parse_crs(value), "EPSG:4326", always_xy=True)
        lon[rows], lat[rows] = tr.transform(cx[rows], cy[rows])
    return TileCentres(np.column_stack([lon, lat]), geodesic=True)


class Proximity:
    """Running proximity ``π`` (n,) of every tile to the selected ones (module docstring)."""

    def __init__(self, centres: TileCentres, radius_m: float) -> None:
        from scipy.spatial import cKDTree

        if not radius_m > 0:
            raise ValueError(f"spatial_radius_m must be > 0; got {radius_m}")
        self.centres = centres
        self.radius = float(radius_m)
        xy = np.asarray(centres.xy, dtype=np.float64)
        if centres.geodesic:
            from pyproj import Geod, Transformer

            tr = Transformer.from_crs("EPSG:4326", "EPSG:4978", always_xy=True)
            x, y, z = tr.transform(xy[:, 0], xy[:, 1], np.zeros(len(xy)))
            self.points = np.column_stack([x, y, z])
            self.geod = Geod(ellps="WGS84")
        else:
            self.points = xy
        self.tree = cKDTree(self.points)
        self.pen = np.zeros(len(xy), dtype=np.float64)

    def distances(self, j: int, rows: np.ndarray) -> np.ndarray:
        """Metres from tile ``j``'s centre to the centres of ``rows``."""
        xy = self.centres.xy
        if self.centres.geodesic:
            lon = np.full(rows.size, xy[j, 0])
            lat = np.full(rows.size, xy[j, 1])
            _, _, d = self.geod.inv(lon, lat, xy[rows, 0], xy[rows, 1])
            return np.asarray(d, dtype=np.float64)
        return np.hypot(xy[rows, 0] - xy[j, 0], xy[rows, 1] - xy[j, 1])

    def select(self, j: int) -> None:
        """Tile ``j`` is selected: raise the proximity of the tiles within the radius."""
        # the chord search radius: a little above R (a chord is never longer than the arc)
        near = self.tree.query_ball_point(self.points[j], self.radius * (1 + 1e-9) + 1e-6)
        rows = np.asarray(near, dtype=np.int64)
        if rows.size:
            p = 1.0 - self.distances(j, rows) / self.radius
            np.maximum(self.pen[rows], p, out=p)
            self.pen[rows] = p


def penalised_picks(
    base_q: np.ndarray, ids: np.ndarray, rows: np.ndarray, k: int, prox: Proximity, penalty: float
) -> np.ndarray:
    """The ``k`` picks among ``rows`` (positions into the proximity's tiles), one at a time,
    each the best by ``(value desc, tile_id asc)`` with value ``base_q − ⌊penalty·π·2⁴⁰⌋``
    (``base_q`` (m,) int64 on the 2⁻⁴⁰ grid, ``ids`` (m,) of the rows); each pick raises its
    neighbours' π. Returns positions into ``rows`` in pick order. Exact lazy greedy: only the
    best few rows are kept in a heap; the best value outside it bounds every other row."""
    m_all = rows.size
    k = min(k, m_all)
    out = np.ones(m_all, dtype=bool)  # rows not yet in the heap nor picked
    heap: list[tuple[int, int, int]] = []
    bound: tuple[int, int] | None = None  # (−value, id) of the best row outside the heap

    def value(pos: np.ndarray) -> np.ndarray:
        return base_q[pos] - np.floor(penalty * prox.pen[rows[pos]] * _QUANT).astype(np.int64)

    def refill(want: int) -> tuple[int, int] | None:
        rest = np.flatnonzero(out)
        if rest.size == 0:
            return None
        v = value(rest)
        m = min(rest.size, 2 * want + 64)
        top = _take_top(v, ids[rest], m if m < rest.size else rest.size)
        for t in top.tolist():
            heapq.heappush(heap, (-int(v[t]), int(ids[rest[t]]), int(rest[t])))
        out[rest[top]] = False
        if m >= rest.size:
            return None
        left = np.ones(rest.size, dtype=bool)
        left[top] = False
        best = _take_top(v[left], ids[rest[left]], 1)[0]
        return (-int(v[left][best]), int(ids[rest[left]][best]))

    picks: list[int] = []
    bound = refill(k)
    while len(picks) < k:
        if not heap:
            bound = refill(k - len(picks))
            continue
        neg, tid, pos = heap[0]
        cur = int(value(np.array([pos]))[0])
        if -cur != neg:  # its proximity grew since it was stored
            heapq.heapreplace(heap, (-cur, tid, pos))
            continue
        if bound is not None and (neg, tid) > bound:  # a row outside may be better
            bound = refill(k - len(picks))
            continue
        heapq.heappop(heap)
        picks.append(pos)
        prox.select(int(rows[pos]))
    return np.asarray(picks, dtype=np.int64)


def fa_order_spatial(
    scores: np.ndarray, ids: np.ndarray, prox: Proximity, penalty: float
) -> np.ndarray:
    """Spatial fa: every candidate in greedy order of ``fa score − penalty·π``. (n,) int64."""
    base = np.floor(np.asarray(scores, dtype=np.float64) * _QUANT).astype(np.int64)
    rows = np.arange(base.size, dtype=np.int64)
    return penalised_picks(base, np.asarray(ids, dtype=np.int64), rows, base.size, prox, penalty)


def cb_order_spatial(
    counts: np.ndarray, ids: np.ndarray, growth: float, prox: Proximity, penalty: float
) -> np.ndarray:
    """Spatial cb: the cb steps (same batch sizes), each step's ``k`` tiles picked one at a
    time by ``H(S + counts[i]) − penalty·π_i`` with S fixed for the step. Every remaining tile
    is evaluated at every step (no pruning). (n,) int64 positions."""
    from smt_tools.coreset.cb import cb_batch_size, entropy_rows
    from smt_tools.coreset.kcenter import _quantise

    c = np.asarray(counts, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    n = c.shape[0]
    alive = np.ones(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    s = np.zeros(c.shape[1], dtype=np.float64)
    done = 0
    while done < n:
        k = min(cb_batch_size(done, growth), n - done)
        rows = np.flatnonzero(alive)
        step = 1 << 18  # rows per chunk (bounds the temporaries)
        gain = np.concatenate(
            [
                _quantise(entropy_rows(s[None, :] + c[rows[a : a + step]]))
                for a in range(0, rows.size, step)
            ]
        )
        picked = rows[penalised_picks(gain, ids[rows], rows, k, prox, penalty)]
        order[done : done + k] = picked
        done += k
        s += c[picked].sum(axis=0)
        alive[picked] = False
    return order


def _proximity(term: SpatialTerm, cand: np.ndarray, info: dict[str, Any]) -> Proximity:
    if term.centres is None:
        raise ValueError("cb_use_spatial / fa_use_spatial need the tile centres")
    info["spatial"] = {
        "radius_m": term.radius_m,
        "penalty": term.penalty,
        "distances": "geodesic (WGS 84)" if term.centres.geodesic else "planar",
    }
    return Proximity(term.centres.take(cand), term.radius_m)


def cb_spatial(
    counts: np.ndarray,
    ids: np.ndarray,
    cand: np.ndarray,
    term: SpatialTerm,
    growth: float,
    info: dict[str, Any],
) -> np.ndarray:
    """Spatial cb of the candidates ``cand`` (positions into the term's tiles; ``counts`` and
    ``ids`` already at those rows). A GPU run says in ``info`` that this part ran on the CPU
    (the GPU greedy has no proximity term). (n,) int64 order."""
    if info.get("device") == "cuda":
        info["device_note"] = "cb_use_spatial: the spatial cb greedy ran on the CPU"
    prox = _proximity(term, cand, info)
    return cb_order_spatial(counts, ids, growth, prox, term.penalty)


def fa_spatial(
    scores: np.ndarray, ids: np.ndarray, cand: np.ndarray, term: SpatialTerm, info: dict[str, Any]
) -> np.ndarray:
    """Spatial fa of the candidates ``cand`` (``scores`` and ``ids`` at those rows). (n,) int64
    order."""
    return fa_order_spatial(scores, ids, _proximity(term, cand, info), term.penalty)

"""Close pairs of axis-aligned tile boxes in one planar CRS, on a uniform grid, in batches.

The planar distance method (:mod:`smt_tools.splits.distance`) measures tiles as the boxes of
their native bounds. Two boxes are ``sqrt(dx² + dy²)`` apart, with ``dx`` / ``dy`` the gaps
between their x / y intervals (0 when they overlap or touch), the same distance shapely
measures between the two polygons. Here no geometry objects are built: every box goes to the
grid cell of its lower-left corner, cells ``max box side + distance`` wide, so a pair within
``distance`` lies in the same or adjacent cells. Candidate pairs are generated cell pair by
cell pair in batches of at most ``batch`` pairs, pairs with equal labels (same fold) are
dropped before measuring, and memory stays at a few arrays of n plus one batch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_distances", "grid_close_pairs"]

#: neighbour cells visited from each cell (each unordered cell pair once)
_OFFSETS = ((0, 0), (1, -1), (1, 0), (1, 1), (0, 1))


def box_distances(
    minx: np.ndarray,
    miny: np.ndarray,
    maxx: np.ndarray,
    maxy: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
) -> np.ndarray:
    """Distance between boxes i and j (pairs of positions): (m,) float64, 0 when they touch."""
    dx = np.maximum(0.0, np.maximum(minx[i] - maxx[j], minx[j] - maxx[i]))
    dy = np.maximum(0.0, np.maximum(miny[i] - maxy[j], miny[j] - maxy[i]))
    return np.sqrt(dx * dx + dy * dy)


def _cell_pairs(keys: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell a, cell b, offset index) of every unordered pair of occupied neighbour cells.

    keys: (c,) sorted unique int64 cell keys ``cx * width + cy``."""
    a_all, b_all, o_all = [], [], []
    for o, (ox, oy) in enumerate(_OFFSETS):
        target = keys + ox * width + oy
        pos = np.searchsorted(keys, target)
        pos_c = np.minimum(pos, keys.size - 1)
        hit = keys[pos_c] == target
        a_all.append(np.flatnonzero(hit))
        b_all.append(pos_c[hit])
        o_all.append(np.full(int(hit.sum()), o, dtype=np.int64))
    return np.concatenate(a_all), np.concatenate(b_all), np.concatenate(o_all)


def grid_close_pairs(
    minx: np.ndarray,
    miny: np.ndarray,
    maxx: np.ndarray,
    maxy: np.ndarray,
    distance_m: float,
    labels: np.ndarray | None = None,
    batch: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of boxes at most ``distance_m`` apart (touching or overlapping: 0).

    minx..maxy: (n,) float64 bounds in one planar CRS (metres); labels: (n,) int, only pairs
    with different labels are returned. Returns ``(i, j, d)``: (m,) int64 positions with
    ``i < j`` sorted by (i, j) and (m,) float64 distances.
    """
    n = len(minx)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if n < 2:
        return empty
    cell = float(max((maxx - minx).max(), (maxy - miny).max())) + float(distance_m)
    cell = cell if cell > 0 else 1.0
    cx = np.floor((minx - minx.min()) / cell).astype(np.int64)
    cy = np.floor((miny - miny.min()) / cell).astype(np.int64) + 1  # room for oy = -1
    width = int(cy.max()) + 2
    key = cx * width + cy
    order = np.argsort(key, kind="stable")
    skey = key[order]
    keys, starts, counts = np.unique(skey, return_index=True, return_counts=True)
    del key, skey, cx, cy
    ca, cb, co = _cell_pairs(keys, width)
    size = counts[ca] * counts[cb]
    out_i, out_j, out_d = [], [], []
    first = 0
    cum = np.cumsum(size)
    while first < ca.size:
        base = cum[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(cum, base + batch, side="right")))
        sl = slice(first, last)
        i, j = _expand(order, starts, counts, ca[sl], cb[sl], co[sl] == 0)
        if labels is not None:
            keep = labels[i] != labels[j]
            i, j = i[keep], j[keep]
        d = box_distances(minx, miny, maxx, maxy, i, j)
        keep = d <= float(distance_m)
        out_i.append(np.minimum(i[keep], j[keep]))
        out_j.append(np.maximum(i[keep], j[keep]))
        out_d.append(d[keep])
        first = last
    if not out_i:
        return empty
    i, j, d = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
    srt = np.lexsort((j, i))
    return i[srt], j[srt], d[srt]


def _expand(
    order: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    ca: np.ndarray,
    cb: np.ndarray,
    same: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """All member pairs of the cell pairs (ca, cb); within one cell (``same``) each unordered
    pair once. Returns box positions (i, j)."""
    na, nb = counts[ca], counts[cb]
    size = na * nb
    total = int(size.sum())
    p = np.repeat(np.arange(ca.size), size)
    local = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(size) - size, size)
    ia = local // nb[p]
    ib = local % nb[p]
    keep = ~same[p] | (ia < ib)
    p, ia, ib = p[keep], ia[keep], ib[keep]
    return order[starts[ca[p]] + ia], order[starts[cb[p]] + ib]

"""k-center greedy (docs/algorithms.md §10) and the distance and ranking primitives every
coreset scorer shares: pure functions on arrays, no I/O.

The primitives: the quantised ranking grid (:data:`_QUANT`, so CPU and GPU break the same
ties by tile_id), tile-id checks, top-k by (gain desc, tile_id asc), squared distances and the
nearest-centre assignment. :mod:`smt_tools.coreset.scorers` re-exports the public names and
:mod:`smt_tools.coreset.gpu` mirrors them on a torch device.
"""

from __future__ import annotations

import numpy as np

#: Quantisation of floating gains/distances before ranking: values that differ by less
#: than ~1e-12 relative count as ties (broken by tile_id). This makes CPU and GPU pick the
#: same tiles although their log/matmul round differently in the last bits.
_QUANT = float(2**40)


def _quantise(x: np.ndarray) -> np.ndarray:
    """float64 -> int64 grid used for ranking (see :data:`_QUANT`)."""
    return np.floor(np.asarray(x, dtype=np.float64) * _QUANT).astype(np.int64)


def all_unique(ids: np.ndarray) -> bool:
    """True when the 1-D ``ids`` are distinct: a check of order when they are increasing (the
    candidates are in tile_id order), else one sort (``np.unique`` hashes, ~60 s at 10M ids)."""
    a = np.asarray(ids)
    if a.size < 2 or bool((a[1:] > a[:-1]).all()):
        return True
    a = np.sort(a)
    return not bool((a[1:] == a[:-1]).any())


def _check_ids(tile_ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(tile_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"tile_ids has shape {ids.shape}, expected ({n},)")
    if not all_unique(ids):
        raise ValueError("tile_ids must be unique")
    return ids


def _take_top(gain_q: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions (into gain_q) of the k best by (-gain_q, ids), in that order."""
    m = gain_q.size
    if k >= m:
        return np.lexsort((ids, -gain_q))
    # Everything strictly above the k-th largest value, plus the ties at that value.
    kth = np.partition(gain_q, m - k)[m - k]
    pool = np.flatnonzero(gain_q >= kth)
    sub = np.lexsort((ids[pool], -gain_q[pool]))[:k]
    return pool[sub]


_NEG = np.iinfo(np.int64).min


def greedy_round(
    u: np.ndarray, pair: np.ndarray, cand_ids: np.ndarray, rest_max: int, want: int
) -> tuple[list[int], int]:
    """One round of exact k-center greedy among candidate tiles (shared by CPU and GPU).

    u: (k,) int64 quantised distance of each candidate to its nearest centre (modified);
    pair: (k, k) int64 quantised candidate-candidate squared distances; cand_ids: (k,) tile ids;
    rest_max: the largest distance among non-candidates (an upper bound for them);
    want: picks still needed. Returns (candidate positions in pick order, the smallest
    distance at pick time). The first pick is always taken (it is the global farthest),
    later ones only while strictly above rest_max.
    """
    chosen: list[int] = []
    low = _NEG
    while len(chosen) < want:
        best = int(u.max())
        if best == _NEG or (chosen and best <= rest_max):
            break
        tied = np.flatnonzero(u == best)
        j = int(tied[np.argmin(cand_ids[tied])])
        chosen.append(j)
        low = best
        np.minimum(u, pair[j], out=u)
        u[j] = _NEG
    return chosen, low


def kcenter_prepare(x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Centre and uniformly rescale features (order-preserving; keeps quantised squared
    distances small), and find the first centre: the row farthest from the mean.

    Returns (x (n, d) float64 rescaled, squared row norms (n,), first position).
    """
    mean = x.mean(axis=0, keepdims=True)
    xc = x - mean
    spread = float(np.sqrt(np.einsum("ij,ij->i", xc, xc).max())) if len(xc) else 0.0
    if spread > 0:
        xc /= spread
    x_norm = np.einsum("ij,ij->i", xc, xc)
    first = int(np.lexsort((ids, -_quantise(x_norm)))[0])
    return xc, x_norm, first


def _sq_dists(x: np.ndarray, x_norm: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (m, k) from rows of x (m, d) to centres (k, d), >= 0."""
    c_norm = np.einsum("ij,ij->i", centres, centres)
    d = x_norm[:, None] + c_norm[None, :] - 2.0 * (x @ centres.T)
    return np.maximum(d, 0.0)


def _update_min(
    x: np.ndarray,
    x_norm: np.ndarray,
    min_d: np.ndarray,
    rows: np.ndarray,
    cent: np.ndarray,
    chunk_rows: int,
) -> None:
    """min_d[rows] = min(min_d[rows], quantised squared distance to the nearest of cent)."""
    c_norm = np.einsum("ij,ij->i", cent, cent)
    neg2_ct = -2.0 * cent.T
    for start in range(0, rows.size, chunk_rows):
        r = rows[start : start + chunk_rows]
        g = x[r] @ neg2_ct
        g += c_norm
        best = g.min(axis=1)
        best += x_norm[r]
        d = _quantise(np.maximum(best, 0.0))
        min_d[r] = np.minimum(min_d[r], d)


class _Cells:
    """Voronoi cells around seeded sample rows, for exact pruning of k-center updates."""

    def __init__(self, x: np.ndarray, x_norm: np.ndarray, ids: np.ndarray, cells: int) -> None:
        n = x.shape[0]
        rng = np.random.default_rng(0)
        by_id = np.argsort(ids, kind="stable")
        seeds = by_id[np.sort(rng.choice(n, size=cells, replace=False))]
        self.centres = x[seeds]
        self.c_norm = x_norm[seeds]
        labels, dist = assign_nearest(x, self.centres)
        self.perm = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=cells)
        self.starts = np.r_[0, np.cumsum(counts)[:-1]]
        self.ends = self.starts + counts
        nonempty = counts > 0
        self.radius = np.zeros(cells)
        self.radius[nonempty] = np.maximum.reduceat(dist[self.perm], self.starts[nonempty])
        self.nonempty = nonempty

    def update(
        self,
        x: np.ndarray,
        x_norm: np.ndarray,
        min_d: np.ndarray,
        cent: np.ndarray,
        skip_below: int,
        chunk_rows: int,
    ) -> None:
        d_cell = np.sqrt(_sq_dists(self.centres, self.c_norm, cent))  # (G, B)
        ne = self.nonempty
        cell_max = np.full(self.starts.size, _NEG, dtype=np.int64)
        cell_max[ne] = np.maximum.reduceat(min_d[self.perm], self.starts[ne])
        rmax = np.sqrt(np.maximum(cell_max, 0) / _QUANT) * (1 + 1e-6) + 1e-9
        need = (d_cell - self.radius[:, None]) < rmax[:, None]
        need[cell_max <= max(skip_below, 0)] = False
        from threadpoolctl import threadpool_limits

        # Many small products: BLAS threads cost more than they give here.
        with threadpool_limits(limits=1, user_api="blas"):
            for g in np.flatnonzero(need.any(axis=1)):
                rows = self.perm[self.starts[g] : self.ends[g]]
                rows = rows[min_d[rows] > skip_below]
                if rows.size:
                    _update_min(x, x_norm, min_d, rows, cent[need[g]], chunk_rows)


def kcenter_order(
    features: np.ndarray,
    tile_ids: np.ndarray,
    budget: int,
    candidates: int = 1024,
    chunk_rows: int = 4096,
    cells: int = 512,
) -> np.ndarray:
    """k-center greedy with a running minimum distance (O(n) memory besides the features).

    features: (n, d) float64; tile_ids: (n,) int64; budget: number of greedy picks (1..n).
    The first centre is the tile farthest from the mean; each next one is the tile with the
    largest distance to its nearest chosen centre (ties by tile_id). After ``budget`` picks
    the remaining tiles follow by decreasing distance to their nearest centre.

    Exact batching: each round takes the ``candidates`` farthest tiles, runs the greedy among
    them with their mutual distances, and stops the round as soon as the best candidate is no
    longer strictly farther than every tile outside the candidate list (whose distances can
    only shrink). So the picks equal the one-at-a-time greedy; only the running minimum update
    is batched (one matrix product per round, in row chunks).

    Exact pruning of that update (results are unchanged): rows whose nearest centre is within
    R/2 (R = the round's smallest pick distance) cannot get closer to the new centres; and with
    ``cells`` > 0 the rows are grouped into Voronoi cells around seeded sample rows, and a new
    centre c skips a whole cell g when ``d(c, centre_g) - radius_g >= max_i∈g d_i`` (triangle
    inequality). Late rounds then only touch the cells next to the new centres.
    Returns the full order: (n,) int64 positions.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d); got shape {x.shape}")
    n = x.shape[0]
    ids = _check_ids(tile_ids, n)
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in 1..{n}; got {budget}")
    x, x_norm, first = kcenter_prepare(x, ids)
    grid = _Cells(x, x_norm, ids, cells) if cells > 0 and n > 8 * cells else None
    picked_mask = np.zeros(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    done = 0
    new_centres = [first]
    skip_below = _NEG  # rows at or below this cannot get closer to the new centres
    min_d = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    while True:
        # Update the running minimum with the centres chosen in the last round. A new centre c
        # is at distance >= R from every older centre (R = smallest pick distance of the
        # round), so a row whose nearest centre is within R/2 cannot get closer: skip it.
        cent = x[np.asarray(new_centres)]
        if grid is None or (len(new_centres) == 1 and done == 0):
            active = np.flatnonzero(min_d > skip_below) if skip_below > _NEG else np.arange(n)
            _update_min(x, x_norm, min_d, active, cent, chunk_rows)
        else:
            grid.update(x, x_norm, min_d, cent, skip_below, chunk_rows)
        for p in new_centres:
            picked_mask[p] = True
            order[done] = p
            done += 1
        min_d[picked_mask] = _NEG
        if done >= budget:
            break
        # One round of exact batched greedy.
        k = min(candidates, n - done)
        cand = _take_top(min_d, ids, k)
        outside = n - done - k
        rest_max = int(np.partition(min_d, n - k - 1)[n - k - 1]) if outside > 0 else _NEG
        cx = x[cand]
        pair = _quantise(_sq_dists(cx, x_norm[cand], cx))
        chosen, low = greedy_round(min_d[cand].copy(), pair, ids[cand], rest_max, budget - done)
        new_centres = [int(cand[j]) for j in chosen]
        # (R/2)^2 = R^2/4, minus a relative margin for rounding.
        skip_below = low // 4 - (low >> 16) - 1
    rest = np.flatnonzero(~picked_mask)
    if rest.size:
        # Distances of the unpicked tiles to their nearest centre (already up to date).
        tail = rest[np.lexsort((ids[rest], -min_d[rest]))]
        order[done:] = tail
    return order


def assign_nearest(
    x: np.ndarray, centres: np.ndarray, chunk_rows: int = 32_768
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre per row: labels (n,) int64 and Euclidean distance (n,) float64."""
    x = np.asarray(x, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    n = x.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        part = x[start:stop]
        d = _sq_dists(part, np.einsum("ij,ij->i", part, part), centres)
        lab = d.argmin(axis=1)
        labels[start:stop] = lab
        dist[start:stop] = np.sqrt(d[np.arange(stop - start), lab])
    return labels, dist
